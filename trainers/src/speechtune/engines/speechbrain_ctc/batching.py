"""Length-based dynamic batching: utterances of similar duration share a batch, so little
of each batch is padding, and each batch holds about `batch_seconds` of padded audio.

Pure functions over durations (no torch), so the batching is tested and benchmarked on its
own and resuming mid-epoch only needs (seed, epoch, batch index)."""

from __future__ import annotations

import random
from typing import Sequence

Batch = list[int]  # indices into the utterance list


def length_batches(
    durations: Sequence[float], *, batch_seconds: float, seed: int, epoch: int,
    max_batch_size: int | None = None, shuffle: bool = True,
) -> list[Batch]:
    """Sorts by duration (ties broken randomly per epoch), cuts batches whose padded size
    (longest x count) stays within `batch_seconds`, then shuffles the batch order."""
    rng = random.Random(seed * 100_003 + epoch)
    noise = [rng.random() for _ in durations] if shuffle else [0.0] * len(durations)
    order = sorted(range(len(durations)), key=lambda i: (durations[i], noise[i]))
    batches: list[Batch] = []
    current: Batch = []
    for index in order:
        longest = durations[index]  # sorted ascending: the newcomer is the longest
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (full or longest * (len(current) + 1) > batch_seconds):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches


def random_batches(count: int, *, batch_size: int, seed: int, epoch: int) -> list[Batch]:
    """Naive fixed-size batches in random order: the baseline the benchmark compares with."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(count))
    rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


def padding_ratio(durations: Sequence[float], batch: Batch) -> float:
    """Padded frames / total frames when `batch` is padded to its longest utterance."""
    if not batch:
        return 0.0
    longest = max(durations[i] for i in batch)
    total = longest * len(batch)
    return 0.0 if total <= 0 else 1.0 - sum(durations[i] for i in batch) / total


def shard(batches: Sequence[Batch], *, rank: int, world_size: int) -> list[Batch]:
    """Every rank takes the same number of batches (DDP steps must line up)."""
    usable = len(batches) - len(batches) % world_size if len(batches) >= world_size else len(batches)
    return list(batches[rank:usable:world_size])
