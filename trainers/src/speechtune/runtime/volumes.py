"""Where the job's volumes are: fixed mount points in a pod, `--volume CLAIM=DIR` folders
for `speechtune run`. Both resolve the spec's relative paths the same way."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

from speechtune import spec as specs
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


def local_mounts(spec: specs.FinetuneSpec, claims: Mapping[str, Path]) -> Mounts:
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

    data = folder("data.volume", spec.data.volume.claim_name, must_exist=True)
    output = folder("output.volume", spec.output.volume.claim_name, must_exist=False)
    output.mkdir(parents=True, exist_ok=True)
    model_claim = _model_claim(spec)
    model = folder("model.volume", model_claim, must_exist=True) if model_claim else None
    return Mounts(data=data, output=output, model=model)


def pod_mounts(spec: specs.FinetuneSpec) -> Mounts:
    model = POD_MOUNTS["model"] if _model_claim(spec) else None
    return Mounts(data=POD_MOUNTS["data"], output=POD_MOUNTS["output"], model=model)


def data_paths(spec: specs.FinetuneSpec, mounts: Mounts) -> base.DataPaths:
    data = spec.data
    return base.DataPaths(root=mounts.data, train=mounts.data / data.train,
                          validation=mounts.data / data.validation,
                          test=mounts.data / data.test if data.test else None)


def _model_claim(spec: specs.FinetuneSpec) -> str | None:
    return spec.model.volume.claim_name if spec.model and spec.model.volume else None
