"""`speechtune data bins`: 2D (duration x tokens) bucket bins for lhotse, like NeMo's
estimate_duration_bins_2d. Filled in by the nemo-canary engine work."""

from __future__ import annotations

import argparse


def register(data_subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds `data bins` to the `speechtune data` group."""
