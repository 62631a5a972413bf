"""hf-ctc side by side: MMS adapters, LoRA and full fine-tuning of the same tiny wav2vec2
on the same synthetic Banglish speech, on the CPU.

Per mode: trainable parameters, audio seconds trained per wall-clock second (steps after
the first few, from the engine's own step timings), peak resident memory of the process
and how much of it training added on top of the loaded model, and the size of one
checkpoint. Each mode runs in its own process so peak memory is its own.

Run with `make bench` (or `python tests/bench/run.py hf`).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MODES = ("adapters", "lora", "none")
STEPS = 30
WARMUP_STEPS = 5  # first steps pay for allocation and caches; not timed
REPEATS = 2


class _Reporter:
    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def set_max_steps(self, max_steps: int) -> None:
        pass

    def train_step(self, **values: Any) -> None:
        # The runtime's throughput definition: wall-clock between step reports.
        self.steps.append({**values, "at": time.perf_counter()})

    def validation(self, **values: Any) -> Any:
        from speechtune.data import normalize
        from speechtune.runtime import scoring

        return scoring.validation(values["hypotheses"], normalize.get("banglish"), val_loss=values["val_loss"])

    def log(self, message: str) -> None:
        pass


def _rss_bytes() -> int:
    """Resident set size now (Linux /proc; ru_maxrss only gives the peak)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def measure(mode: str, data: Path, work: Path) -> dict[str, Any]:
    """One mode's training run (in this process); returns its numbers."""
    import torch

    from speechtune import spec as specs
    from speechtune.engines import base
    from speechtune.engines.hf_ctc import HFCTCEngine
    from speechtune.engines.kit import checkpoints as kit_checkpoints

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the fixture builders
    from pretrained import mms

    if not (work / "base" / "config.json").exists():  # throughput needs the shape, not trained weights
        mms.random_layout(work / "base")
    spec = {
        "engine": "hf-ctc", "model": {"path": str(work / "base")},
        "data": {"volume": {"claimName": "d"}, "train": "train.json", "validation": "valid.json",
                 "targetLang": "bn", "normalization": "banglish"},
        "training": {"maxSteps": STEPS, "learningRate": 5e-3, "warmupSteps": 5, "batchSize": 8, "seed": 1,
                     "valCheckInterval": STEPS, "limitValBatches": 1, "gradientClipVal": 1.0,
                     "peft": {"method": mode, "r": 8, "alpha": 16},
                     "overrides": {}},
        "output": {"volume": {"claimName": "r"}, "saveTopK": 1},
    }
    reporter = _Reporter()
    run_dir = work / mode
    ctx = base.RunContext(
        name="bench", namespace="default", spec=specs.parse(spec),
        data=base.DataPaths(root=data, train=data / "train.json", validation=data / "valid.json", test=None),
        model_dir=None, run_dir=run_dir, checkpoint_dir=run_dir / "checkpoints", max_steps=STEPS, resume=False,
        device="cpu", world_size=1, rank=0, stop=threading.Event(), reporter=reporter,
    )
    engine = HFCTCEngine()
    engine.prepare(ctx)
    loaded = _rss_bytes()
    result = engine.train(ctx)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    timed = reporter.steps[WARMUP_STEPS:]
    newest = kit_checkpoints.Store(ctx.checkpoint_dir, keep_top_k=1, writer=False).newest()
    return {
        "mode": mode,
        "trainable": result.extra["trainable_parameters"],
        "total": result.extra["total_parameters"],
        "audio_s_per_s": sum(s["audio_seconds"] for s in timed) / (timed[-1]["at"] - reporter.steps[WARMUP_STEPS - 1]["at"]),
        "peak_rss_mib": peak / 2**20,
        "training_mib": max(0, peak - loaded) / 2**20,
        "checkpoint_kib": (newest.path / kit_checkpoints.WEIGHTS).stat().st_size / 1024 if newest else 0.0,
        "final_loss": result.train_loss,
    }


def main() -> None:
    from speechtune.data import synth

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-hf-") as folder:
        root = Path(folder)
        synth.synthesize(root / "data", n=40, languages=["bn"], domain="banglish", seed=5)
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        # A fresh process per run (ru_maxrss is a per-process peak); modes interleaved and
        # repeated, the fastest run of each kept, so a busy machine skews them alike.
        for _ in range(REPEATS):
            for mode in MODES:
                out = subprocess.run(
                    [sys.executable, __file__, mode, str(root / "data"), str(root / "work")],
                    check=True, capture_output=True, text=True,
                ).stdout
                runs[mode].append(json.loads(out.strip().splitlines()[-1]))
        rows = [max(runs[mode], key=lambda r: r["audio_s_per_s"]) for mode in MODES]
    header = f"{'mode':<10}{'trainable':>12}{'of total':>10}{'audio s/s':>11}{'peak RSS':>11}{'training +':>12}{'ckpt':>11}{'loss':>8}"
    print(f"tiny wav2vec2, {STEPS} steps of batch 8 on synthetic Banglish, CPU, 1 thread")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['mode']:<10}{r['trainable']:>12,}{r['trainable'] / r['total']:>10.1%}{r['audio_s_per_s']:>11.1f}"
            f"{r['peak_rss_mib']:>8.0f} MiB{r['training_mib']:>8.0f} MiB{r['checkpoint_kib']:>7.0f} KiB{r['final_loss']:>8.3f}"
        )
    print_mms_estimates()


def print_mms_estimates() -> None:
    """The same three modes at the guide's scale, from the engine's memory estimate."""
    from speechtune.engines.hf_ctc import memory as hf_memory

    arch = hf_memory.KNOWN_MODELS["facebook/mms-1b-all"]
    print("\nfacebook/mms-1b-all, fp16, batch 2 x 10 s (hf_memory estimate, GPU)")
    for mode in MODES:
        e = hf_memory.estimate(arch, mode=mode, precision="fp16", utterances=2, seconds=10)
        print(f"{mode:<10}{e.trainable_parameters:>14,} trainable  {hf_memory.readable(e.total):>9}  ({e.breakdown()})")


if __name__ == "__main__" and len(sys.argv) == 4:
    print(json.dumps(measure(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))))
elif __name__ == "__main__":
    main()
