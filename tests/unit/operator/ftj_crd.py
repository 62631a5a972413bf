"""The real CRD and the shipped examples, as the API server would hand them to the operator."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Mapping

import yaml

ROOT = Path(__file__).resolve().parents[3]
CRD_PATH = ROOT / "crds" / "finetunejob.yaml"
EXAMPLES = {
    "canary": ROOT / "examples" / "finetunejob-canary.yaml",
    "speechbrain-atc0": ROOT / "examples" / "finetunejob-speechbrain-atc0.yaml",
    "mms-banglish-lora": ROOT / "examples" / "finetunejob-mms-banglish-lora.yaml",
}
UID = "0b6f4a8e-5a1c-4b59-9d3e-6f1f2a3b4c5d"


@functools.cache
def schema() -> Mapping[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def apply_defaults(node: Mapping[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: a missing property with a default
    gets it, then defaults apply inside (including inside defaulted objects)."""
    if isinstance(value, dict):
        for key, sub in (node.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(sub, value[key])
    elif isinstance(value, list) and "items" in node:
        return [apply_defaults(node["items"], item) for item in value]
    return value


def stored(name: str, *, namespace: str = "research", uid: str = UID, generation: int = 1) -> dict[str, Any]:
    """An example as stored: defaulted, with namespace, uid and generation."""
    body = yaml.safe_load(EXAMPLES[name].read_text())
    body = apply_defaults(schema(), body)
    body["metadata"].update(namespace=namespace, uid=uid, generation=generation)
    return body
