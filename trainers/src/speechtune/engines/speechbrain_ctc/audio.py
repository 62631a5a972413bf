"""From utterances to padded batches: Fbank features [B, T, n_mels] with SpeechBrain's
relative lengths, token targets [B, L] with relative lengths.

Fbank is deterministic, so each utterance's features are computed once and kept in
memory (up to a budget): on CPU this saves a good part of every later epoch."""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import soundfile
import torch

from speechtune.data import manifest

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100  # 10 ms hop


@dataclasses.dataclass(frozen=True)
class Batch:
    ids: list[str]
    feats: torch.Tensor  # [B, T, n_mels] float32, zero-padded
    lens: torch.Tensor  # [B] relative to T
    tokens: torch.Tensor  # [B, L] int64, 0-padded
    token_lens: torch.Tensor  # [B] relative to L
    texts: list[str]
    languages: list[str | None]
    audio_seconds: float  # unpadded speech in the batch
    padding_ratio: float  # padded frames / all frames


def read_audio(utt: manifest.Utterance) -> np.ndarray:
    """The utterance's samples (offset/duration honoured), mono float32 at 16 kHz."""
    with soundfile.SoundFile(str(utt.audio_filepath)) as handle:
        if handle.samplerate != SAMPLE_RATE:
            raise ValueError(f"{utt.audio_filepath}: {handle.samplerate} Hz, expected {SAMPLE_RATE}"
                             " (convert with `speechtune data convert`)")
        if utt.offset:
            handle.seek(int(round(utt.offset * SAMPLE_RATE)))
        frames = int(round(utt.duration * SAMPLE_RATE)) if utt.offset else -1
        samples = handle.read(frames, dtype="float32", always_2d=True)
    return samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]


class FeatureCache:
    """utterance id -> Fbank features [T, n_mels], computed on first use."""

    def __init__(self, fbank: Callable[[torch.Tensor], torch.Tensor], *, max_frames: int = 20_000_000) -> None:
        self._fbank = fbank
        self._cache: dict[str, torch.Tensor] = {}
        self._frames = 0
        self._max_frames = max_frames  # 20M frames x 80 mels x 4 B: ~6 GB at most

    def __call__(self, utt: manifest.Utterance) -> torch.Tensor:
        key = f"{utt.audio_filepath}:{utt.offset}:{utt.duration}"
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        wave = torch.from_numpy(read_audio(utt)).unsqueeze(0)
        with torch.no_grad():
            feats = self._fbank(wave)[0]
        if self._frames + feats.shape[0] <= self._max_frames:
            self._cache[key] = feats
            self._frames += feats.shape[0]
        return feats


def collate(utts: Sequence[manifest.Utterance], token_ids: Sequence[list[int]], features: FeatureCache) -> Batch:
    feats = [features(u) for u in utts]
    longest = max(f.shape[0] for f in feats)
    padded = torch.zeros(len(feats), longest, feats[0].shape[1])
    for row, f in enumerate(feats):
        padded[row, : f.shape[0]] = f
    max_tokens = max(1, max(len(t) for t in token_ids))
    tokens = torch.zeros(len(utts), max_tokens, dtype=torch.long)
    for row, ids in enumerate(token_ids):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    total = sum(f.shape[0] for f in feats)
    return Batch(
        ids=[u.id for u in utts],
        feats=padded,
        lens=torch.tensor([f.shape[0] / longest for f in feats]),
        tokens=tokens,
        token_lens=torch.tensor([len(t) / max_tokens for t in token_ids]),
        texts=[u.text for u in utts],
        languages=[u.target_lang or u.source_lang for u in utts],
        audio_seconds=total / FRAMES_PER_SECOND,
        padding_ratio=1.0 - total / (longest * len(feats)),
    )
