"""nemo-canary: 2D (duration x tokens) bucketing against lhotse without bucketing, on the
same synthetic en/de/en->de data and the same tiny canary2 model (examples/tiny-canary.yaml).

Per loader: padding of the audio batch (padded samples / all samples) and of the decoder
sequence (prompt + transcript), measured over the training batches; then audio seconds
trained per wall second over a short CPU run. Bins come from `speechtune data bins`'s
estimator on the run's own tokenizers, batch sizes from the same audio budget per batch.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from speechtune import spec as specs
from speechtune.data import synth
from speechtune.engines.nemo_canary import bins
from speechtune.engines import base
from speechtune.engines.nemo_canary import NemoCanaryEngine

REPO = Path(__file__).resolve().parents[2]
UTTERANCES = 240
BATCH_DURATION = 30.0
STEPS = 30
WARMUP_STEPS = 3  # excluded from throughput (first batches pay for lazy initialisation)
LOADER_BATCHES = 60
ROUNDS = 2


class StepRecorder:
    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def set_max_steps(self, max_steps: int) -> None: ...

    def train_step(self, **values: Any) -> None:
        # The runtime's throughput definition: wall-clock between step reports.
        self.steps.append({**values, "at": time.perf_counter()})

    def validation(self, **values: Any) -> None: ...

    def log(self, message: str) -> None: ...


def _spec(overrides: dict[str, Any]) -> dict[str, Any]:
    spec = yaml.safe_load((REPO / "examples" / "tiny-canary.yaml").read_text())["spec"]
    spec["training"].update(maxSteps=STEPS, valCheckInterval=STEPS, limitValBatches=1, batchDuration=BATCH_DURATION)
    spec["training"]["overrides"].update(overrides)
    spec["data"]["test"] = None
    return spec


def _context(run_dir: Path, data: Path, spec: dict[str, Any], reporter: StepRecorder) -> base.RunContext:
    return base.RunContext(
        name="bench-canary", namespace="default", spec=specs.parse(spec),
        data=base.DataPaths(root=data, train=data / "train.json", validation=data / "valid.json", test=None),
        model_dir=None, run_dir=run_dir, checkpoint_dir=run_dir / "checkpoints", max_steps=STEPS, resume=False,
        device="cpu", world_size=1, rank=0, stop=threading.Event(), reporter=reporter)


def loader_padding(engine: NemoCanaryEngine) -> tuple[float, float, float]:
    """(input padding, output padding, mean utterances per batch) over training batches."""
    inputs, outputs, sizes = [], [], []
    for batch in itertools.islice(engine.model._train_dl, LOADER_BATCHES):
        audio, tokens = batch.audio_lens.float(), batch.prompted_transcript_lens.float()
        inputs.append(1.0 - float(audio.sum() / (audio.max() * len(audio))))
        outputs.append(1.0 - float(tokens.sum() / (tokens.max() * len(tokens))))
        sizes.append(len(audio))
    return statistics.mean(inputs), statistics.mean(outputs), statistics.mean(sizes)


def measure(name: str, data: Path, work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    reporter = StepRecorder()
    ctx = _context(work / name.replace(" ", "-"), data, _spec(overrides), reporter)
    engine = NemoCanaryEngine()
    engine.prepare(ctx)
    input_pad, output_pad, batch_size = loader_padding(engine)
    began = time.perf_counter()
    engine.train(ctx)
    wall = time.perf_counter() - began
    # Per-step rates: their median shrugs off bursts of load from other processes.
    steps = reporter.steps
    rates = [steps[i]["audio_seconds"] / (steps[i]["at"] - steps[i - 1]["at"]) for i in range(max(1, WARMUP_STEPS), len(steps))]
    return {
        "loader": name, "input_padding": input_pad, "output_padding": output_pad, "utts_per_batch": batch_size,
        "rates": rates, "train_wall_s": wall, "tokenizers": ctx.run_dir / "nemo" / "tokenizers",
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-nemo-") as tmp:
        work = Path(tmp)
        data = work / "data"
        synth.synthesize(data, n=UTTERANCES, languages=["en", "de"], domain="generic", seed=3, translate_to="de")
        plain_overrides: dict[str, Any] = {"model.train_ds.use_bucketing": False}
        first = measure("no bucketing", data, work / "r0", plain_overrides)
        durations, tokens = bins.measure([data / "train.json"], first["tokenizers"], prompt_format="canary2",
                                         min_duration=0.0, max_duration=float("inf"), num_examples=-1)
        duration_tokens = bins.estimate_bins_2d(durations, tokens, num_buckets=4, num_subbuckets=2)
        bucketed_overrides = bins.Bins(duration_tokens, bins.batch_sizes_for(duration_tokens, BATCH_DURATION)).as_overrides()
        # Interleaved rounds, so a burst of load from elsewhere hits both loaders alike.
        runs = {"no bucketing": [first], "2D bucketing": []}
        for index in range(ROUNDS):
            if index:
                runs["no bucketing"].append(measure("no bucketing", data, work / f"r{index}", plain_overrides))
            runs["2D bucketing"].append(measure("2D bucketing", data, work / f"r{index}", bucketed_overrides))
        print(f"{len(durations)} training utterances, {sum(durations):.0f} s of audio; "
              f"{len(duration_tokens)} bins {duration_tokens}; {STEPS} steps x {ROUNDS} rounds, "
              f"{BATCH_DURATION:.0f} s per batch; audio s/s = median per step (min-max over steps)")
        print(f"{'loader':<14} {'input pad':>10} {'output pad':>11} {'utts/batch':>11} {'audio s/s':>10} "
              f"{'range':>13} {'train s':>8}")
        for name, rows in runs.items():
            rates = sorted(rate for row in rows for rate in row["rates"])
            wall = statistics.mean(row["train_wall_s"] for row in rows)
            row = rows[0]
            print(f"{name:<14} {row['input_padding']:>10.3f} {row['output_padding']:>11.3f} "
                  f"{row['utts_per_batch']:>11.1f} {statistics.median(rates):>10.2f} "
                  f"{f'{rates[0]:.1f}-{rates[-1]:.1f}':>13} {wall:>8.1f}")


if __name__ == "__main__":
    main()
