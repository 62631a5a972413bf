"""Audio in, padded CTC batches out: loading, length-grouped batching and the collator.

transformers 5 no longer ships `DataCollatorCTCWithPadding` (the guide imports it), so
the collator lives here: the feature extractor pads and normalises the audio, the
tokenizer encodes the labels, and label padding becomes -100, which the CTC loss skips.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import soundfile
import torch
import torchaudio
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor

from speechtune.data import manifest

# HF's LengthGroupedSampler: shuffle, then sort within windows of this many batches, so
# batches hold similar lengths (little padding) yet the order stays random.
MEGABATCH_FACTOR = 50


@dataclasses.dataclass(frozen=True)
class Example:
    utt_id: str
    audio_filepath: Path
    offset: float | None  # seconds into the file; None: the whole file is the utterance
    duration: float
    text: str  # normalised: what the model learns to emit
    raw_text: str  # as in the manifest (references are scored by the runtime)


def examples(path: Path, normalize: Callable[[str], str]) -> list[Example]:
    """Reads a manifest (any format speechtune.data knows) into normalised examples."""
    return [
        Example(u.id, u.audio_filepath, u.offset, u.duration, normalize(u.text), u.text)
        for u in manifest.read(path)
    ]


def load_audio(example: Example, sampling_rate: int) -> np.ndarray:
    """Mono float32 samples at `sampling_rate`, honouring the manifest's offset/duration."""
    start, stop = 0, None
    if example.offset is not None:
        file_rate = soundfile.info(str(example.audio_filepath)).samplerate
        start = int(example.offset * file_rate)
        stop = start + int(round(example.duration * file_rate))
    samples, rate = soundfile.read(str(example.audio_filepath), start=start, stop=stop, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != sampling_rate:
        mono = torchaudio.functional.resample(torch.from_numpy(mono), rate, sampling_rate).numpy()
    return mono


def length_grouped_batches(
    durations: Sequence[float], *, batch_size: int, batch_duration: float | None, seed: int
) -> list[list[int]]:
    """One epoch's batches of indices, deterministic for `seed` (resuming regenerates the
    same order and skips the batches already done). With `batch_duration`, a batch holds
    at most that many seconds of padded audio (and at most `batch_size` utterances)."""
    rng = random.Random(seed)
    order = list(range(len(durations)))
    rng.shuffle(order)
    window = batch_size * MEGABATCH_FACTOR
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        sorted_window = sorted(order[start : start + window], key=lambda i: durations[i], reverse=True)
        batches.extend(_pack(sorted_window, durations, batch_size, batch_duration))
    # Batches in random order (a small data set is one window, whose sorted batches would
    # otherwise come in the same order every epoch), but the largest first, as HF does:
    # a batch that runs out of memory fails at step one, not hours in.
    rng.shuffle(batches)
    if batches:
        largest = max(range(len(batches)), key=lambda b: durations[batches[b][0]] * len(batches[b]))
        batches[0], batches[largest] = batches[largest], batches[0]
    return batches


def _pack(indices: Sequence[int], durations: Sequence[float], batch_size: int, batch_duration: float | None) -> list[list[int]]:
    """Cuts indices sorted longest-first into batches; padded size = first (longest) x count."""
    batches: list[list[int]] = []
    current: list[int] = []
    for index in indices:
        full = len(current) >= batch_size or (
            batch_duration is not None and current and durations[current[0]] * (len(current) + 1) > batch_duration
        )
        if full:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class AudioDataset(torch.utils.data.Dataset[dict[str, Any]]):
    def __init__(self, items: Sequence[Example], sampling_rate: int) -> None:
        self.items = items
        self.sampling_rate = sampling_rate

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.items[index]
        return {"audio": load_audio(example, self.sampling_rate), "text": example.text, "index": index}


@dataclasses.dataclass(frozen=True)
class CTCCollator:
    """Pads a list of dataset items into model inputs plus the batch's speech statistics."""

    feature_extractor: Wav2Vec2FeatureExtractor
    tokenizer: Wav2Vec2CTCTokenizer

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        audio = [item["audio"] for item in items]
        features = self.feature_extractor(
            audio, sampling_rate=self.feature_extractor.sampling_rate, padding=True,
            return_attention_mask=True, return_tensors="pt",
        )
        labels = self.tokenizer([item["text"] for item in items], padding=True, return_tensors="pt", return_attention_mask=True)
        label_ids = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
        lengths = [len(a) for a in audio]
        total = max(lengths) * len(lengths)
        batch = {"input_values": features["input_values"], "labels": label_ids}
        if self.feature_extractor.return_attention_mask:
            batch["attention_mask"] = features["attention_mask"]
        return {
            "inputs": batch,
            "indices": [item["index"] for item in items],
            "audio_seconds": sum(lengths) / self.feature_extractor.sampling_rate,
            "padding_ratio": 1.0 - sum(lengths) / total if total else 0.0,
        }


def loader(
    dataset: AudioDataset, batches: Sequence[Sequence[int]], collator: CTCCollator, *, num_workers: int
) -> torch.utils.data.DataLoader[dict[str, Any]]:
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=[list(b) for b in batches], collate_fn=collator, num_workers=num_workers
    )
