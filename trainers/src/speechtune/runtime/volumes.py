"""Where the job's volumes are: fixed mount points in a pod, `--volume CLAIM=DIR` folders
for `speechtune run`. Both resolve the spec's relative paths the same way."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechtune.engines import base

POD_MOUNTS = {"data": Path("/data"), "output": Path("/output"), "model": Path("/models")}


@dataclasses.dataclass(frozen=True)
class Mounts:
    data: Path
    output: Path
    model: Path | None


def parse_volume_flags(flags: Sequence[str]) -> dict[str, Path]:
    """`["demo-data=./data", ...]` -> {claim: absolute folder}; bad flags name themselves."""
    claims: dict[str, Path] = {}
    for flag in flags:
        claim, sep, folder = flag.partition("=")
        if not sep or not claim or not folder:
            raise ValueError(f"--volume {flag!r}: expected CLAIM=DIR")
        claims[claim] = Path(folder).expanduser().absolute()
    return claims


def local_mounts(spec: Mapping[str, Any], claims: Mapping[str, Path]) -> Mounts:
    """Maps the spec's claims to local folders: the data folder must exist, the output
    folder is created; a missing --volume names the claim and the spec field."""

    def folder(field: str, claim: str | None, *, must_exist: bool) -> Path:
        if claim is None:
            raise ValueError(f"spec.{field}.claimName: not set")
        if claim not in claims:
            raise ValueError(f"spec.{field}.claimName {claim!r}: give its folder with --volume {claim}=DIR")
        path = claims[claim]
        if must_exist and not path.is_dir():
            raise ValueError(f"--volume {claim}={path}: no such folder")
        return path

    data = folder("data.volume", _claim(spec, "data"), must_exist=True)
    output = folder("output.volume", _claim(spec, "output"), must_exist=False)
    output.mkdir(parents=True, exist_ok=True)
    model_claim = _claim(spec, "model")
    model = folder("model.volume", model_claim, must_exist=True) if model_claim else None
    return Mounts(data=data, output=output, model=model)


def pod_mounts(spec: Mapping[str, Any]) -> Mounts:
    model = POD_MOUNTS["model"] if _claim(spec, "model") else None
    return Mounts(data=POD_MOUNTS["data"], output=POD_MOUNTS["output"], model=model)


def data_paths(spec: Mapping[str, Any], mounts: Mounts) -> base.DataPaths:
    data = spec["data"]
    test = data.get("test")
    return base.DataPaths(root=mounts.data, train=mounts.data / data["train"],
                          validation=mounts.data / data["validation"],
                          test=mounts.data / test if test else None)


def _claim(spec: Mapping[str, Any], section: str) -> str | None:
    volume = (spec.get(section) or {}).get("volume") or {}
    claim = volume.get("claimName")
    return str(claim) if claim else None
