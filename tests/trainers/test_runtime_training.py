"""Tiny real training runs through the runtime with the speechbrain-ctc engine: learning,
the run folder, metrics endpoint, resume after SIGKILL, SIGTERM checkpoints and exit code
(the NaN stop is in the engine contract suite and tests/unit/trainers/test_kit_loop.py).

Each test trains a ~30k-parameter Conformer-CTC on a handful of espeak-ng utterances;
assertions are about steps and files, never about time."""

from __future__ import annotations

import csv
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does; effective if torch is not loaded yet
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from speechtune import spec
from speechtune.data import synth
from speechtune.runtime import console, evaluation, session, sweep, volumes

pytestmark = pytest.mark.training

TINY_MODEL = {"num_layers": 1, "d_model": 48, "nhead": 2, "d_ffn": 96, "kernel_size": 7,
              "frontend_channels": 8, "n_mels": 40, "dropout": 0.0, "time_masks": 0, "freq_masks": 0}
# Big enough to leave CTC's all-blank plateau within ~100 full-batch steps (measured: loss
# 2.8 -> 0.03 by step 150 on these 16 utterances).
LEARNING_MODEL = {**TINY_MODEL, "num_layers": 2, "d_model": 96, "nhead": 4, "d_ffn": 384, "kernel_size": 15,
                  "frontend_channels": 16}
