"""`speechtune data convert IN OUT`: exact round trips through every format."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from speechtune import engines
from speechtune.data import commands, convert, manifest


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"), engines.data_needs())
    args = parser.parse_args(["data", *argv])
    return int(args.func(args))


def test_nemo_to_speechbrain_to_hf_and_back_is_byte_exact(small_synth: dict[str, Path], tmp_path: Path) -> None:
    source = small_synth["train"]
    sb = source.parent / "conv-train.csv"
    hf = source.parent / "conv-train-hf.csv"
    back = source.parent / "conv-train.json"
    try:
        assert _run("convert", str(source), str(sb)) == 0
        assert sb.read_text().splitlines()[0].startswith("ID,wav,duration,transcript,")
        assert _run("convert", str(sb), str(hf), "--format", "hf") == 0
        assert hf.read_text().startswith("audio_path,sentence,duration,")
        assert _run("convert", str(hf), str(back)) == 0
        assert back.read_bytes() == source.read_bytes()
    finally:
        for path in (sb, hf, back):
            path.unlink(missing_ok=True)


def test_converting_into_another_folder_keeps_audio_reachable(small_synth: dict[str, Path], tmp_path: Path) -> None:
    target = convert.convert(small_synth["valid"], tmp_path / "elsewhere" / "valid.csv")
    original, converted = manifest.read(small_synth["valid"]), manifest.read(target)
    assert converted == original
    assert all(utt.audio_filepath.is_file() for utt in converted)


def test_refuses_to_overwrite_its_source(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"audio_filepath": "a.wav", "duration": 1, "text": "x"}\n')
    with pytest.raises(ValueError, match="is the source itself"):
        convert.convert(path, path)
    assert _run("convert", str(tmp_path / "missing.json"), str(tmp_path / "out.csv")) == 2
