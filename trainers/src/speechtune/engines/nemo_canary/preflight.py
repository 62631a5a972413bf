"""Spec checks for `nemo-canary` that need no data and no NeMo import (`speechtune validate`).
Manifest checks (languages, prompt fields) run in the engine's prepare, before training."""

from __future__ import annotations

from typing import Any, Mapping

from speechtune.engines.nemo_canary import config as nemo_config

# Top-level sections an override may address when the model comes from a checkpoint whose
# config we cannot see without loading it (its `model.*` keys are checked in prepare).
_SECTIONS = ("model", "trainer", "exp_manager", *nemo_config.SPEECHTUNE_KEYS)


def check_spec(spec: Mapping[str, Any]) -> list[str]:
    """Returns notes; raises ValueError naming the spec field when the job cannot run."""
    notes: list[str] = []
    training: Mapping[str, Any] = spec.get("training") or {}
    model: Mapping[str, Any] = spec.get("model") or {}
    if not training.get("maxSteps") or int(training["maxSteps"]) <= 0:
        raise ValueError("spec.training.maxSteps: required (> 0) for nemo-canary (lhotse has no epoch length)")
    peft: Mapping[str, Any] = training.get("peft") or {}
    if peft.get("method") not in (None, "none"):
        raise ValueError(f"spec.training.peft.method: {peft['method']!r} is not supported by nemo-canary (use none)")

    overrides = nemo_config.flatten(training.get("overrides") or {})
    from_checkpoint = bool(model.get("path") or model.get("pretrained"))
    if from_checkpoint:
        unknown = [key for key in overrides if key.split(".")[0] not in _SECTIONS]
    else:
        unknown = nemo_config.unknown_override_keys(overrides, nemo_config.base_config())
    if unknown:
        raise ValueError(
            "spec.training.overrides: unknown NeMo config key(s) " + ", ".join(repr(k) for k in unknown)
        )
    prompt_format = overrides.get("model.prompt_format", "canary2" if not from_checkpoint else None)
    if prompt_format is not None and prompt_format not in nemo_config.PROMPT_FORMATS:
        raise ValueError(
            f"spec.training.overrides['model.prompt_format']: {prompt_format!r}, supported: "
            + ", ".join(nemo_config.PROMPT_FORMATS)
        )
    if not from_checkpoint:
        notes.append("nemo-canary: no spec.model: training from scratch with tokenizers built from the data")
    if model.get("init") and not from_checkpoint:
        raise ValueError("spec.model.init: include/exclude need spec.model.path or spec.model.pretrained")
    if training.get("precision") in ("bf16", "fp16"):
        notes.append(f"nemo-canary: precision {training['precision']} applies on GPU; CPU runs use fp32")
    return notes
