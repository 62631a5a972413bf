"""Engine registry: name -> import path, so a process imports only the framework it runs."""

from __future__ import annotations

import importlib

from speechtune.engines import base

# Imported lazily: the nemo image has no speechbrain, the hf image has no NeMo.
ENGINES: dict[str, str] = {
    "speechbrain-ctc": "speechtune.engines.speechbrain_ctc:SpeechBrainCTCEngine",
    "nemo-canary": "speechtune.engines.nemo_canary:NemoCanaryEngine",
    "hf-ctc": "speechtune.engines.hf_ctc:HFCTCEngine",
}


# Optional per-engine spec checks run by `speechtune validate` and before any training:
# "module:function" taking the spec mapping, returning human-readable notes and raising
# ValueError (with the spec field path in the message) when the job cannot run.
SPEC_CHECKS: dict[str, str] = {
    "speechbrain-ctc": "speechtune.engines.speechbrain_ctc.settings:check_spec",
    "hf-ctc": "speechtune.engines.hf_ctc.settings:check_spec",
    "nemo-canary": "speechtune.engines.nemo_canary:check_spec",
}


def load(name: str) -> base.Engine:
    """Returns a fresh engine instance for `spec.engine`."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(sorted(ENGINES))}") from None
    module_name, _, class_name = target.partition(":")
    engine_cls = getattr(importlib.import_module(module_name), class_name)
    return engine_cls()  # type: ignore[no-any-return,unused-ignore]
