"""Checkpoints that cannot lose the last good state; the one implementation every
engine's own loop uses (nemo-canary keeps Lightning's, guarded by the same checks).

A checkpoint is a folder `step-<N>` holding
  weights.pt           the tensors the engine chose (trainable-only for PEFT modes); a
                       torch zip of tensors only (the speechbrain image has no safetensors)
  states.pt            optimizer, scheduler, scaler, RNG and engine states; plain
                       containers and tensors only, so it loads with weights_only=True
  checkpoint.json      step, validation metrics, loop position and file sizes: written
                       last, so a folder without it was never finished
Why not SpeechBrain's Checkpointer or Lightning's ModelCheckpoint: both write in place
(a kill or a full disk mid-save leaves a half-written newest checkpoint that every
resume then trips over), neither refuses non-finite weights, and their top-k pruning
can delete the newest checkpoint a resume needs.

The guarantees:
- written under a temporary name, fsynced and renamed into place (a crash leaves either
  the old set or the old set plus one complete checkpoint);
- refused (NonFiniteCheckpoint) when the validation loss or any weight is NaN/inf;
- pruning to top-k never deletes the newest checkpoint nor the best one;
- restore_newest skips a checkpoint it cannot read (warning naming it, the folder moved
  aside as `<name>.corrupt`) and falls back to the previous one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from speechtune.engines import base

from speechtune.engines.kit import layout

WEIGHTS = "weights.pt"
STATES = "states.pt"
MANIFEST = "checkpoint.json"
_PARTIAL = ".partial"
_OLD = ".old"
_CORRUPT = ".corrupt"
VALIDATION_LOSS = "val_loss"


class NonFiniteCheckpoint(base.NonFiniteLoss):
    """A checkpoint was refused because its validation loss or a weight is NaN/inf; the
    newest checkpoint on disk stays the last good one."""


class CorruptCheckpoint(Exception):
    """A checkpoint folder that cannot be read back (partial, truncated, not ours)."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    metrics: Mapping[str, float]  # finite validation metrics; empty: saved without validating
    state: Mapping[str, Any]  # the engine's loop position (JSON)


@dataclasses.dataclass(frozen=True)
class Restored:
    checkpoint: Checkpoint
    weights: dict[str, torch.Tensor]
    states: dict[str, Any]


