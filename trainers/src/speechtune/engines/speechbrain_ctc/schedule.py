"""The learning-rate schedule: linear warm-up, then cosine or linear decay to a floor."""

from __future__ import annotations

import math


def learning_rate(step: int, *, peak: float, warmup: int, total: int, schedule: str, floor: float) -> float:
    """Linear warm-up to `peak`, then cosine or linear decay to `floor * peak` at `total`."""
    if warmup and step <= warmup:
        return peak * step / warmup
    if schedule == "constant" or total <= warmup:
        return peak
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return peak * (floor + (1 - floor) * shape)
