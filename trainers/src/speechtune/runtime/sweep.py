"""One row per run appended to a sweep CSV, with exactly the header of the Whisper sweeps
the reference ATC0 package keeps compatible (../shared/reference/002, section 5)."""

from __future__ import annotations

import csv
import fcntl
from pathlib import Path
from typing import Any, Mapping

HEADER = (
    "timestamp", "run_id", "run_stage", "model", "output_dir", "dataset_part", "train_fraction",
    "validation_samples", "epochs", "wer", "train_runtime", "train_loss", "eval_loss", "device", "gpu",
    "per_device_train_batch_size", "grad_accum", "effective_batch_size", "lora_r", "lora_alpha",
    "lora_dropout", "quant_weights_dtype", "quant_compute_dtype", "inference_time_sec", "peak_memory_mb",
    "save_full_model", "language", "task", "learning_rate", "seed", "eval_strategy", "eval_steps",
)


def append_row(path: Path, row: Mapping[str, Any]) -> None:
    """Appends `row` (keys from HEADER; unknown keys are an error), writing the header
    first when the file is new. An existing file with another header is refused rather
    than silently mixed."""
    unknown = set(row) - set(HEADER)
    if unknown:
        raise ValueError(f"sweep row: unknown column(s) {', '.join(sorted(unknown))}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", newline="", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # concurrent runs of one sweep share the file
        handle.seek(0)
        first = handle.readline().strip()
        if first and tuple(c.strip() for c in first.split(",")) != HEADER:
            raise ValueError(f"{path}: existing header differs from the sweep header ({first[:60]}...)")
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        if not first:
            writer.writeheader()
        handle.seek(0, 2)
        writer.writerow({name: _cell(row.get(name)) for name in HEADER})


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
