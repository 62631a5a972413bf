"""Export a Hugging Face `datasets` dataset with an audio column to 16 kHz mono WAV files
plus train/valid/test manifests, like the ATC0 package's `atc0_hf_to_manifests.py`
(`--config base|part2|part3`, `--train-fraction`, `--validation-samples`).

Works on local data only: a folder written by `save_to_disk`, or anything
`load_dataset` reads from a local path (an audiofolder, CSV/Parquet files, configs declared
in a README). Audio is read as raw bytes/paths (`Audio(decode=False)`) and decoded with
soundfile, because datasets 5.x decodes through torchcodec, which trainer images lack.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import re
import subprocess
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from speechtune.data import manifest, normalize

SAMPLE_RATE = 16000
_SPLIT_NAMES = {
    "train": ("train",),
    "valid": ("validation", "valid", "dev", "val"),
    "test": ("test",),
}
_TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence", "normalized_text")
_SUFFIX = {"nemo": ".json", "speechbrain": ".csv", "hf": ".csv"}


@dataclasses.dataclass(frozen=True)
class Options:
    config: str | None = None  # dataset configuration (ATC0: base | part2 | part3)
    train_fraction: float = 1.0  # keep the first fraction of the train split (0 < f <= 1)
    validation_samples: int = 0  # cap the validation split (0: all)
    audio_column: str | None = None  # default: the column with the Audio feature, or "audio"
    text_column: str | None = None  # default: text, transcript, transcription, sentence, ...
    normalization: str = "none"  # applied once to transcripts, like the ATC0 package
    language: str | None = None  # written as source_lang and target_lang (Canary needs them)
    fmt: manifest.Format = "nemo"


def export(source: str | os.PathLike[str], out_dir: str | os.PathLike[str], options: Options) -> dict[str, Path]:
    """Writes `<out_dir>[/<config>]/{train,valid,test}` manifests and `audio/<split>/*.wav`;
    returns split -> manifest path."""
    if not 0.0 < options.train_fraction <= 1.0:
        raise ValueError(f"train_fraction: want 0 < value <= 1, got {options.train_fraction}")
    if options.validation_samples < 0:
        raise ValueError(f"validation_samples: want >= 0, got {options.validation_samples}")
    splits = select_splits(load(Path(source), options.config), options)
    root = Path(out_dir).absolute() / (options.config or "")
    clean = normalize.get(options.normalization)
    paths = {}
    for split, dataset in splits.items():
        audio_column, text_column = _columns(dataset, options)
        rows = _rows(dataset, audio_column, text_column)
        utterances = _export_split(root, split, rows, clean, options.language)
        paths[split] = manifest.write(root / f"{split}{_SUFFIX[options.fmt]}", utterances, options.fmt)
    return paths


def load(source: Path, config: str | None) -> Any:
    """A DatasetDict (or Dataset) from local files, never from a hub."""
    import datasets

    if not source.exists():
        raise ValueError(f"source: {source} does not exist (only local datasets can be exported)")
    saved = source / config if config and (source / config).is_dir() else source
    if (saved / "dataset_dict.json").is_file() or (saved / "state.json").is_file():
        return datasets.load_from_disk(str(saved))
    try:
        return datasets.load_dataset(str(source), config)
    except datasets.exceptions.DatasetGenerationError as error:
        # audiofolder layouts encode every file through torchcodec while building.
        if isinstance(error.__cause__, ImportError):
            raise ValueError(
                f"source: building {source} needs {error.__cause__} Export it with save_to_disk or as "
                "Parquet (audio stored as bytes/paths), which load without decoding."
            ) from None
        raise


def select_splits(loaded: Any, options: Options) -> dict[str, Any]:
    """train/valid/test from the dataset's splits, with the ATC0 package's slicing. A
    dataset without validation or test splits gets them carved from the end of train."""
    import datasets

    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict(train=loaded)
    found = {ours: next((loaded[n] for n in names if n in loaded), None) for ours, names in _SPLIT_NAMES.items()}
    train = found["train"]
    if train is None:
        raise ValueError(f"dataset has no train split (splits: {', '.join(loaded)})")
    carve = [split for split in ("valid", "test") if found[split] is None]
    if carve:
        held = max(1, len(train) // 10)
        if len(train) <= held * len(carve):
            raise ValueError(f"train split too small ({len(train)} rows) to carve {' and '.join(carve)} from")
        for split in carve:
            found[split] = train.select(range(len(train) - held, len(train)))
            train = train.select(range(len(train) - held))
    keep = max(1, int(len(train) * options.train_fraction))
    found["train"] = train.select(range(keep))
    valid = found["valid"]
    assert valid is not None  # found or carved above
    if options.validation_samples and len(valid) > options.validation_samples:
        found["valid"] = valid.select(range(options.validation_samples))
    return found


def _columns(dataset: Any, options: Options) -> tuple[str, str]:
    import datasets

    columns = list(dataset.column_names)
    audio = options.audio_column or next(
        (name for name, feature in dataset.features.items() if isinstance(feature, datasets.Audio)),
        "audio",
    )
    text = options.text_column or next((name for name in _TEXT_COLUMNS if name in columns), None)
    if audio not in columns:
        raise ValueError(f"audio column {audio!r} not in the dataset (columns: {', '.join(columns)})")
    if text is None or text not in columns:
        raise ValueError(
            f"text column {text or ' / '.join(_TEXT_COLUMNS)!r} not in the dataset (columns: {', '.join(columns)})"
        )
    return audio, text


def _rows(dataset: Any, audio_column: str, text_column: str) -> Iterator[Mapping[str, Any]]:
    import datasets

    if isinstance(dataset.features[audio_column], datasets.Audio):
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    for index, example in enumerate(dataset):
        yield {"index": index, "id": example.get("id"), "audio": example[audio_column], "text": example[text_column]}


def _export_split(
    root: Path, split: str, rows: Iterator[Mapping[str, Any]], clean: Callable[[str], str], language: str | None
) -> list[manifest.Utterance]:
    folder = root / "audio" / split
    folder.mkdir(parents=True, exist_ok=True)
    workers = max(2, len(os.sched_getaffinity(0)))
    utterances: list[manifest.Utterance] = []
    with futures.ThreadPoolExecutor(max_workers=workers) as pool:
        # In batches, so a large split never holds all its audio bytes in memory at once.
        while batch := list(itertools.islice(rows, 64 * workers)):
            utterances += pool.map(lambda row: _export_row(folder, split, row, clean, language), batch)
    return utterances


def _export_row(
    folder: Path, split: str, row: Mapping[str, Any], clean: Callable[[str], str], language: str | None
) -> manifest.Utterance:
    utt_id = _safe_id(str(row["id"])) if row["id"] is not None else f"{split}-{row['index']:06d}"
    wav = folder / f"{utt_id}.wav"
    samples, rate = decode(row["audio"], where=f"{split} row {row['index']}")
    frames = write_16k_mono(wav, samples, rate)
    return manifest.Utterance(id=utt_id, audio_filepath=wav, duration=frames / SAMPLE_RATE,
                              text=clean(str(row["text"] or "")), source_lang=language, target_lang=language)


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "utt"


def decode(audio: Any, *, where: str) -> tuple[np.ndarray, int]:
    """(samples [frames, channels] float32, rate) from an undecoded Audio value
    ({"bytes", "path"}), a path string, or an already decoded {"array", "sampling_rate"}."""
    import soundfile

    if isinstance(audio, Mapping) and audio.get("array") is not None:
        samples = np.asarray(audio["array"], dtype=np.float32)
        return (samples[:, None] if samples.ndim == 1 else samples.T), int(audio["sampling_rate"])
    source: Any
    if isinstance(audio, Mapping) and audio.get("bytes"):
        source = io.BytesIO(audio["bytes"])
    elif isinstance(audio, Mapping) and audio.get("path"):
        source = audio["path"]
    elif isinstance(audio, str):
        source = audio
    else:
        raise ValueError(f"{where}: no audio bytes or path")
    try:
        samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise ValueError(f"{where}: cannot decode audio: {error}") from None
    return samples, int(rate)


def write_16k_mono(wav: Path, samples: np.ndarray, rate: int) -> int:
    """Mixes down to mono and resamples with sox (its resampler is band-limited);
    returns the number of frames written."""
    import soundfile

    mono = samples.mean(axis=1).astype(np.float32)
    if rate == SAMPLE_RATE:
        soundfile.write(str(wav), mono, SAMPLE_RATE, subtype="PCM_16")
    else:
        done = subprocess.run(
            ["sox", "-D", "-t", "f32", "-r", str(rate), "-c", "1", "-",
             "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(wav)],
            input=mono.tobytes(), capture_output=True, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"sox failed resampling into {wav}: {done.stderr.decode(errors='replace')}")
    return int(soundfile.info(str(wav)).frames)

