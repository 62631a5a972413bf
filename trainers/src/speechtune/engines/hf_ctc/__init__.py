"""The `hf-ctc` engine: wav2vec2/MMS CTC fine-tuning with language adapters, LoRA or in full.

`HFCTCEngine` is imported on first access, so torch-free modules of this package (the
settings `speechtune validate` reads) load without torch and transformers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HFCTCEngine"]


def __getattr__(name: str) -> Any:
    if name == "HFCTCEngine":
        from speechtune.engines.hf_ctc.engine import HFCTCEngine

        return HFCTCEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
