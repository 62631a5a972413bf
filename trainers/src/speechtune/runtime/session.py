"""One training run, engine-independent, in numbered steps: the code path of both
`speechtune train` (pod) and `speechtune run` (local).

1. validate the spec (done by the caller through speechtune.spec) and the engine's checks
2. preflight the manifests, before any training step
3. create the run folder, start the metrics server, install the SIGTERM handler
4. engine.prepare -> engine.train (resumes from the newest checkpoint when asked)
5. engine.export, then decode the test (or validation) manifest and score it
6. metrics.json, model_card.json, decode.jsonl, optional sweep CSV row"""

from __future__ import annotations

import dataclasses
import errno
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from speechtune import engines, spec as specs
from speechtune.data import check, normalize
from speechtune.engines import base
from speechtune.runtime import console as consoles
from speechtune.runtime import metrics as run_metrics
from speechtune.runtime import reporter as reporters
from speechtune.runtime import network, rundir, scoring, signals, sweep, volumes

EXIT_OK = 0
EXIT_FAILED = 1  # permanent: a PyTorchJob with restartPolicy ExitCode does not retry 1..127
EXIT_STOPPED = 143  # 128 + SIGTERM: retryable; the next pod resumes from the checkpoint


@dataclasses.dataclass(frozen=True)
class Options:
    max_steps: int | None = None  # --max-steps: overrides spec.training.maxSteps
    run_id: str | None = None
    metrics_port: int | None = None  # None: SPEECHTUNE_METRICS_PORT or 9400; 0: a free port
    console: consoles.Console | None = None
    run_stage: str = "single"  # sweep CSV column
    extra_sweep_columns: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    on_metrics_url: Callable[[str], None] | None = None
    score_before_training: bool = False  # the demo's "untrained model" row (test split)
    metrics_linger_s: float = 0.0  # keep /metrics up after the run for a last scrape
    # Pods serve /metrics to Prometheus; a laptop's run only to itself unless asked.
    metrics_host: str = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # succeeded | stopped | failed
    run_folder: Path
    exit_code: int
    reason: str | None = None
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Which process this is (torchrun's environment) and on which device it runs."""

    rank: int
    local_rank: int
    world_size: int
    device: str


def placement(job_spec: specs.FinetuneSpec, environ: Mapping[str, str] = os.environ) -> Placement:
    rank = int(environ.get("RANK", "0"))
    local_rank = int(environ.get("LOCAL_RANK", "0"))
    world_size = int(environ.get("WORLD_SIZE", "1"))
    device = "cpu"
    if job_spec.resources.gpus_per_node > 0:
        import torch  # every engine trains with torch; only asked when GPUs are requested

        if torch.cuda.is_available():
            device = f"cuda:{local_rank}"
    return Placement(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def engine_notes(job_spec: specs.FinetuneSpec) -> list[str]:
    """The engine's spec checks (its registry row); raise ValueError naming the field."""
    return specs.engine_checks(job_spec)


def preflight(job_spec: specs.FinetuneSpec, data: base.DataPaths) -> check.Report:
    mix = [data.root / item.manifest for item in job_spec.data.mix or ()]
    paths = [p for p in (data.train, data.validation, data.test, *mix) if p is not None]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise ValueError(f"spec.data: manifest {missing[0]} does not exist (relative to the data volume {data.root})")
    report = check.preflight(paths, needs=engines.row(job_spec.engine).data_needs, root=data.root,
                             absolute_audio_paths=bool(job_spec.data.absolute_audio_paths))
    report.raise_if_fatal()
    return report


def choose_run_id(job: specs.Job, mounts: volumes.Mounts, options: Options,
                  environ: Mapping[str, str] = os.environ) -> str:
    """--run-id, else SPEECHTUNE_RUN_ID (pods), else with output.resume the newest
    unfinished local run of this job, else a new timestamp."""
    return _named_run_id(job, mounts, options, environ) or rundir.run_id(environ)


def _named_run_id(job: specs.Job, mounts: volumes.Mounts, options: Options,
                  environ: Mapping[str, str]) -> str | None:
    if options.run_id:
        return specs.check_run_id(options.run_id)
    if environ.get(rundir.RUN_ID_ENV):
        return specs.check_run_id(environ[rundir.RUN_ID_ENV], field=rundir.RUN_ID_ENV)
    if job.typed.output.resume:
        return rundir.unfinished_run(mounts.output, job.name)
    return None


def run_folder(job: specs.Job, mounts: volumes.Mounts, options: Options,
               environ: Mapping[str, str] = os.environ) -> rundir.RunFolder:
    """The named or resumed run's folder, else a new timestamped one created exclusively,
    so two runs started in the same second never share a folder (the second gets -2)."""
    named = _named_run_id(job, mounts, options, environ)
    if named:
        return rundir.create(mounts.output, job.name, named)
    return rundir.create_new(mounts.output, job.name, rundir.run_id(environ))


def start_metrics_server(metrics: run_metrics.TrainingMetrics, port: int | None, console: consoles.Console,
                         environ: Mapping[str, str] = os.environ, *, host: str = run_metrics.POD_HOST,
                         ) -> run_metrics.MetricsServer:
    """On the port asked for (flag, then SPEECHTUNE_METRICS_PORT); when nobody asked and
    the default 9400 is taken (a second local run), on a free port instead."""
    chosen = run_metrics.port_from_env(environ) if port is None else port
    try:
        return run_metrics.MetricsServer(metrics, port=chosen, host=host)
    except OSError as error:
        if port is not None or run_metrics.PORT_ENV in environ or error.errno != errno.EADDRINUSE:
            # Named like a file, so the CLI's one line says which address failed.
            raise OSError(error.errno, error.strerror, f"metrics {host}:{chosen}") from None
        console.line(f"metrics: port {chosen} is in use; using a free port")
        return run_metrics.MetricsServer(metrics, port=0, host=host)


def run(job: specs.Job, mounts: volumes.Mounts, options: Options = Options()) -> Outcome:
    job_spec = job.typed
    where = placement(job_spec)
    primary = where.rank == 0
    console = options.console or consoles.Console()
    if where.local_rank == 0 and (line := network.describe()):
        console.line(line)  # on every node: which transport NCCL will use (a TCP fallback shows here)
    notes = engine_notes(job.typed)  # 1.
    data = volumes.data_paths(job_spec, mounts)
    report = preflight(job_spec, data)  # 2.
    metrics = run_metrics.TrainingMetrics(job=job.name, namespace=job.namespace, engine=job_spec.engine)
    # 3. the server first: a port in use then leaves no half-made run folder behind
    server = start_metrics_server(metrics, options.metrics_port, console, host=options.metrics_host) if primary else None
    try:
        folder = run_folder(job, mounts, options)
        if primary:
            folder.job_yaml.write_text(yaml.safe_dump(job.to_object(), sort_keys=False))
        reporter = reporters.RunReporter(metrics=metrics if primary else None, log_file=folder.train_log,
                                         console=console, primary=primary,
                                         normalizer=normalize.get(job_spec.data.normalization))
    except BaseException:
        if server:
            server.stop()
        raise
    if server:
        (options.on_metrics_url or (lambda url: console.line(f"metrics: {url}")))(server.url)
    warnings = [str(problem) for problem in report.problems[:20]]  # fatal ones raised already
    for line in [*notes, *warnings, *check.format_summary(report.summary)]:
        reporter.log(line)
    reporter.log(f"run folder: {folder.path}")
    max_steps = options.max_steps if options.max_steps is not None else job_spec.training.max_steps
    stop = threading.Event()
    ctx = base.RunContext(
        name=job.name, namespace=job.namespace, spec=job_spec, data=data, model_dir=mounts.model,
        run_dir=folder.path, checkpoint_dir=folder.checkpoints, max_steps=max_steps,
        resume=job_spec.output.resume, device=where.device,
        world_size=where.world_size, rank=where.rank, stop=stop, reporter=reporter)
    try:
        with signals.stop_on_signals(stop) as received:
            return _train_and_score(ctx, folder, reporter, job, options, primary, received)
    except BaseException as error:  # a crash or a second Ctrl-C still leaves its reason in the run folder
        if primary:
            interrupted = isinstance(error, KeyboardInterrupt)
            reason = "interrupted (Ctrl-C twice): no checkpoint at this step" if interrupted else (
                f"{type(error).__name__}: {error}")
            _record_end(folder, reporter, {"job": job.name, "engine": job_spec.engine,
                                           "run_id": folder.path.name, "status": "stopped" if interrupted else "failed",
                                           "reason": reason, "steps": reporter.summary.steps})
        raise
    finally:
        reporter.close()
        if server:
            server.stop(linger_s=options.metrics_linger_s)


def _record_end(folder: rundir.RunFolder, reporter: reporters.RunReporter, facts: Mapping[str, Any]) -> None:
    """The failure's line in train_log.txt and metrics.json, as far as the volume still
    takes writes (a full or read-only volume is often why the run failed)."""
    try:
        reporter.log(f"FAILED: {facts['reason']}")
    except OSError:
        pass
    try:
        rundir.write_json(folder.metrics_json, facts)
    except OSError:
        pass


def _train_and_score(ctx: base.RunContext, folder: rundir.RunFolder, reporter: reporters.RunReporter,
                     job: specs.Job, options: Options, primary: bool,
                     received: signals.Received | None = None) -> Outcome:
    received = received or signals.Received()
    timings: dict[str, float] = {}
    engine = engines.load(ctx.spec.engine)
    started = time.monotonic()
    engine.prepare(ctx)  # 4.
    timings["prepare_seconds"] = time.monotonic() - started
    normalizer = normalize.get(ctx.spec.data.normalization)
    baseline = None
    if options.score_before_training and primary:
        reporter.log("scoring the model before training ...")
        baseline = scoring.score_hypotheses(engine.evaluate(ctx, ctx.data.test or ctx.data.validation), normalizer)
        reporter.log(f"before training: WER {baseline['all'].wer:.4f} CER {baseline['all'].cer:.4f}")
    began = time.monotonic()
    try:
        result = engine.train(ctx)
    except base.NonFiniteLoss as error:
        timings["train_seconds"] = time.monotonic() - began
        reporter.log(f"FAILED: {error}")
        facts = _metrics_json(ctx, job, reporter, None, timings, status="failed", reason=str(error))
        if primary:
            rundir.write_json(folder.metrics_json, facts)
        return Outcome("failed", folder.path, EXIT_FAILED, str(error), facts)
    timings["train_seconds"] = time.monotonic() - began
    reporter.best_checkpoint(result.best_checkpoint)
    if result.stopped_early:
        reason = f"stopped by {received.name} at step {result.steps}; checkpoint saved, resume continues from it"
        reporter.log(reason)
        facts = _metrics_json(ctx, job, reporter, result, timings, status="stopped", reason=reason)
        if primary:
            rundir.write_json(folder.metrics_json, facts)
        return Outcome("stopped", folder.path, received.exit_code, reason, facts)
    if not primary:
        return Outcome("succeeded", folder.path, EXIT_OK)
    export = engine.export(ctx)  # 5.
    began = time.monotonic()
    valid_scores = scoring.score_hypotheses(engine.evaluate(ctx, ctx.data.validation), normalizer)
    timings["inference_seconds"] = time.monotonic() - began  # the sweep's inference_time_sec
    test_scores = None
    if ctx.data.test is not None:
        began = time.monotonic()
        hypotheses = engine.evaluate(ctx, ctx.data.test)
        timings["test_seconds"] = time.monotonic() - began
        test_scores = scoring.score_hypotheses(hypotheses, normalizer)
        scoring.write_decode_jsonl(folder.decode_jsonl, hypotheses, normalizer)
    facts = _metrics_json(ctx, job, reporter, result, timings, status="succeeded", reason=None,
                          valid_scores=valid_scores, test_scores=test_scores, export=export)
    if baseline is not None:
        facts["baseline"] = scoring.as_dict(baseline)
    rundir.write_json(folder.metrics_json, facts)  # 6.
    rundir.write_json(folder.model_card, _model_card(ctx, result, export, facts))
    sweep_csv = ctx.spec.output.sweep_csv
    if sweep_csv:
        output_root = folder.path.parent.parent
        sweep.append_row(output_root / sweep_csv, sweep_row(ctx, job, facts, folder, options))
    headline = test_scores or valid_scores
    reporter.log(f"done: {'test' if test_scores else 'validation'} WER {headline['all'].wer:.4f} "
                 f"CER {headline['all'].cer:.4f}; run folder {folder.path}")
    return Outcome("succeeded", folder.path, EXIT_OK, None, facts)


def _metrics_json(ctx: base.RunContext, job: specs.Job, reporter: reporters.RunReporter,
                  result: base.TrainResult | None, timings: Mapping[str, float], *, status: str,
                  reason: str | None, valid_scores: Mapping[str, scoring.Score] | None = None,
                  test_scores: Mapping[str, scoring.Score] | None = None, export: Path | None = None,
                  ) -> dict[str, Any]:
    summary = reporter.summary
    headline = (test_scores or valid_scores or {}).get("all")
    return {
        "job": job.name, "namespace": job.namespace, "engine": ctx.spec.engine, "run_id": ctx.run_dir.name,
        "status": status, "reason": reason,
        "wer": headline.wer if headline else None, "cer": headline.cer if headline else None,
        "validation": scoring.as_dict(dict(valid_scores)) if valid_scores else None,
        "test": scoring.as_dict(dict(test_scores)) if test_scores else None,
        "steps": result.steps if result else summary.steps, "max_steps": summary.max_steps,
        "epochs": result.epochs if result else None,
        "train_loss": result.train_loss if result else summary.last_loss,
        "first_train_loss": summary.first_loss, "val_loss": result.val_loss if result else None,
        "best_checkpoint": str(result.best_checkpoint) if result and result.best_checkpoint else None,
        "model_export": str(export) if export else None,
        "timings": {**{k: round(v, 3) for k, v in timings.items()},
                    "audio_seconds": round(summary.audio_seconds, 2),
                    "audio_seconds_per_second": summary.audio_seconds_per_second},
        "padding_ratio_mean": summary.mean_padding_ratio,
        "peak_memory_mb": {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                           "gpu": (reporters.peak_gpu_memory_bytes() or 0) / 2**20 or None},
        "flags": {"device": ctx.device, "world_size": ctx.world_size, "max_steps": ctx.max_steps,
                  # the CRD's words, as job.yaml has them
                  "resume": ctx.resume, "training": dict(job.spec["training"]),
                  "normalization": ctx.spec.data.normalization},
        "validations": summary.validations, "loss_curve": summary.losses,
        "engine_facts": dict(result.extra) if result else {},
    }


def _model_card(ctx: base.RunContext, result: base.TrainResult, export: Path, facts: Mapping[str, Any]
                ) -> dict[str, Any]:
    model, data = ctx.spec.model, ctx.spec.data
    described = result.model
    return {
        "engine": ctx.spec.engine, "job": ctx.name, "run_id": ctx.run_dir.name,
        "base_model": (model and (model.pretrained or model.path)) or "from scratch",
        **(dataclasses.asdict(described) if described else dict.fromkeys(
            ("architecture", "tokenizer", "vocab_size", "parameters", "trainable_parameters"))),
        "peft": {"method": ctx.spec.training.peft.method, "r": ctx.spec.training.peft.r,
                 "alpha": ctx.spec.training.peft.alpha, "dropout": ctx.spec.training.peft.dropout,
                 "targetModules": list(ctx.spec.training.peft.target_modules or []) or None},
        "data": {"train": data.train, "validation": data.validation, "test": data.test,
                 "sourceLang": data.source_lang, "targetLang": data.target_lang,
                 "normalization": data.normalization},
        "steps": result.steps, "wer": facts.get("wer"), "cer": facts.get("cer"),
        "export": str(export), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def sweep_row(ctx: base.RunContext, job: specs.Job, facts: Mapping[str, Any], folder: rundir.RunFolder,
              options: Options) -> dict[str, Any]:
    """Fill-ins as the reference package does: wer = validation WER, inference_time_sec =
    time to score validation after training, quant_weights_dtype fp32."""
    training = ctx.spec.training
    peft = training.peft
    lora = peft.method == "lora"
    valid = (facts.get("validation") or {}).get("all") or {}
    accumulation = training.grad_accumulation
    batch = training.batch_size or training.batch_duration
    gpu = ctx.device.startswith("cuda")
    precision = training.precision
    peak = facts["peak_memory_mb"]
    row = {
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%S"), "run_id": ctx.run_dir.name,
        "run_stage": options.run_stage, "model": job.name, "output_dir": str(folder.path),
        "dataset_part": Path(ctx.spec.data.train).parent.name or "root",
        "train_fraction": 1.0, "validation_samples": valid.get("utterances"),
        "epochs": facts.get("epochs"), "wer": valid.get("wer"),
        "train_runtime": facts["timings"].get("train_seconds"), "train_loss": facts.get("train_loss"),
        "eval_loss": facts.get("val_loss"), "device": "cuda" if gpu else "cpu",
        "gpu": _gpu_name() if gpu else "", "per_device_train_batch_size": batch, "grad_accum": accumulation,
        "effective_batch_size": batch * accumulation * ctx.world_size if isinstance(batch, (int, float)) else None,
        "lora_r": peft.r if lora else None, "lora_alpha": peft.alpha if lora else None,
        "lora_dropout": peft.dropout if lora else None, "quant_weights_dtype": "fp32",
        "quant_compute_dtype": {"bf16": "bfloat16", "fp16": "float16"}.get(precision, "float32") if gpu else "float32",
        "inference_time_sec": facts["timings"].get("inference_seconds"),
        "peak_memory_mb": peak.get("gpu") or peak.get("rss"), "save_full_model": not lora,
        "language": ctx.spec.data.source_lang or "", "task": "transcribe",
        "learning_rate": training.learning_rate, "seed": training.seed,
        "eval_strategy": "steps", "eval_steps": training.val_check_interval,
    }
    row.update(options.extra_sweep_columns)
    return row


def _gpu_name() -> str:
    import torch

    return str(torch.cuda.get_device_name()) if torch.cuda.is_available() else ""
