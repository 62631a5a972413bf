"""`speechtune run|train|validate|eval|status|watch|sweep|demo`: argument parsing only;
each command calls one function of the runtime."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from speechtune import spec as specs
from speechtune.runtime import metrics

def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser("run", help="run a FinetuneJob locally (claims -> folders)")
    run.add_argument("job", type=Path, help="FinetuneJob YAML")
    run.add_argument("--volume", action="append", default=[], metavar="CLAIM=DIR",
                     help="local folder for a PersistentVolumeClaim of the job (repeat per claim)")
    _training_flags(run)
    run.set_defaults(func=cmd_run)

    train = subparsers.add_parser("train", help="pod entrypoint: volumes at /data, /output, /models")
    train.add_argument("--job", type=Path, required=True, help="the mounted FinetuneJob (/etc/speechtune/job.yaml)")
    _training_flags(train)
    train.set_defaults(func=cmd_train)

    validate = subparsers.add_parser("validate", help="check FinetuneJob files against the CRD and the engine")
    validate.add_argument("jobs", type=Path, nargs="+")
    validate.set_defaults(func=cmd_validate)

    evaluate = subparsers.add_parser("eval", help="decode a manifest with a trained model; WER/CER per language")
    evaluate.add_argument("--checkpoint", required=True,
                          help="run folder or its export; or a pretrained model: .nemo, Hugging Face folder, "
                               "SpeechBrain checkpoint folder, or a hub name with --engine")
    evaluate.add_argument("--engine", help="engine for a model without a run folder (default: from its layout)")
    evaluate.add_argument("--normalization", default="none",
                          help="text normalisation before scoring a model without a run folder (none, lower, ...)")
    evaluate.add_argument("manifest", type=Path)
    evaluate.add_argument("--output", type=Path, help="decode.jsonl path (default: next to the model)")
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(func=cmd_eval)

    for name, func, text in (("status", cmd_status, "show a FinetuneJob's status"),
                             ("watch", cmd_watch, "follow a FinetuneJob until it finishes")):
        command = subparsers.add_parser(name, help=text)
        command.add_argument("name")
        command.add_argument("-n", "--namespace", default="default")
        command.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
        command.add_argument("--interval", type=float, default=5.0, help=argparse.SUPPRESS)
        command.set_defaults(func=func)

    sweep = subparsers.add_parser("sweep", help="run a job over a grid of training settings")
    sweep.add_argument("job", type=Path)
    sweep.add_argument("--volume", action="append", default=[], metavar="CLAIM=DIR")
    sweep.add_argument("--set", action="append", default=[], dest="grid", metavar="KEY=V1,V2",
                       help="spec.training key (dots for nesting, e.g. peft.r or overrides.d_model) and values")
    sweep.add_argument("--csv", default="sweep_runs/sweep_master.csv",
                       help="sweep CSV on the output volume when the job sets no output.sweepCsv")
    sweep.add_argument("--stage", default="coarse", help="run_stage column")
    _training_flags(sweep)
    sweep.set_defaults(func=cmd_sweep)

    demo = subparsers.add_parser("demo", help="synthesise ATC speech, fine-tune examples/demo.yaml, compare WER")
    demo.add_argument("--workdir", type=Path, default=Path(".demo"))
    demo.add_argument("--utterances", type=int, default=400)
    demo.add_argument("--job", type=Path, default=None, help="default: examples/demo.yaml (packaged copy)")
    demo.add_argument("--max-steps", type=int, default=None)
    demo.set_defaults(func=cmd_demo)


def _training_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-steps", type=int, default=None, help="override spec.training.maxSteps")
    parser.add_argument("--run-id", default=None, help="run folder name (default: $SPEECHTUNE_RUN_ID or a timestamp)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="Prometheus port (default: $SPEECHTUNE_METRICS_PORT or 9400; 0 picks a free one)")
    parser.add_argument("--metrics-host", default=None, metavar="ADDRESS",
                        help="address /metrics listens on (default: 127.0.0.1 for `run`, 0.0.0.0 for `train` "
                             "in a pod)")
    parser.add_argument("--metrics-linger", type=float, default=None, metavar="SECONDS",
                        help="keep /metrics up this long after the run so the last scrape sees the final "
                             "values (default: 30 for `train` in a pod, 0 for `run`)")


def _fail(message: str, code: int = 2) -> int:
    try:
        print(f"speechtune: {message}", file=sys.stderr)
    except (OSError, ValueError, AttributeError):  # stderr closed or gone: the exit code tells
        pass
    return code


def _os_failure(error: OSError) -> int:
    """A file system or socket failure in one line: the path, the reason and the errno."""
    where = f"{error.filename}: " if error.filename else ""
    return _fail(f"{where}{specs.os_error(error)}", 1)


def cmd_run(args: argparse.Namespace) -> int:
    from speechtune.runtime import launcher, rundir, session, volumes

    try:
        job = specs.load(args.job)
        if args.run_id is not None:
            specs.check_run_id(args.run_id)
        mounts = volumes.local_mounts(job.typed, volumes.parse_volume_flags(args.volume))
        gpus = job.typed.resources.gpus_per_node
        if launcher.needs_torchrun(gpus):
            launcher.check_gpus(gpus)
            # Decided (and created) once here, so every rank writes the same run folder.
            folder = session.run_folder(job, mounts, session.Options(run_id=args.run_id))
            os.environ[rundir.RUN_ID_ENV] = folder.path.name
            launcher.exec_torchrun(sys.argv[1:], gpus_per_node=gpus)
    except ValueError as error:
        return _fail(str(error))
    except OSError as error:
        return _os_failure(error)
    return _run_session(job, mounts, args, linger_s=0.0, host=metrics.LOCAL_HOST)


def cmd_train(args: argparse.Namespace) -> int:
    from speechtune.runtime import launcher, volumes

    try:
        job = specs.load(args.job)
        specs.check_pod_paths(job.typed, source=job.source)
        if args.run_id is not None:
            specs.check_run_id(args.run_id)
    except ValueError as error:
        return _fail(str(error))
    gpus = job.typed.resources.gpus_per_node
    if launcher.needs_torchrun(gpus):
        try:
            launcher.check_gpus(gpus)
        except ValueError as error:
            return _fail(str(error), 1)
        launcher.exec_torchrun(sys.argv[1:], gpus_per_node=gpus)
    # A pod's scrape interval is typically 15-30 s: linger so the final validation is seen.
    return _run_session(job, volumes.pod_mounts(job.typed), args, linger_s=30.0, host=metrics.POD_HOST)


def _run_session(job: specs.Job, mounts: object, args: argparse.Namespace, *, linger_s: float,
                 host: str) -> int:
    from speechtune.runtime import session

    if args.metrics_linger is not None:
        linger_s = args.metrics_linger
    options = session.Options(max_steps=args.max_steps, run_id=args.run_id, metrics_port=args.metrics_port,
                              metrics_linger_s=linger_s, metrics_host=args.metrics_host or host)
    try:
        outcome = session.run(job, mounts, options)  # type: ignore[arg-type]
    except ValueError as error:  # bad spec for the engine, bad data (preflight), bad volumes
        return _fail(str(error))
    except OSError as error:  # a full or read-only output volume, a port in use, ...
        return _os_failure(error)
    except KeyboardInterrupt:
        return _fail("interrupted (Ctrl-C twice); metrics.json says stopped", 130)
    if outcome.reason:
        _fail(f"{outcome.status}: {outcome.reason}")
    try:
        print(outcome.run_folder)
    except (OSError, ValueError, AttributeError):  # stdout closed: the run itself is done and saved
        pass
    return outcome.exit_code


def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.jobs:
        try:
            checked = specs.check_file(path)
            job, notes = checked.job, checked.notes
        except ValueError as error:
            print(f"{error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: ok ({job.typed.engine}, {job.name})")
        for note in notes:
            print(f"  {note}")
    return 1 if failed else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from speechtune.runtime import evaluation

    try:
        result = evaluation.evaluate(args.checkpoint, args.manifest, output=args.output, device=args.device,
                                     engine=args.engine, normalization=args.normalization)
    except ValueError as error:
        return _fail(str(error))
    print(evaluation.format_scores(result.scores))
    print(f"hypotheses: {result.decode_jsonl}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from speechtune.runtime import cluster

    try:
        job = cluster.get_job(args.name, namespace=args.namespace, kubeconfig=args.kubeconfig)
    except cluster.ClusterError as error:
        return _fail(str(error))
    print(cluster.format_status(job))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from speechtune.runtime import cluster

    try:
        job = cluster.watch(
            lambda: cluster.get_job(args.name, namespace=args.namespace, kubeconfig=args.kubeconfig),
            show=print, interval=args.interval)
    except cluster.ClusterError as error:
        return _fail(str(error))
    return 0 if (job.get("status") or {}).get("phase") == "Succeeded" else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    from speechtune.runtime import sweeps, volumes

    try:
        job = specs.load(args.job)
        mounts = volumes.local_mounts(job.typed, volumes.parse_volume_flags(args.volume))
        grid = sweeps.parse_grid(args.grid)
    except ValueError as error:
        return _fail(str(error))
    try:
        return sweeps.run_grid(job, mounts, grid, csv=args.csv, stage=args.stage, max_steps=args.max_steps,
                               metrics_port=args.metrics_port)
    except ValueError as error:  # a grid point the CRD or the engine refuses, bad data
        return _fail(str(error))


def cmd_demo(args: argparse.Namespace) -> int:
    from speechtune.runtime import demo

    return demo.main(workdir=args.workdir, utterances=args.utterances, job_file=args.job,
                     max_steps=args.max_steps)
