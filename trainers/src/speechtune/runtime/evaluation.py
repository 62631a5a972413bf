"""`speechtune eval --checkpoint DIR MANIFEST`: decode a manifest with a trained model and
score it, through the same Engine contract (prepare with spec.model.path = the model,
no training steps), so it works for every engine that can start from its own export."""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
import threading
from pathlib import Path
from typing import Any

from speechtune import engines, spec as specs
from speechtune.data import normalize
from speechtune.engines import base
from speechtune.runtime import console as consoles
from speechtune.runtime import reporter as reporters
from speechtune.runtime import scoring


@dataclasses.dataclass(frozen=True)
class EvalResult:
    scores: dict[str, scoring.Score]
    decode_jsonl: Path


def find_run(checkpoint: Path) -> tuple[Path, Path]:
    """(run folder holding job.yaml, model folder): DIR may be the run folder, its
    `model/` export, or a folder below the run (a checkpoint)."""
    checkpoint = checkpoint.absolute()
    for folder in (checkpoint, *checkpoint.parents):
        if (folder / "job.yaml").exists():
            model = checkpoint if checkpoint != folder else exported_model(folder)
            if not model.exists():
                raise ValueError(f"--checkpoint {checkpoint}: the run has no exported model/ folder "
                                 "(it did not finish); pass a checkpoint folder instead")
            return folder, model
    raise ValueError(f"--checkpoint {checkpoint}: no job.yaml here or above (want a run folder)")


def exported_model(run_folder: Path) -> Path:
    """What engine.export returned (metrics.json's model_export): a folder or a file
    such as a .nemo; `model/` when the run recorded none."""
    metrics = run_folder / "metrics.json"
    if metrics.exists():
        export = json.loads(metrics.read_text()).get("model_export")
        if export:
            return Path(export)
    return run_folder / "model"


def eval_spec(job: specs.Job, model: Path) -> dict[str, Any]:
    spec = copy.deepcopy(dict(job.spec))
    spec["model"] = {"path": str(model)}
    return spec


# How a model that no run produced is recognised (a run folder carries its job.yaml).
def _engine_by_layout(path: Path) -> str | None:
    if path.is_file() and path.suffix == ".nemo":
        return "nemo-canary"
    if (path / "config.json").is_file():
        return "hf-ctc"
    if (path / "model.ckpt").is_file() or (path / "hyperparams.json").is_file():
        return "speechbrain-ctc"
    return None


def model_spec(model: str, *, engine: str | None, normalization: str) -> dict[str, Any]:
    """A spec to evaluate a model no run of ours produced: a .nemo file, a Hugging Face
    folder, a SpeechBrain checkpoint folder of this project, or a hub name (with
    `engine`; the model comes from the engine's cache, HF_HOME / NEMO_CACHE_DIR)."""
    path = Path(model).absolute()
    if path.exists():
        found = _engine_by_layout(path)
        if engine is None and found is None:
            raise ValueError(f"--checkpoint {model}: neither a run folder (job.yaml) nor a model this project "
                             "recognises (.nemo, HF folder with config.json, SpeechBrain model.ckpt); pass --engine")
        source: dict[str, Any] = {"path": str(path)}
    else:
        if engine is None or "/" not in model:
            raise ValueError(f"--checkpoint {model}: no such file or folder (a hub name such as "
                             "nvidia/canary-1b-v2 needs --engine)")
        found, source = None, {"pretrained": model}
    # The data and output fields the CRD requires; evaluation reads only the manifest it is given.
    return {"engine": engine or found, "model": source, "training": {"maxSteps": 1},
            "data": {"volume": {"claimName": "eval"}, "train": "-", "validation": "-", "normalization": normalization},
            "output": {"volume": {"claimName": "eval"}}}


def evaluate(checkpoint: Path | str, manifest: Path, *, output: Path | None = None,
             device: str = "cpu", console: consoles.Console | None = None, engine: str | None = None,
             normalization: str = "none") -> EvalResult:
    """Scores the model of a run folder, or any model `model_spec` recognises, on `manifest`."""
    location = Path(checkpoint)
    if location.exists() and any((f / "job.yaml").exists() for f in (location.absolute(), *location.absolute().parents)):
        run_folder, model = find_run(location)
        job = specs.load(run_folder / "job.yaml")
        spec = eval_spec(job, model)
        name, namespace = job.name, job.namespace
    else:
        spec = model_spec(str(checkpoint), engine=engine, normalization=normalization)
        model = Path(spec["model"]["path"]) if "path" in spec["model"] else Path.cwd() / location.name
        name, namespace = "eval", "default"
    typed_spec = specs.parse(spec)
    manifest = manifest.absolute()
    if not manifest.exists():
        raise ValueError(f"{manifest}: no such manifest")
    reporter = reporters.RunReporter(metrics=None, log_file=None, console=console or consoles.Console())
    # Every data path points at the manifest to decode, so nothing else is read; max_steps=0
    # tells the engine that no training follows. Engine scratch files go to a temporary run dir.
    data = base.DataPaths(root=manifest.parent, train=manifest, validation=manifest, test=manifest)
    with tempfile.TemporaryDirectory(prefix="speechtune-eval-") as scratch_dir:
        scratch = Path(scratch_dir)
        ctx = base.RunContext(
            name=name, namespace=namespace, spec=typed_spec, data=data, model_dir=None, run_dir=scratch,
            checkpoint_dir=scratch / "checkpoints", max_steps=0, resume=False, device=device, world_size=1,
            rank=0, stop=threading.Event(), reporter=reporter)
        runner = engines.load(typed_spec.engine)
        runner.prepare(ctx)
        hypotheses = runner.evaluate(ctx, manifest)
    reporter.close()
    normalizer = normalize.get(typed_spec.data.normalization)
    destination = output or default_output(model)
    scoring.write_decode_jsonl(destination, hypotheses, normalizer)
    return EvalResult(scores=scoring.score_hypotheses(hypotheses, normalizer), decode_jsonl=destination)


def default_output(model: Path) -> Path:
    """Next to the model: inside an exported folder, or `<model>.decode.jsonl` beside an
    exported file (a .nemo), which keeps the run's own decode.jsonl of its test split."""
    return model / "decode.jsonl" if model.is_dir() else model.with_name(f"{model.stem}.decode.jsonl")


def format_scores(scores: dict[str, scoring.Score]) -> str:
    lines = [f"{'language':<10} {'utts':>6} {'words':>7} {'WER':>7} {'CER':>7} {'BLEU':>7}"]
    for name, s in scores.items():
        bleu = f"{100 * s.bleu:>7.2f}" if s.bleu is not None else f"{'-':>7}"
        lines.append(f"{name:<10} {s.utterances:>6} {s.words:>7} {s.wer:>7.4f} {s.cer:>7.4f} {bleu}")
    return "\n".join(lines)

