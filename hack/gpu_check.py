"""`make gpu-check`: what runs first whenever a GPU machine is lent (the dev machines have
none, and `make test` never needs one). Every engine's shipped tiny example trains ~50
steps on one GPU in bf16 through `speechtune run`, then, with two or more GPUs, the
speechbrain-ctc and hf-ctc examples run as 2-process DDP under torchrun (NCCL). Prints one
row per run: status, steps, audio-seconds/s (the runtime's definition), peak GPU memory,
wall seconds. Sized to finish in under 8 minutes on one H100-class GPU.

    python hack/gpu_check.py [--steps 50] [--only speechbrain-ctc,hf-ctc,nemo-canary]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = {  # engine -> (example, synth domain, languages, translate_to)
    "speechbrain-ctc": ("demo.yaml", "atc", ["en"], None),
    "hf-ctc": ("tiny-mms.yaml", "banglish", ["bn"], None),
    "nemo-canary": ("tiny-canary.yaml", "generic", ["en", "de"], "de"),
}
DDP_ENGINES = ("speechbrain-ctc", "hf-ctc")


def job_file(engine: str, folder: Path, steps: int) -> Path:
    document = yaml.safe_load((REPO / "examples" / EXAMPLES[engine][0]).read_text())
    spec = document["spec"]
    spec["training"].update(maxSteps=steps, valCheckInterval=max(1, steps // 2), precision="bf16", limitValBatches=2)
    spec.setdefault("resources", {})["gpusPerNode"] = 1
    spec["output"]["resume"] = False
    path = folder / f"{engine}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def claims(engine: str, data: Path, runs: Path) -> list[str]:
    document = yaml.safe_load((REPO / "examples" / EXAMPLES[engine][0]).read_text())
    spec = document["spec"]
    names = {spec["data"]["volume"]["claimName"]: data, spec["output"]["volume"]["claimName"]: runs}
    model_volume = (spec.get("model") or {}).get("volume")
    if model_volume:
        names.setdefault(model_volume["claimName"], runs)
    return [arg for name, folder in names.items() for arg in ("--volume", f"{name}={folder}")]


def run(engine: str, job: Path, data: Path, runs: Path, *, processes: int) -> dict[str, Any]:
    cli = ["-m", "speechtune.cli", "run", str(job), *claims(engine, data, runs)]
    command = [sys.executable, *cli] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *cli]
    run_id = f"{engine}-{processes}p"
    env = {**os.environ, "SPEECHTUNE_METRICS_PORT": "0", "SPEECHTUNE_RUN_ID": run_id}
    began = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - began
    name = yaml.safe_load(job.read_text())["metadata"]["name"]
    metrics_file = runs / name / run_id / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
    return {
        "run": f"{engine} x{processes}", "exit": done.returncode, "status": metrics.get("status"),
        "steps": metrics.get("steps"),
        "audio_s_per_s": (metrics.get("timings") or {}).get("audio_seconds_per_second"),
        "peak_gpu_mib": (metrics.get("peak_memory_mb") or {}).get("gpu"),
        "wall_s": round(wall, 1),
    }


def place_tiny_mms_base(folder: Path, data_root: Path | None) -> None:
    """tiny-mms.yaml's base: the pretrained one from --data-root when `make tiny-mms-base
    RUNS=<data-root>/runs` put it there, else the same layout with random weights (this
    check is about bf16 and DDP on the GPU, not learning; the builder needs espeak-ng)."""
    sys.path.insert(0, str(REPO / "tests"))
    from pretrained import mms

    prepared = data_root / "runs" / "models" / "tiny-mms-base" if data_root else None
    if prepared is not None and (prepared / "config.json").exists():
        shutil.copytree(prepared, folder)
    else:
        mms.random_layout(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--only", default=",".join(EXAMPLES))
    parser.add_argument("--data-root", type=Path, default=None,
                        help="reuse data-<engine>/ folders synthesised elsewhere (a GPU machine without espeak-ng)")
    args = parser.parse_args()
    import torch

    from speechtune.data import synth

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; run it on a GPU machine", file=sys.stderr)
        return 2
    gpus = torch.cuda.device_count()
    print(f"gpu-check: {gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(tmp)
        for engine in [e for e in args.only.split(",") if e]:
            _, domain, languages, translate_to = EXAMPLES[engine]
            data = (args.data_root or root) / f"data-{engine}"
            if not (data / "train.json").exists():
                synth.synthesize(data, n=60, languages=languages, domain=domain, seed=3, translate_to=translate_to)
            runs = root / f"runs-{engine}"
            if engine == "hf-ctc":
                place_tiny_mms_base(runs / "models" / "tiny-mms-base", args.data_root)
            job = job_file(engine, root, args.steps)
            rows.append(run(engine, job, data, runs, processes=1))
            print(rows[-1], flush=True)
            if engine in DDP_ENGINES and gpus >= 2:  # NCCL needs one GPU per rank
                rows.append(run(engine, job, data, runs, processes=2))
                print(rows[-1], flush=True)
    columns = list(rows[0]) if rows else []
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return 0 if all(row["exit"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
