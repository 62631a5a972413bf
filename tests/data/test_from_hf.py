"""`speechtune data from-hf` on Hugging Face datasets built here from local files."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speechtune import engines
from speechtune.data import check, commands, from_hf, manifest

datasets = pytest.importorskip("datasets")


def _wav_bytes(seconds: float, rate: int, channels: int) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    soundfile.write(buffer, np.stack([tone] * channels, axis=1), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _split(name: str, rows: int, rate: int, channels: int) -> "datasets.Dataset":
    audio = [{"bytes": _wav_bytes(1.5 + 0.25 * i, rate, channels), "path": f"{name}-{i}.wav"} for i in range(rows)]
    text = [f"Delta {i}{i}, turn left heading {name}!" for i in range(rows)]
    # Cast from a plain struct column: encoding through the Audio feature needs torchcodec.
    return datasets.Dataset.from_dict({"audio": audio, "text": text}).cast_column("audio", datasets.Audio())


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A save_to_disk folder per ATC0-like config: 8 kHz stereo and 22.05 kHz mono audio."""
    root = tmp_path_factory.mktemp("hf")
    for config, rate, channels in (("base", 8000, 2), ("part2", 22050, 1)):
        datasets.DatasetDict(
            train=_split("train", 10, rate, channels),
            validation=_split("validation", 4, rate, channels),
            test=_split("test", 3, rate, channels),
        ).save_to_disk(str(root / config))
    return root


def test_export_writes_16k_mono_wavs_and_manifests_that_pass_preflight(saved: Path, tmp_path: Path) -> None:
    paths = from_hf.export(saved, tmp_path, from_hf.Options(config="base", normalization="atc", language="en"))
    assert paths == {split: tmp_path / "base" / f"{split}.json" for split in ("train", "valid", "test")}
    report = check.preflight(list(paths.values()), duration_tolerance=0.0)
    assert report.problems == [], report.format()
    train = manifest.read(paths["train"])
    assert len(train) == 10
    assert train[1].text == "DELTA 11 TURN LEFT HEADING TRAIN"
    assert train[1].duration == pytest.approx(1.75, abs=1e-3)
    assert train[1].source_lang == train[1].target_lang == "en"
    info = soundfile.info(str(train[1].audio_filepath))
    assert (info.samplerate, info.channels) == (16000, 1)


def test_train_fraction_and_validation_samples_slice_like_the_atc0_package(saved: Path, tmp_path: Path) -> None:
    options = from_hf.Options(config="part2", train_fraction=0.5, validation_samples=2, fmt="speechbrain")
    paths = from_hf.export(saved, tmp_path, options)
    counts = {split: len(manifest.read(path)) for split, path in paths.items()}
    assert counts == {"train": 5, "valid": 2, "test": 3}
    assert paths["train"].read_text().splitlines()[0] == "ID,wav,duration,transcript"


def test_parquet_folder_with_readme_configs(tmp_path: Path) -> None:
    source = tmp_path / "atc0"
    for config in ("base", "part3"):
        (source / config).mkdir(parents=True)
        for split, rows in (("train", 6), ("validation", 2), ("test", 2)):
            _split(split, rows, 16000, 1).to_parquet(str(source / config / f"{split}-00000-of-00001.parquet"))
    (source / "README.md").write_text(
        "---\nconfigs:\n" + "".join(
            f"- config_name: {c}\n  data_files:\n"
            + "".join(f"  - split: {s}\n    path: {c}/{s}-*\n" for s in ("train", "validation", "test"))
            for c in ("base", "part3")
        ) + "---\n"
    )
    paths = from_hf.export(source, tmp_path / "out", from_hf.Options(config="part3"))
    assert [len(manifest.read(p)) for p in paths.values()] == [6, 2, 2]


def test_train_only_dataset_gets_validation_and_test_carved_out(tmp_path: Path) -> None:
    _split("train", 20, 16000, 1).save_to_disk(str(tmp_path / "only-train"))
    paths = from_hf.export(tmp_path / "only-train", tmp_path / "out", from_hf.Options())
    counts = [len(manifest.read(p)) for p in paths.values()]
    assert counts == [16, 2, 2]
    texts = [{u.text for u in manifest.read(p)} for p in paths.values()]
    assert not texts[0] & texts[1] and not texts[0] & texts[2]


def test_command_reports_a_missing_text_column(saved: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"), engines.data_needs())
    args = parser.parse_args(["data", "from-hf", str(saved), "--config", "base", "--out-dir", str(tmp_path),
                              "--text-column", "words"])
    assert args.func(args) == 2
    assert "text column 'words' not in the dataset (columns: audio, text)" in capsys.readouterr().err
    args = parser.parse_args(["data", "from-hf", str(saved), "--config", "base", "--out-dir", str(tmp_path),
                              "--validation-samples", "1"])
    assert args.func(args) == 0
    assert "valid: " in capsys.readouterr().out and len(manifest.read(tmp_path / "base" / "valid.json")) == 1
