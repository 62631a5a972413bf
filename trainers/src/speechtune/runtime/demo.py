"""`make demo`: synthesise ATC-style speech, fine-tune examples/demo.yaml on the CPU through
the same `speechtune run` path, and compare the untrained and the trained model on the
held-out test split (sentences unseen in training)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Mapping

from speechtune import spec as specs
from speechtune.data import synth
from speechtune.runtime import session, volumes

DATA_CLAIM = "demo-data"
RUNS_CLAIM = "demo-runs"
DEFAULT_JOB = Path("examples/demo.yaml")


def ensure_data(folder: Path, *, utterances: int) -> None:
    """Synthesises once; a finished earlier synthesis (test.json written last) is reused."""
    if all((folder / f"{split}.json").exists() for split in synth.SPLITS):
        print(f"demo: reusing synthetic speech in {folder}")
        return
    print(f"demo: synthesising {utterances} ATC utterances with espeak-ng into {folder} ...", flush=True)
    began = time.monotonic()
    synth.synthesize(folder, n=utterances, languages=["en"], domain="atc", seed=0)
    print(f"demo: synthesised in {time.monotonic() - began:.0f} s")


def before_after_table(metrics: Mapping[str, Any]) -> str:
    before = (metrics.get("baseline") or {}).get("all") or {}
    after = (metrics.get("test") or {}).get("all") or {}
    rows = [("untrained model", before), (f"trained ({metrics.get('steps')} steps)", after)]
    lines = [f"{'held-out test (unseen sentences)':<34} {'WER':>7} {'CER':>7}"]
    for label, score in rows:
        lines.append(f"{label:<34} {score.get('wer', float('nan')):>7.3f} {score.get('cer', float('nan')):>7.3f}")
    return "\n".join(lines)


def main(*, workdir: Path, utterances: int, job_file: Path | None, max_steps: int | None) -> int:
    workdir = workdir.absolute()
    data, runs = workdir / "data", workdir / "runs"
    job_path = job_file or DEFAULT_JOB
    try:
        job = specs.load(job_path)
    except ValueError as error:
        print(f"speechtune demo: {error}", file=sys.stderr)
        return 2
    ensure_data(data, utterances=utterances)
    mounts = volumes.local_mounts(job.typed, {DATA_CLAIM: data, RUNS_CLAIM: runs})
    began = time.monotonic()
    outcome = session.run(job, mounts, session.Options(max_steps=max_steps, score_before_training=True))
    print()
    if outcome.status != "succeeded":
        print(f"demo: training {outcome.status}: {outcome.reason}")
        print(f"run folder: {outcome.run_folder}")
        return outcome.exit_code
    print(before_after_table(outcome.metrics))
    timings = outcome.metrics.get("timings") or {}
    print(f"\ntraining took {timings.get('train_seconds', 0):.0f} s "
          f"({timings.get('audio_seconds_per_second') or 0:.1f} audio-seconds/s); "
          f"whole run {time.monotonic() - began:.0f} s")
    print(f"run folder: {outcome.run_folder}")
    return 0
