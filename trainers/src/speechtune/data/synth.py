"""Synthetic speech data: espeak-ng speaks generated sentences, sox makes 16 kHz mono WAV.

Real audio for demos, tests and smoke runs when a user has none yet. Every random choice
(sentences, voices, speed, pitch, padding, noise) is drawn from the seed up front, so a
seed gives the same manifests and the same audio; the espeak-ng/sox work then runs in a
thread pool of subprocesses.
"""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
from concurrent import futures
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np

from speechtune.data import manifest, sentences

SAMPLE_RATE = 16000
SPLITS = ("train", "valid", "test")
_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
_VOICES = {
    "en": ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc"],
    "de": ["de"],
    "fr": ["fr-fr", "fr-be", "fr-ch"],
    "es": ["es", "es-419"],
    "bn": ["bn"],
}
_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"]
_SUFFIX = {"nemo": ".json", "speechbrain": ".csv", "hf": ".csv"}


@dataclasses.dataclass(frozen=True)
class Task:
    source_lang: str  # the language spoken
    target_lang: str  # the language of the transcript (differs for translation)


@dataclasses.dataclass(frozen=True)
class Voice:
    name: str  # espeak-ng voice+variant, e.g. "en-gb+f3"
    speed: int  # words per minute
    pitch: int  # 0..99
    pad_start: float  # seconds of silence before and after the speech
    pad_end: float
    noise_snr_db: float | None  # background noise level, None for clean audio


@dataclasses.dataclass(frozen=True)
class Item:
    """One utterance to render: everything decided, nothing rendered yet."""

    id: str
    split: str
    task: Task
    spoken: sentences.Sentence
    transcript: str
    voice: Voice
    noise_seed: int

    @property
    def audio_relpath(self) -> str:
        return f"audio/{self.split}/{self.id}.wav"


def synthesize(
    out_dir: str | os.PathLike[str],
    *,
    n: int,
    languages: Sequence[str],
    domain: str,
    seed: int,
    fmt: manifest.Format = "nemo",
    translate_to: str | None = None,
    noise: bool = False,
) -> dict[str, Path]:
    """Writes `n` utterances as train/valid/test manifests (disjoint sentences) plus WAVs
    below `out_dir`; returns split -> manifest path."""
    root = Path(out_dir).absolute()
    items = plan(n=n, languages=languages, domain=domain, seed=seed, translate_to=translate_to, noise=noise)
    durations = render_all(root, items)
    paths: dict[str, Path] = {}
    for split in SPLITS:
        rows = [_utterance(root, item, durations[item.id]) for item in items if item.split == split]
        paths[split] = manifest.write(root / f"{split}{_SUFFIX[fmt]}", rows, fmt)
    return paths


def tasks_for(languages: Sequence[str], translate_to: str | None) -> list[Task]:
    """ASR in every language, plus translation into `translate_to` from the others."""
    tasks = [Task(lang, lang) for lang in languages]
    if translate_to is not None:
        if translate_to not in languages:
            tasks.append(Task(translate_to, translate_to))
        tasks += [Task(lang, translate_to) for lang in languages if lang != translate_to]
    return tasks


def plan(
    *, n: int, languages: Sequence[str], domain: str, seed: int, translate_to: str | None, noise: bool
) -> list[Item]:
    """Every decision for `n` utterances, deterministic for `seed`."""
    _check_request(n, languages, domain, translate_to)
    generator = sentences.get(domain)
    rng = random.Random(seed)
    keys = _unique_keys(generator, rng, n)
    tasks = tasks_for(languages, translate_to)
    split_sizes = _split_sizes(n)
    items = []
    for index, key in enumerate(keys):
        split = _split_of(index, split_sizes)
        task = tasks[index % len(tasks)]
        items.append(
            Item(
                id=f"{split}-{index:05d}",
                split=split,
                task=task,
                spoken=generator.render(key, task.source_lang),
                transcript=generator.render(key, task.target_lang).text,
                voice=_voice(rng, task.source_lang, noise),
                noise_seed=rng.randrange(2**32),
            )
        )
    return items


def _check_request(n: int, languages: Sequence[str], domain: str, translate_to: str | None) -> None:
    if n < len(SPLITS):
        raise ValueError(f"n must be at least {len(SPLITS)} (one utterance per split), got {n}")
    if not languages:
        raise ValueError("languages: give at least one")
    allowed = sentences.DOMAIN_LANGUAGES.get(domain)
    if allowed is None:
        raise ValueError(f"domain: unknown {domain!r} (want one of {', '.join(sentences.DOMAINS)})")
    for lang in languages:
        if lang not in allowed:
            raise ValueError(f"languages: domain {domain!r} speaks {', '.join(allowed)}, not {lang!r}")
    if translate_to is not None:
        if domain != "generic":
            raise ValueError("translate_to: the phrase table covers only the 'generic' domain")
        if translate_to not in sentences.LANGUAGES:
            raise ValueError(f"translate_to: unknown language {translate_to!r}")


