"""Fixtures for the data toolkit tests: tiny WAV files and one small synthesised set."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile

from speechtune.data import synth

WriteWav = Callable[..., Path]


@pytest.fixture
def write_wav(tmp_path: Path) -> WriteWav:
    """write_wav(name, seconds=1.0, rate=16000, channels=1) -> path: a quiet sine tone."""

    def write(name: str, seconds: float = 1.0, rate: int = 16000, channels: int = 1) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(seconds * rate)) / rate
        tone = 0.1 * np.sin(2 * np.pi * 440 * t)
        soundfile.write(str(path), np.stack([tone] * channels, axis=1), rate, subtype="PCM_16")
        return path

    return write


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """30 utterances: en ASR, de ASR and en->de translation, with noise (shared, read-only)."""
    out = tmp_path_factory.mktemp("synth")
    return synth.synthesize(out, n=30, languages=["en", "de"], domain="generic", seed=7,
                            translate_to="de", noise=True)
