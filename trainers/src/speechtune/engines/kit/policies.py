"""The training policies every engine applies the same way, each written once: the seed,
precision (autocast dtype, grad scaler, Lightning's precision string), and agreement
across DDP ranks on the loss and on stopping."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from typing import Any, Callable, ContextManager

import numpy as np
import torch

from speechtune import spec as specs
from speechtune.engines.kit import precision as precision_names


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (every device). What Lightning's seed_everything does, by
    hand because the speechbrain and hf images do not ship Lightning."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclasses.dataclass(frozen=True)
class Precision:
    """spec.training.precision on this device. On a CPU a GPU job file still runs (the
    same YAML works on a laptop), in fp32, with a note in the log."""

    name: str  # what ran: fp32 | bf16 | fp16
    dtype: torch.dtype | None  # autocast dtype; None: no autocast
    device_type: str  # cpu | cuda

    @property
    def lightning(self) -> str:
        """Lightning's precision flag for the Trainer or Fabric."""
        return precision_names.LIGHTNING[self.name]

    @property
    def needs_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range."""
        return self.dtype == torch.float16

    def autocast(self) -> ContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.grad_scaler.GradScaler:
        return torch.amp.grad_scaler.GradScaler(self.device_type, enabled=self.needs_scaler)


def precision_for(requested: str, device: str, log: Callable[[str], None]) -> Precision:
    name = precision_names.effective(requested, device)
    if name != requested:
        log(f"spec.training.precision {requested} needs a GPU; training in fp32 on {device}")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
    return Precision(name, dtype, device.split(":")[0])


def agree(loss: float, stop: bool, *, world_size: int, device: str | torch.device) -> tuple[float, bool]:
    """Mean loss over the ranks (a NaN anywhere is a NaN everywhere, so every rank raises
    NonFiniteLoss at the same step) and whether any rank was asked to stop (SIGTERM
    reaches pods at different steps; a rank that stops alone leaves the others waiting in
    all-reduce). One all-reduce of two numbers per optimizer step."""
    if world_size <= 1:
        return loss, stop
    import torch.distributed as dist

    values = torch.tensor([loss, 1.0 if stop else 0.0], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return float(values[0]) / world_size, bool(values[1] > 0)


# Written without spaces between words: WER there scores whole sentences, CER is the metric.
CHARACTER_LEVEL_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "yue"})


def best_key(spec: specs.FinetuneSpec, *, characters: bool) -> str:
    """spec.output.bestBy, else CER for a character-level task (the model emits characters,
    or the language is written without word spaces), else WER."""
    if spec.output.best_by:
        return spec.output.best_by
    language = (spec.data.target_lang or "").split("-")[0].lower()
    return "cer" if characters or language in CHARACTER_LEVEL_LANGUAGES else "wer"