def _unique_keys(generator: sentences.Generator, rng: random.Random, n: int) -> list[Hashable]:
    # Unique keys make the splits disjoint: no sentence (nor its translation) is in two.
    seen: dict[Hashable, None] = {}
    attempts = 0
    while len(seen) < n:
        seen.setdefault(generator.draw(rng))
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"n: cannot draw {n} distinct sentences from this domain ({len(seen)} found)")
    return list(seen)


def _split_sizes(n: int) -> tuple[int, int, int]:
    valid = max(1, round(n * _SPLIT_FRACTIONS[1]))
    test = max(1, round(n * _SPLIT_FRACTIONS[2]))
    return n - valid - test, valid, test


def _split_of(index: int, sizes: tuple[int, int, int]) -> str:
    if index < sizes[0]:
        return "train"
    return "valid" if index < sizes[0] + sizes[1] else "test"


def _voice(rng: random.Random, lang: str, noise: bool) -> Voice:
    return Voice(
        name=f"{rng.choice(_VOICES[lang])}+{rng.choice(_VARIANTS)}",
        speed=rng.randrange(150, 191),
        pitch=rng.randrange(30, 71),
        pad_start=round(rng.uniform(0.05, 0.25), 3),
        pad_end=round(rng.uniform(0.05, 0.2), 3),
        noise_snr_db=round(rng.uniform(12.0, 30.0), 1) if noise else None,
    )


def render_all(root: Path, items: Sequence[Item]) -> dict[str, float]:
    """Renders every item (in parallel subprocesses); returns id -> duration in seconds."""
    for split in {item.split for item in items}:
        (root / "audio" / split).mkdir(parents=True, exist_ok=True)
    workers = max(2, len(os.sched_getaffinity(0)) + 1)
    with futures.ThreadPoolExecutor(max_workers=workers) as pool:
        durations = pool.map(lambda item: render(root / item.audio_relpath, item), items)
        return {item.id: duration for item, duration in zip(items, durations)}


def render(wav: Path, item: Item) -> float:
    """espeak-ng -> sox (16 kHz mono 16-bit, padded) -> optional noise; returns duration."""
    voice = item.voice
    speech = _run(
        ["espeak-ng", "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch), "--stdout"],
        item.spoken.speech.encode("utf-8"),
    )
    _run(
        # -D: no dither, which is random and would make a seed's audio differ run to run.
        ["sox", "-D", "-t", "wav", "-", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(wav),
         "pad", str(voice.pad_start), str(voice.pad_end)],
        speech,
    )
    import soundfile

    if voice.noise_snr_db is not None:
        samples, rate = soundfile.read(str(wav), dtype="float32")
        noisy = add_noise(samples, voice.noise_snr_db, np.random.default_rng(item.noise_seed))
        soundfile.write(str(wav), noisy, rate, subtype="PCM_16")
    info = soundfile.info(str(wav))
    return float(info.frames / info.samplerate)


def _run(command: list[str], stdin: bytes) -> bytes:
    done = subprocess.run(command, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return done.stdout


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Mixes white and brown (low-frequency, hum-like) noise at `snr_db` below the speech."""
    white = rng.standard_normal(samples.shape[0], dtype=np.float32)
    brown = np.cumsum(rng.standard_normal(samples.shape[0]), dtype=np.float32)
    brown -= np.linspace(brown[0], brown[-1], brown.shape[0], dtype=np.float32)  # no drift
    mix = white / (np.std(white) + 1e-9) + brown / (np.std(brown) + 1e-9)
    speech_power = float(np.mean(samples**2)) + 1e-12
    noise = mix * np.sqrt(speech_power / (10 ** (snr_db / 10)) / (float(np.mean(mix**2)) + 1e-12))
    mixed: np.ndarray = np.clip(samples + noise, -1.0, 1.0)
    return mixed


def _utterance(root: Path, item: Item, duration: float) -> manifest.Utterance:
    extra = {"taskname": "asr" if item.task.source_lang == item.task.target_lang else "ast"}
    return manifest.Utterance(
        id=item.id,
        audio_filepath=root / item.audio_relpath,
        duration=duration,
        text=item.transcript,
        source_lang=item.task.source_lang,
        target_lang=item.task.target_lang,
        # Generic sentences carry case and punctuation; ATC and Banglish labels do not.
        pnc="yes" if item.spoken.text[-1:] in (".", "।") else "no",
        extra=extra,
    )
