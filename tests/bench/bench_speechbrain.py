"""speechbrain-ctc training throughput: length-bucketed dynamic batches vs naive fixed-size
random batches, same data, same model, same number of steps, measured side by side in one
run through the real `speechtune run` path (session.run; numbers from metrics.json).

Data: synthetic ATC and generic English speech (espeak-ng), so durations vary (1-10 s)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the speechtune CLI does, before torch loads

from speechtune import spec  # noqa: E402
from speechtune.data import manifest, synth  # noqa: E402
from speechtune.runtime import console, session, volumes  # noqa: E402

STEPS = 40
MODEL = {"num_layers": 2, "d_model": 96, "nhead": 4, "d_ffn": 384, "kernel_size": 15, "frontend_channels": 16}


def make_data(folder: Path) -> Path:
    """Mixes two domains so utterance lengths spread out, as real corpora do."""
    atc = synth.synthesize(folder / "atc", n=60, languages=["en"], domain="atc", seed=11)
    generic = synth.synthesize(folder / "generic", n=60, languages=["en"], domain="generic", seed=12)
    rows = manifest.read(atc["train"]) + manifest.read(generic["train"])
    manifest.write(folder / "train.json", rows, "nemo")
    manifest.write(folder / "valid.json", manifest.read(atc["valid"]), "nemo")
    return folder


def job(batching: str) -> spec.Job:
    return spec.validate({
        "apiVersion": "speechtune.dev/v1alpha1", "kind": "FinetuneJob", "metadata": {"name": f"bench-{batching}"},
        "spec": {
            "engine": "speechbrain-ctc",
            "data": {"volume": {"claimName": "d"}, "train": "train.json", "validation": "valid.json"},
            "training": {"maxSteps": STEPS, "learningRate": 1e-3, "batchDuration": 40, "valCheckInterval": STEPS,
                         "limitValBatches": 1, "seed": 5, "overrides": {**MODEL, "batching": batching}},
            "output": {"volume": {"claimName": "r"}, "resume": False},
        },
    })


def measure(batching: str, data: Path, runs: Path) -> dict[str, Any]:
    quiet = console.Console(open(os.devnull, "w"), live=False)
    the_job = job(batching)
    mounts = volumes.local_mounts(the_job.typed, {"d": data, "r": runs})
    outcome = session.run(the_job, mounts, session.Options(metrics_port=0, console=quiet))
    if outcome.status != "succeeded":
        raise RuntimeError(f"{batching}: {outcome.reason}")
    return dict(outcome.metrics)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-sb-") as tmp:
        data = make_data(Path(tmp) / "data")
        results = {name: measure(name, data, Path(tmp) / "runs") for name in ("length", "random")}
    print(f"{'batching':<34} {'audio-s/s':>10} {'padding':>8} {'train s':>8} {'audio s':>8}")
    labels = {"length": "length-bucketed (batchDuration 40s)", "random": "naive random, fixed size"}
    for name, m in results.items():
        t = m["timings"]
        print(f"{labels[name]:<34} {t['audio_seconds_per_second']:>10.1f} {m['padding_ratio_mean']:>8.3f} "
              f"{t['train_seconds']:>8.1f} {t['audio_seconds']:>8.0f}")
    speedup = results["length"]["timings"]["audio_seconds_per_second"] / results["random"]["timings"][
        "audio_seconds_per_second"]
    print(f"({STEPS} steps each, {MODEL['num_layers']}x{MODEL['d_model']} Conformer-CTC, CPU; "
          f"throughput ratio {speedup:.2f}x)")


if __name__ == "__main__":
    main()
    sys.exit(0)
