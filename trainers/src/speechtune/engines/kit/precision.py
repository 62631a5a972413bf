"""spec.training.precision on a device, without torch (the NeMo config builder and the
torch-free spec checks use it); kit/policies.py adds the autocast and scaler."""

from __future__ import annotations

LIGHTNING = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


def effective(requested: str, device: str) -> str:
    """What runs: the request on a GPU; fp32 on a CPU, whatever the spec asks (CPU fp16
    is unsupported and bf16 autocast there is slow), so the same YAML runs on a laptop."""
    return requested if device.startswith("cuda") else "fp32"


def lightning(requested: str, device: str) -> str:
    """Lightning's precision flag for the Trainer or Fabric."""
    return LIGHTNING[effective(requested, device)]
