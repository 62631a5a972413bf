"""Checkpoint folder names, without torch: the runtime asks "is there anything to resume
from?" before it imports any engine."""

from __future__ import annotations

import re
from pathlib import Path

PREFIX = "step-"
NAME = re.compile(rf"^{PREFIX}(\d+)$")  # a finished checkpoint of the shared store


def name_of(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def has_checkpoints(directory: Path) -> bool:
    """Whether a run folder's checkpoints/ holds anything a resume could start from: a
    store checkpoint, or a Lightning `.ckpt` (nemo-canary)."""
    return directory.is_dir() and any(NAME.match(p.name) or p.suffix == ".ckpt" for p in directory.iterdir())