ARCHITECTURE_METRICS = (
    "speechtune_train_loss", "speechtune_val_loss", "speechtune_val_wer_ratio", "speechtune_val_cer_ratio",
    "speechtune_learning_rate", "speechtune_step", "speechtune_max_steps", "speechtune_epoch",
    "speechtune_audio_seconds_total", "speechtune_samples_total", "speechtune_step_duration_seconds",
    "speechtune_padding_ratio", "speechtune_gpu_memory_bytes",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 training utterances; the learning test scores the model on them (it must at
    least be able to fit what it saw), so train = validation = test."""
    folder = tmp_path_factory.mktemp("atc")
    paths = synth.synthesize(folder, n=20, languages=["en"], domain="atc", seed=7)
    return paths["train"].parent


def job_document(*, max_steps: int, val_every: int, name: str = "tiny", **training: Any) -> dict[str, Any]:
    overrides = {**TINY_MODEL, **training.pop("overrides", {})}
    training = {"learningRate": 3e-3, "batchDuration": 20, **training}
    return {
        "apiVersion": "speechtune.dev/v1alpha1", "kind": "FinetuneJob", "metadata": {"name": name},
        "spec": {
            "engine": "speechbrain-ctc",
            "data": {"volume": {"claimName": "d"}, "train": "train.json", "validation": "train.json",
                     "test": "train.json", "normalization": "atc", "sourceLang": "en"},
            "training": {"maxSteps": max_steps, "warmupSteps": 5, "valCheckInterval": val_every, "seed": 3,
                         "overrides": overrides, **training},
            "output": {"volume": {"claimName": "r"}, "saveTopK": 2, "resume": True, "sweepCsv": "sweep.csv"},
        },
    }


def write_job(folder: Path, document: dict[str, Any]) -> Path:
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run_in_process(document: dict[str, Any], data: Path, runs: Path, **options: Any) -> session.Outcome:
    job = spec.validate(document)
    mounts = volumes.local_mounts(job.typed, {"d": data, "r": runs})
    return session.run(job, mounts, session.Options(metrics_port=0, **options))


@pytest.fixture
def scraper() -> Iterator[dict[str, Any]]:
    """Scrapes /metrics from a thread while the run trains (started by on_metrics_url)."""
    seen: dict[str, Any] = {"body": "", "stop": threading.Event()}

    def start(url: str) -> None:
        def poll() -> None:
            while not seen["stop"].is_set():
                try:
                    body = urllib.request.urlopen(url.replace("localhost", "127.0.0.1"), timeout=10).read().decode()
                except OSError:
                    body = ""
                if "speechtune_step{" in body and 'speechtune_step{engine="speechbrain-ctc",finetunejob="learns",namespace="default"} 0.0' not in body:
                    seen["body"] = body
                    return
                time.sleep(0.2)

        threading.Thread(target=poll, daemon=True).start()

    seen["start"] = start
    yield seen
    seen["stop"].set()


def test_learns_writes_the_run_folder_and_serves_metrics(data: Path, tmp_path: Path, scraper: dict[str, Any]) -> None:
    # One batch holds all 16 utterances: full-batch steps, the quickest way off the plateau.
    document = job_document(max_steps=160, val_every=80, name="learns", learningRate=2e-3, batchDuration=150,
                            overrides=LEARNING_MODEL)
    outcome = run_in_process(document, data, tmp_path / "runs", score_before_training=True,
                             on_metrics_url=scraper["start"], console=console.Console(sys.stderr, live=False))
    assert outcome.status == "succeeded", outcome.reason
    metrics = json.loads((outcome.run_folder / "metrics.json").read_text())

    # It learned: the loss fell and the trained model beats the untrained one.
    curve = [loss for _, loss in metrics["loss_curve"]]
    assert metrics["train_loss"] < 0.5 * curve[0]
    assert metrics["test"]["all"]["cer"] < metrics["baseline"]["all"]["cer"]
    assert metrics["test"]["all"]["wer"] < metrics["baseline"]["all"]["wer"]

    # The run folder: <output>/<job>/<run-id>/ with everything the issue lists.
    assert outcome.run_folder.parent == tmp_path / "runs" / "learns"
    for name in ("metrics.json", "model_card.json", "train_log.txt", "decode.jsonl", "job.yaml"):
        assert (outcome.run_folder / name).is_file(), name
    assert list((outcome.run_folder / "checkpoints").glob("step-*"))
    assert metrics["steps"] == 160 and metrics["timings"]["train_seconds"] > 0
    assert metrics["padding_ratio_mean"] is not None and metrics["peak_memory_mb"]["rss"] > 0
    decoded = [json.loads(line) for line in (outcome.run_folder / "decode.jsonl").read_text().splitlines()]
    assert len(decoded) == 16 and {"id", "hyp", "ref"} <= set(decoded[0])
    card = json.loads((outcome.run_folder / "model_card.json").read_text())
    assert card["engine"] == "speechbrain-ctc" and card["tokenizer"] == "char"
    rows = list(csv.reader((tmp_path / "runs" / "sweep.csv").open()))
    assert tuple(rows[0]) == sweep.HEADER and len(rows) == 2
    assert float(rows[1][sweep.HEADER.index("wer")]) == pytest.approx(metrics["validation"]["all"]["wer"], abs=1e-5)

    # The endpoint, scraped while training, exposed every metric name of ARCHITECTURE.md.
    body = scraper["body"]
    for name in ARCHITECTURE_METRICS:
        assert f"\n{name}" in body, name
    assert 'finetunejob="learns"' in body and 'engine="speechbrain-ctc"' in body

    # `speechtune eval` on the exported model reproduces the run's own test score.
    result = evaluation.evaluate(outcome.run_folder, data / "train.json", output=tmp_path / "decode.jsonl")
    assert result.scores["all"].wer == pytest.approx(metrics["test"]["all"]["wer"])


def speechtune(job: Path, data: Path, runs: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SPEECHTUNE_METRICS_PORT": "0", "SPEECHTUNE_RUN_ID": "fixed"}
    return subprocess.Popen(
        [sys.executable, "-m", "speechtune.cli", "run", str(job), "--volume", f"d={data}",
         "--volume", f"r={runs}", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition: Any, process: subprocess.Popen[str], what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"speechtune exited ({process.returncode}) before {what}:\n{output[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_resume_after_sigkill_continues_from_the_checkpoint(data: Path, tmp_path: Path) -> None:
    # Long enough that the kill lands mid-run on a fast machine: top-k pruning may remove the
    # step-6 checkpoint again soon after (best by CER keeps an earlier one), so wait for any >= 6.
    job = write_job(tmp_path, job_document(max_steps=60, val_every=3, limitValBatches=1))
    runs = tmp_path / "runs"
    checkpoints = runs / "tiny" / "fixed" / "checkpoints"
    first = speechtune(job, data, runs)

    def saved_at_or_after_step_6() -> bool:
        return any(int(p.name.removeprefix("step-")) >= 6 for p in checkpoints.glob("step-[0-9]*")
                   if p.name.removeprefix("step-").isdigit())

    wait_for(saved_at_or_after_step_6, first, "a checkpoint at step 6 or later")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    killed_at = max(int(p.name.removeprefix("step-")) for p in checkpoints.glob("step-*")
                    if p.name.removeprefix("step-").isdigit())
    (checkpoints / f"step-{killed_at + 3:08d}").mkdir()  # what an in-place writer leaves when killed

    second = speechtune(job, data, runs)
    output, _ = second.communicate(timeout=900)
    assert second.returncode == 0, output[-3000:]
    assert f"at step {killed_at}" in output and "resumed from" in output
    assert f"skipping step-{killed_at + 3:08d}" in output  # named, then the previous one was used
    metrics = json.loads((runs / "tiny" / "fixed" / "metrics.json").read_text())
    assert metrics["steps"] == 60
    first_step_after_resume = metrics["loss_curve"][0][0]
    assert first_step_after_resume == killed_at + 1  # no step was trained twice


def test_sigterm_saves_a_checkpoint_and_exits_retryable(data: Path, tmp_path: Path) -> None:
    job = write_job(tmp_path, job_document(max_steps=10_000, val_every=10_000))
    runs = tmp_path / "runs"
    log = runs / "tiny" / "fixed" / "train_log.txt"
    process = speechtune(job, data, runs)
    wait_for(lambda: log.exists() and "step 10/" in log.read_text(), process, "step 10")
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == session.EXIT_STOPPED, output[-3000:]
    saved = list((runs / "tiny" / "fixed" / "checkpoints").glob("step-*"))
    assert len(saved) == 1 and int(saved[0].name.removeprefix("step-")) >= 10
    metrics = json.loads((runs / "tiny" / "fixed" / "metrics.json").read_text())
    assert metrics["status"] == "stopped"


def test_sweep_runs_each_grid_point_and_appends_one_row_each(data: Path, tmp_path: Path) -> None:
    from speechtune.runtime import sweeps

    job = spec.validate(job_document(max_steps=2, val_every=2, limitValBatches=1, warmupSteps=0, gradAccumulation=2))
    mounts = volumes.local_mounts(job.typed, {"d": data, "r": tmp_path})
    grid = sweeps.parse_grid(["learningRate=1e-3,2e-3"])
    assert sweeps.run_grid(job, mounts, grid, csv="unused.csv", stage="coarse", max_steps=None,
                           metrics_port=0) == 0
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))  # the job's own output.sweepCsv
    assert [(r["learning_rate"], r["run_stage"]) for r in rows] == [("0.001", "coarse"), ("0.002", "coarse")]
    assert len({r["output_dir"] for r in rows}) == 2
    assert {r["grad_accum"] for r in rows} == {"2"}


def test_two_processes_under_torchrun_train_one_run(data: Path, tmp_path: Path) -> None:
    """The multi-GPU path (DDP, rank-0 reporting, rank-0 checkpoints,
    agreed stop/NaN) on two CPU processes with the gloo backend."""
    job = write_job(tmp_path, job_document(max_steps=4, val_every=2, limitValBatches=1, warmupSteps=1))
    runs = tmp_path / "runs"
    env = {**os.environ, "SPEECHTUNE_METRICS_PORT": "0", "SPEECHTUNE_RUN_ID": "ddp"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "speechtune.cli", "run", str(job), "--volume", f"d={data}", "--volume", f"r={runs}"],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((runs / "tiny" / "ddp" / "metrics.json").read_text())
    assert metrics["status"] == "succeeded" and metrics["steps"] == 4
    assert metrics["flags"]["world_size"] == 2
    assert sorted(p.name for p in (runs / "tiny" / "ddp" / "checkpoints").glob("step-*")) == [
        "step-00000002", "step-00000004"]
