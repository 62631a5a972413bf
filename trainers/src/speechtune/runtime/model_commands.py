"""`speechtune model fetch`: argument parsing and the one-line outcome; the fetching is
runtime/hub.py. The model initializer Job's entrypoint."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from speechtune import spec as specs


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    model = subparsers.add_parser("model", help="hub models on the model volume")
    commands = model.add_subparsers(dest="model_command", required=True)
    fetch = commands.add_parser(
        "fetch", help="download the job's spec.model.pretrained once into the model volume (model initializer)")
    fetch.add_argument("--job", type=Path, required=True, help="the mounted FinetuneJob (/etc/speechtune/job.yaml)")
    fetch.add_argument("--model-dir", type=Path, default=Path("/models"), help="the model volume (default /models)")
    fetch.add_argument("--termination-log", type=Path, default=None, metavar="PATH",
                       help="also write the failure line here (a pod's /dev/termination-log)")
    fetch.set_defaults(func=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> int:
    from speechtune.runtime import hub

    started = time.monotonic()
    try:
        job = specs.load(args.job)
        request = hub.request_for(job.typed)
    except hub.FetchError as error:
        return _fail(str(error), hub.EXIT_PERMANENT, args.termination_log)
    except ValueError as error:  # SpecError or an engine setting: names the field
        return _fail(str(error), hub.EXIT_PERMANENT, args.termination_log)
    if request is None:
        print("speechtune: model fetch: spec.model names no hub model; nothing to fetch")
        return 0
    from huggingface_hub.utils.tqdm import disable_progress_bars

    try:
        # A pod's log is no terminal; the last line says what happened.
        with disable_progress_bars():
            fetched = hub.fetch(request, cache_dir=hub.cache_dir_for(request.engine, args.model_dir),
                                model_dir=args.model_dir, endpoint=os.environ.get("HF_ENDPOINT") or None,
                                token=os.environ.get("HF_TOKEN") or None)
    except hub.FetchError as error:
        code = hub.EXIT_PERMANENT if error.permanent else hub.EXIT_TRANSIENT
        return _fail(str(error), code, args.termination_log)
    verb = "already complete in" if fetched.reused else "downloaded to"
    print(f"speechtune: model fetch: {request.repo_id}@{fetched.commit[:12]} ({len(fetched.files)} files) "
          f"{verb} {fetched.snapshot} in {time.monotonic() - started:.1f} s")
    return 0


def _fail(message: str, code: int, termination_log: Path | None) -> int:
    line = f"speechtune: model fetch: {message}"
    if termination_log is not None:
        try:
            termination_log.write_text(message + "\n")
        except OSError:
            pass  # the exit code and stderr still tell
    try:
        print(line, file=sys.stderr)
    except (OSError, ValueError, AttributeError):
        pass
    return code
