"""Data toolkit timings: preflight on 100k rows (headers only), manifest I/O, synthesis.

Run with `make bench` (or `python tests/bench/run.py data`). Writes its files to a
temporary folder and removes them.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile

from speechtune.data import check, manifest, synth

ROWS = 100_000
CLIP_SECONDS = 0.5


def _clip_bytes() -> bytes:
    buffer = io.BytesIO()
    tone = 0.1 * np.sin(np.arange(int(16000 * CLIP_SECONDS)) / 8.0)
    soundfile.write(buffer, tone, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _write_manifest(root: Path, name: str, files: int) -> Path:
    """ROWS rows over `files` distinct WAV files (created once, shared between manifests)."""
    clip = _clip_bytes()
    audio = root / "audio"
    audio.mkdir(exist_ok=True)
    for index in range(files):
        path = audio / f"{index:06d}.wav"
        if not path.exists():
            path.write_bytes(clip)
    path = root / name
    with path.open("w") as f:
        for row in range(ROWS):
            f.write(json.dumps({
                "id": f"utt-{row:06d}", "audio_filepath": f"audio/{row % files:06d}.wav",
                "duration": CLIP_SECONDS, "text": "go", "source_lang": "en", "target_lang": "en", "pnc": "no",
            }) + "\n")
    return path


def _timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def main() -> None:
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as folder:
        root = Path(folder)
        for files in (1_000, ROWS):
            path = _write_manifest(root, f"m{files}.json", files)
            seconds, report = _timed(lambda: check.preflight(path, languages=["en"]))
            assert isinstance(report, check.Report) and report.ok, report.format()  # type: ignore[union-attr]
            rows.append((f"preflight {ROWS:,} rows, {files:,} files", f"{seconds:.2f}", f"{ROWS / seconds:,.0f} rows/s"))
        seconds, utterances = _timed(lambda: manifest.read(path))
        rows.append((f"manifest.read {ROWS:,} rows (NeMo)", f"{seconds:.2f}", f"{ROWS / seconds:,.0f} rows/s"))
        for fmt, name in (("nemo", "w.json"), ("speechbrain", "w.csv")):
            seconds, _ = _timed(lambda: manifest.write(root / name, utterances, fmt))  # type: ignore[arg-type]
            rows.append((f"manifest.write {ROWS:,} rows ({fmt})", f"{seconds:.2f}", f"{ROWS / seconds:,.0f} rows/s"))
        for domain, lang in (("generic", "en"), ("atc", "en"), ("banglish", "bn")):
            seconds, _ = _timed(lambda: synth.synthesize(root / domain, n=400, languages=[lang], domain=domain, seed=0))
            rows.append((f"synth 400 utterances ({domain})", f"{seconds:.2f}", f"{400 / seconds:,.1f} utt/s"))
    width = max(len(name) for name, _, _ in rows)
    print(f"{'what':<{width}}  {'seconds':>8}  rate")
    for name, seconds_text, rate in rows:
        print(f"{name:<{width}}  {seconds_text:>8}  {rate}")


if __name__ == "__main__":
    main()
