"""hf-ctc's use of the shared checkpoint store (engines/kit/checkpoints.py): what goes in.

Only what training changes is saved: the trainable weights (adapters + head, LoRA + head,
or everything but the frozen feature encoder), the optimizer, scheduler and grad-scaler
states and the loop position. The frozen rest comes from the base model again on resume,
so an adapter run of MMS-1B writes megabytes, not gigabytes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from speechtune.engines.kit import checkpoints as kit

WEIGHTS = kit.WEIGHTS


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


def store(checkpoint_dir: Path, *, keep_top_k: int, key: str, rank: int, log: Callable[[str], None]) -> kit.Store:
    return kit.Store(checkpoint_dir, keep_top_k=keep_top_k, key=key, writer=rank == 0, log=log)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def save(checkpoints: kit.Store, *, model: torch.nn.Module, optimizers: Mapping[str, Any], state: LoopState) -> Path | None:
    """Every rank calls this (all refuse non-finite weights together); rank 0 writes."""
    return checkpoints.save(
        step=state.step, weights=trainable_state(model),
        states={name: obj.state_dict() for name, obj in optimizers.items()},
        state=dataclasses.asdict(state),
        metrics={"val_loss": state.val_loss, "cer": state.cer, "wer": state.wer},
    )


def load(restored: kit.Restored, *, model: torch.nn.Module, optimizers: Mapping[str, Any] | None) -> LoopState:
    """Restores weights (and, when given, optimizer states and RNGs) from a checkpoint."""
    weights = restored.weights
    expected = set(trainable_state(model))
    if set(weights) != expected:
        missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise ValueError(
            f"{restored.checkpoint.path}: checkpoint does not match the model's trainable parameters "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was peft.method changed?"
        )
    model.load_state_dict(weights, strict=False)
    if optimizers is not None:
        for name, obj in optimizers.items():
            obj.load_state_dict(restored.states[name])
        kit.set_rng_states(restored.states["rng"])
    return LoopState(**restored.checkpoint.state)
