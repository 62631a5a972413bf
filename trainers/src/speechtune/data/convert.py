"""Convert a manifest between NeMo JSON lines, SpeechBrain CSV and Hugging Face CSV."""

from __future__ import annotations

import os
from pathlib import Path

from speechtune.data import manifest


def convert(
    source: str | os.PathLike[str], target: str | os.PathLike[str], fmt: manifest.Format | None = None
) -> Path:
    """Reads `source` (format detected) and writes `target` (format `fmt`, else from its
    extension: .json/.jsonl NeMo, .csv SpeechBrain). Audio paths stay relative when the
    audio lies below the target's folder, else they become absolute; every field is kept."""
    src, dst = Path(source).absolute(), Path(target).absolute()
    if src == dst:
        raise ValueError(f"target: {dst} is the source itself")
    return manifest.write(dst, manifest.read(src), fmt)
