"""status.progress and status.metrics from the trainer's Prometheus exposition text."""

from __future__ import annotations

import math
from typing import Any, Mapping

from prometheus_client import parser

# Sample names as the trainer exports them (ARCHITECTURE.md, "Training metrics").
STEP = "speechtune_step"
MAX_STEPS = "speechtune_max_steps"
EPOCH = "speechtune_epoch"
TRAIN_LOSS = "speechtune_train_loss"
VAL_LOSS = "speechtune_val_loss"
WER = "speechtune_val_wer_ratio"
CER = "speechtune_val_cer_ratio"
BLEU = "speechtune_val_bleu_ratio"
BEST_CHECKPOINT = "speechtune_best_checkpoint_info"  # an Info metric: the path is its `path` label
MAX_PATH = 1024
AUDIO_SECONDS = "speechtune_audio_seconds_total"
STEP_SECONDS_SUM = "speechtune_step_duration_seconds_sum"
STEP_SECONDS_COUNT = "speechtune_step_duration_seconds_count"


def samples(text: str, *, job: str | None = None) -> dict[str, float]:
    """Sample name -> value. When samples carry a `finetunejob` label, only `job`'s count."""
    values: dict[str, float] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            owner = sample.labels.get("finetunejob")
            if job is not None and owner is not None and owner != job:
                continue
            if math.isfinite(sample.value):
                values[sample.name] = float(sample.value)
    return values


def progress(values: Mapping[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if STEP in values:
        out["step"] = int(values[STEP])
    if values.get(MAX_STEPS, 0) > 0:
        out["maxSteps"] = int(values[MAX_STEPS])
    if EPOCH in values:
        out["epoch"] = round(values[EPOCH], 3)
    step_seconds = _mean_step_seconds(values)
    if "step" in out and "maxSteps" in out:
        remaining = max(out["maxSteps"] - out["step"], 0)
        if step_seconds is not None:
            out["etaSeconds"] = round(remaining * step_seconds)
        percent = min(100, int(100 * out["step"] / out["maxSteps"]))
        out["summary"] = f"{percent}% ({out['step']}/{out['maxSteps']})"
    return out


def metrics(values: Mapping[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in (("trainLoss", TRAIN_LOSS), ("valLoss", VAL_LOSS), ("wer", WER), ("cer", CER), ("bleu", BLEU)):
        if name in values:
            out[key] = _round(values[name])
    busy = values.get(STEP_SECONDS_SUM, 0.0)
    if AUDIO_SECONDS in values and busy > 0:
        # Audio trained per second spent in training steps (validation excluded).
        out["audioSecondsPerSecond"] = _round(values[AUDIO_SECONDS] / busy)
    return out


def best_checkpoint(text: str, *, job: str | None = None) -> str | None:
    """The `path` label of the trainer's best-checkpoint Info metric (printable, capped)."""
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != BEST_CHECKPOINT:
                continue
            owner = sample.labels.get("finetunejob")
            if job is not None and owner is not None and owner != job:
                continue
            path = sample.labels.get("path", "")
            if path and len(path) <= MAX_PATH and path.isprintable():
                return path
    return None


def status_fields(text: str, *, job: str | None = None) -> dict[str, Any]:
    """{'progress': ..., 'metrics': ..., 'bestCheckpoint': ...}, leaving out whichever the
    text says nothing about."""
    values = samples(text, job=job)
    out = {"progress": progress(values), "metrics": metrics(values), "bestCheckpoint": best_checkpoint(text, job=job)}
    return {key: value for key, value in out.items() if value}


def _mean_step_seconds(values: Mapping[str, float]) -> float | None:
    count = values.get(STEP_SECONDS_COUNT, 0.0)
    return values.get(STEP_SECONDS_SUM, 0.0) / count if count > 0 else None


def _round(value: float) -> float:
    # Four significant digits: enough to read, few enough that noise does not rewrite status.
    return float(f"{value:.4g}")
