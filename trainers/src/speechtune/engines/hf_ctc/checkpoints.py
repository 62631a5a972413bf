"""Resumable checkpoints holding only what training changes.

A checkpoint is a folder `step-<N>` with the trainable weights (adapters + head, LoRA +
head, or everything but the frozen feature encoder), the optimizer, scheduler and grad
scaler states, the RNG states and the loop position. The frozen rest comes from the base
model again on resume, so an adapter run of MMS-1B writes megabytes, not gigabytes.
Folders are written under a temporary name and renamed, so a kill mid-save never leaves
a half-written "newest" checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import safetensors.torch
import torch

PREFIX = "step-"
WEIGHTS = "trainable.safetensors"
STATE = "state.json"
OPTIMIZER = "optimizer.pt"


@dataclasses.dataclass(frozen=True)
class LoopState:
    """Where the loop stands: enough to continue exactly after the last optimizer step."""

    step: int = 0
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    train_loss: float | None = None
    val_loss: float | None = None
    cer: float | None = None
    wer: float | None = None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save(
    checkpoint_dir: Path, *, model: torch.nn.Module, optimizers: Mapping[str, Any], state: LoopState,
) -> Path:
    """Writes checkpoint `step-<state.step>` and returns its folder."""
    final = checkpoint_dir / f"{PREFIX}{state.step:08d}"
    partial = checkpoint_dir / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    safetensors.torch.save_file(trainable_state(model), str(partial / WEIGHTS))
    torch.save({name: obj.state_dict() for name, obj in optimizers.items()}, partial / OPTIMIZER)
    torch.save(_rng_states(), partial / "rng.pt")
    (partial / STATE).write_text(json.dumps(dataclasses.asdict(state), indent=1))
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def load(path: Path, *, model: torch.nn.Module, optimizers: Mapping[str, Any] | None) -> LoopState:
    """Restores weights (and, when given, optimizer states and RNGs) from a checkpoint."""
    weights = safetensors.torch.load_file(str(path / WEIGHTS))
    expected = set(trainable_state(model))
    if set(weights) != expected:
        missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise ValueError(
            f"{path}: checkpoint does not match the model's trainable parameters "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was peft.method changed?"
        )
    model.load_state_dict(weights, strict=False)
    if optimizers is not None:
        states = torch.load(path / OPTIMIZER, weights_only=False)
        for name, obj in optimizers.items():
            obj.load_state_dict(states[name])
        _set_rng_states(torch.load(path / "rng.pt", weights_only=False))
    return LoopState(**json.loads((path / STATE).read_text()))


def listed(checkpoint_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted(p for p in checkpoint_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def newest(checkpoint_dir: Path) -> Path | None:
    found = listed(checkpoint_dir)
    return found[-1] if found else None


def state_of(path: Path) -> LoopState:
    return LoopState(**json.loads((path / STATE).read_text()))


def best(checkpoint_dir: Path) -> Path | None:
    """The validated checkpoint with the lowest CER (then validation loss)."""
    scored = [(p, state_of(p)) for p in listed(checkpoint_dir)]
    scored = [(p, s) for p, s in scored if s.cer is not None or s.val_loss is not None]
    if not scored:
        return None
    return min(scored, key=lambda ps: _rank(ps[1]))[0]


def prune(checkpoint_dir: Path, *, keep_top_k: int) -> None:
    """Keeps the `keep_top_k` best validated checkpoints and the newest one (resume
    continues from it even when it is not among the best)."""
    found = listed(checkpoint_dir)
    if not found:
        return
    ranked = sorted(found, key=lambda p: _rank(state_of(p)))
    keep = set(ranked[:keep_top_k]) | {found[-1]}
    for path in found:
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)


def _rank(state: LoopState) -> tuple[float, float]:
    inf = float("inf")
    return (state.cer if state.cer is not None else inf, state.val_loss if state.val_loss is not None else inf)


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Mapping[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