class Store:
    """The checkpoints of one run folder. Every rank makes one; only the `writer` (rank 0)
    writes, prunes or moves corrupt folders aside, but every rank runs the finiteness
    checks in save(), so all ranks of a DDP job refuse a bad checkpoint together."""

    def __init__(self, directory: Path, *, keep_top_k: int, key: str = "wer", writer: bool = True,
                 log: Callable[[str], None] = lambda message: None) -> None:
        if keep_top_k < 1:
            raise ValueError(f"spec.output.saveTopK: must be >= 1, got {keep_top_k}")
        self.directory = directory
        self.keep_top_k = keep_top_k
        self.key = key  # the best checkpoint has the lowest value of this metric
        self.writer = writer
        self._log = log
        if writer:
            directory.mkdir(parents=True, exist_ok=True)
            self._recover_interrupted()

    # -- writing ---------------------------------------------------------------------------

    def save(self, *, step: int, weights: Mapping[str, torch.Tensor], states: Mapping[str, Any],
             state: Mapping[str, Any], metrics: Mapping[str, float | None]) -> Path | None:
        """Checks, writes `step-<step>` atomically and prunes; returns its path (None on
        ranks that do not write). Raises NonFiniteCheckpoint before writing anything."""
        check_finite(step=step, weights=weights, metrics=metrics)
        if not self.writer:
            return None
        final = self.directory / layout.name_of(step)
        partial = self.directory / f".{final.name}{_PARTIAL}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.mkdir(parents=True)
            torch.save({name: tensor.detach().cpu() for name, tensor in weights.items()}, partial / WEIGHTS)
            torch.save({**states, "rng": rng_states()}, partial / STATES)
            files = {p.name: p.stat().st_size for p in sorted(partial.iterdir())}
            kept = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}
            manifest = {"step": step, "metrics": kept, "state": dict(state), "files": files}
            (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
            for path in partial.iterdir():
                _fsync(path)
            _fsync(partial)
        except BaseException:  # a full disk or a kill: nothing half-written stays behind
            shutil.rmtree(partial, ignore_errors=True)
            raise
        self._move_into_place(partial, final)
        self.prune()
        return final

    def _move_into_place(self, partial: Path, final: Path) -> None:
        """rename() is atomic; a checkpoint of the same step (a SIGTERM save right after a
        validation) is first moved to `.old`, which _recover_interrupted() puts back if we
        die between the two renames."""
        old = self.directory / f".{final.name}{_OLD}"
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        partial.rename(final)
        _fsync(self.directory)
        shutil.rmtree(old, ignore_errors=True)

    def _recover_interrupted(self) -> None:
        for path in self.directory.glob(f".{layout.PREFIX}*"):
            if path.name.endswith(_PARTIAL):
                self._log(f"checkpoints: removing {path.name}, an unfinished save (the run was killed mid-save)")
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.endswith(_OLD):
                final = self.directory / path.name[1 : -len(_OLD)]
                if final.exists():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.rename(final)

    def prune(self) -> None:
        """Keeps the keep_top_k best validated checkpoints plus the newest and the best."""
        if not self.writer:
            return
        found = self.listed()
        if not found:
            return
        ranked = self.ranked(found)
        keep = {c.path for c in ranked[: self.keep_top_k]} | {found[-1].path}
        for checkpoint in found:
            if checkpoint.path not in keep:
                shutil.rmtree(checkpoint.path, ignore_errors=True)

    # -- reading ---------------------------------------------------------------------------

    def listed(self) -> list[Checkpoint]:
        """Finished checkpoints (manifest readable), oldest first."""
        found = []
        for path in self._folders():
            try:
                found.append(read_manifest(path))
            except CorruptCheckpoint:
                continue
        return found

    def newest(self) -> Checkpoint | None:
        found = self.listed()
        return found[-1] if found else None

    def ranked(self, found: list[Checkpoint] | None = None) -> list[Checkpoint]:
        """Validated checkpoints, best first: lowest `key`, then lowest validation loss."""
        scored = [c for c in (self.listed() if found is None else found) if self.key in c.metrics]
        return sorted(scored, key=lambda c: (c.metrics[self.key], c.metrics.get(VALIDATION_LOSS, math.inf), c.step))

    def best(self) -> Checkpoint | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def restore(self, checkpoint: Checkpoint | Path) -> Restored:
        """Reads one checkpoint completely; raises CorruptCheckpoint when it cannot."""
        path = checkpoint if isinstance(checkpoint, Path) else checkpoint.path
        meta, files = _read(path)
        for name, size in files.items():
            actual = (path / name).stat().st_size if (path / name).exists() else None
            if actual != size:
                raise CorruptCheckpoint(f"{path}: {name} is {actual} bytes, {size} were written")
        try:
            weights = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
            states = torch.load(path / STATES, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated or garbled: every reader's error type differs
            raise CorruptCheckpoint(f"{path}: {type(error).__name__}: {error}") from error
        return Restored(checkpoint=meta, weights=weights, states=states)

    def restore_newest(self) -> Restored | None:
        """The newest checkpoint that reads back; unreadable ones are reported and moved
        aside, so resume falls back to the previous good one instead of failing."""
        for path in reversed(self._folders()):
            try:
                return self.restore(path)
            except CorruptCheckpoint as error:
                self._log(f"checkpoints: WARNING skipping {path.name}, it cannot be read ({error}); "
                          "falling back to the previous checkpoint")
                if self.writer:
                    aside = path.with_name(path.name + _CORRUPT)
                    shutil.rmtree(aside, ignore_errors=True)
                    path.rename(aside)
        return None

    def _folders(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := layout.NAME.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found)]


def read_manifest(path: Path) -> Checkpoint:
    return _read(path)[0]


def _read(path: Path) -> tuple[Checkpoint, dict[str, int]]:
    """The manifest's checkpoint and its {file: size written}."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        checkpoint = Checkpoint(path=path, step=int(manifest["step"]), metrics=dict(manifest.get("metrics") or {}),
                                state=dict(manifest.get("state") or {}))
        return checkpoint, {str(k): int(v) for k, v in manifest["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CorruptCheckpoint(f"{path}: no readable {MANIFEST} ({type(error).__name__}: {error})") from error


def check_finite(*, step: int, weights: Mapping[str, torch.Tensor], metrics: Mapping[str, float | None]) -> None:
    """A finite training loss does not prove finite weights (an fp16 overflow in the
    optimizer, a bad batch's gradient): both are checked before anything is written."""
    val_loss = metrics.get(VALIDATION_LOSS)
    if val_loss is not None and not math.isfinite(val_loss):
        raise NonFiniteCheckpoint(f"validation loss is {val_loss} at step {step}: checkpoint refused; "
                                  "the newest checkpoint on disk is the last good one")
    bad = [name for name, tensor in weights.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise NonFiniteCheckpoint(f"{len(bad)} weight tensor(s) are NaN/inf at step {step} (first: {bad[0]}): "
                                  "checkpoint refused; the newest checkpoint on disk is the last good one")


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain containers and tensors (weights_only)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "python": random.getstate(), "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
