"""The run folder `<output>/<job>/<run-id>/` and the files the runtime writes into it."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

from speechtune.engines.kit import layout

RUN_ID_ENV = "SPEECHTUNE_RUN_ID"


@dataclasses.dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def model_card(self) -> Path:
        return self.path / "model_card.json"

    @property
    def train_log(self) -> Path:
        return self.path / "train_log.txt"

    @property
    def decode_jsonl(self) -> Path:
        return self.path / "decode.jsonl"

    @property
    def job_yaml(self) -> Path:
        return self.path / "job.yaml"  # the validated spec, defaults applied: what ran


def run_id(environ: Mapping[str, str] = os.environ) -> str:
    """SPEECHTUNE_RUN_ID (stable across pod restarts, so resume finds its checkpoints) or
    a timestamp like the reference package's `YYYYmmdd_HHMMSS`."""
    return environ.get(RUN_ID_ENV) or time.strftime("%Y%m%d_%H%M%S")


def unfinished_run(output: Path, job: str) -> str | None:
    """The newest run of `job` that has checkpoints but did not succeed (killed, stopped,
    failed): what a local `speechtune run` with output.resume continues."""
    runs = sorted((p for p in (output / job).glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for folder in reversed(runs):
        metrics = folder / "metrics.json"
        status = json.loads(metrics.read_text()).get("status") if metrics.exists() else None
        if status == "succeeded":
            return None  # the newest run finished: start a new one
        if layout.has_checkpoints(folder / "checkpoints"):
            return folder.name
    return None


def create(output: Path, job: str, run: str) -> RunFolder:
    folder = RunFolder(output / job / run)
    folder.checkpoints.mkdir(parents=True, exist_ok=True)
    return folder


def create_new(output: Path, job: str, run: str) -> RunFolder:
    """A folder no other run has: `run`, else `run-2`, `run-3`, ... (mkdir is atomic, so two
    processes that chose the same timestamp in the same second end up in different ones)."""
    (output / job).mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        folder = RunFolder(output / job / (run if attempt == 1 else f"{run}-{attempt}"))
        try:
            folder.path.mkdir()
        except FileExistsError:
            continue
        folder.checkpoints.mkdir()
        return folder
    raise FileExistsError(errno.EEXIST, "no free run folder name", str(output / job / run))


def write_json(path: Path, value: Mapping[str, Any]) -> None:
    """Written beside and renamed, so a reader never sees half a file."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
    partial.replace(path)
