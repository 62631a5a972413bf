"""speechbrain-ctc: a SpeechBrain Conformer-CTC engine (Fbank -> CMVN -> SpecAugment ->
conv front-end -> Conformer encoder -> CTC head), as in the ATC0 SpeechBrain package.

The engine class is imported on first access so `speechtune validate` can run the spec
checks in `settings` without importing torch."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "SpeechBrainCTCEngine":
        from speechtune.engines.speechbrain_ctc import engine

        return engine.SpeechBrainCTCEngine
    raise AttributeError(name)
