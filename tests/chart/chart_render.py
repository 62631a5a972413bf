"""Run helm on the chart and read what it renders (shared by the chart tests)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "speechtune"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
# `helm template` renders for this cluster version (a helm built with `go install` would
# otherwise assume v1.20, below the chart's kubeVersion).
KUBE_VERSION = "v1.35.4"


def run_helm(helm: Path, *args: str, env: dict[str, str] | None = None, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def template(helm: Path, *extra: str, release: str = "speechtune", namespace: str = "speechtune-system",
             env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Objects `helm template` renders (CRDs included), empty documents dropped."""
    done = run_helm(helm, "template", release, str(CHART), "--namespace", namespace, "--include-crds",
                    "--kube-version", KUBE_VERSION, *extra,
                    env=env)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(objects: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]
