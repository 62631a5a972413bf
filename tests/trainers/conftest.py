"""Session fixtures for the trainer tests: pretrained-model fixtures (built once per test
session with the frameworks' own APIs, see tests/pretrained/) and synthetic speech."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest


@pytest.fixture(scope="session")
def pretrained_canary(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """name ("canary-1b-v2", "canary-180m-flash", "canary-1b") -> its fixture .nemo."""
    from pretrained import canary

    cache = tmp_path_factory.mktemp("pretrained-canary")
    published = {p.name.split("/")[-1]: p for p in (canary.CANARY_1B_V2, canary.CANARY_180M_FLASH, canary.CANARY_1B)}
    return lambda name: canary.cached(published[name], cache)


@pytest.fixture(scope="session")
def pretrained_mms() -> "Any":
    """The facebook/mms-1b-all-shaped fixture, trained on en/de/fr espeak-ng speech
    (tests/pretrained/mms.py): built once per machine, minutes of CPU the first time."""
    from pretrained import mms

    return mms.cached()
