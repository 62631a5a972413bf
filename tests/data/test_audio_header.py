"""Header-only audio facts agree with libsndfile, and truncated WAVs are caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from speechtune.data import audio_header


@pytest.mark.parametrize(
    "name, rate, channels, subtype",
    [
        ("pcm16.wav", 16000, 1, "PCM_16"),
        ("float.wav", 44100, 2, "FLOAT"),
        ("pcm24.wav", 22050, 1, "PCM_24"),
        ("extensible.wav", 48000, 3, "PCM_16"),  # >2 channels: WAVE_FORMAT_EXTENSIBLE
        ("clip.flac", 8000, 1, "PCM_16"),  # not WAV: soundfile.info
    ],
)
def test_header_matches_soundfile(tmp_path: Path, name: str, rate: int, channels: int, subtype: str) -> None:
    path = tmp_path / name
    soundfile.write(str(path), np.zeros((rate // 3, channels), dtype=np.float32), rate, subtype=subtype)
    info = soundfile.info(str(path))
    header = audio_header.read_header(path)
    assert header == audio_header.AudioHeader(info.samplerate, info.channels, info.frames)


def test_truncated_missing_empty_and_garbage(tmp_path: Path) -> None:
    good = tmp_path / "good.wav"
    soundfile.write(str(good), np.zeros(16000, dtype=np.float32), 16000, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes(good.read_bytes()[:20000])
    soundfile.write(str(tmp_path / "silent.wav"), np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    (tmp_path / "noise.wav").write_bytes(b"\x00\x01" * 100)
    assert "truncated" in str(audio_header.read_header(tmp_path / "cut.wav"))
    assert "no samples" in str(audio_header.read_header(tmp_path / "silent.wav"))
    assert "corrupt audio" in str(audio_header.read_header(tmp_path / "noise.wav"))
    assert "not found" in str(audio_header.read_header(tmp_path / "absent.wav"))
    assert "folder" in str(audio_header.read_header(tmp_path))
