"""A typed spec from the few fields a unit test cares about: the fields the CRD requires
(volumes, manifests, a step budget) are filled in, the CRD's defaults applied by
speechtune.spec.parse, as `validate` does for a job file."""

from __future__ import annotations

import copy
from typing import Any, Mapping

from speechtune import spec

REQUIRED: Mapping[str, Any] = {
    "engine": "hf-ctc",
    "data": {"volume": {"claimName": "data"}, "train": "train.json", "validation": "valid.json"},
    "training": {"maxSteps": 1},
    "output": {"volume": {"claimName": "runs"}},
}


def typed(partial: Mapping[str, Any]) -> spec.FinetuneSpec:
    """`partial` laid over REQUIRED (mappings merged key by key, other values replaced)."""
    return spec.parse(merged(REQUIRED, partial))


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
