"""`speechtune-operator`: run the operator (out of cluster with $KUBECONFIG, or in a pod)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import kopf

from speechtune_operator import persistence, runtime
from speechtune_operator import settings as settings_mod
from speechtune_operator import telemetry as telemetry_mod
from speechtune_operator.builders import backends
from speechtune_operator.client import api
from speechtune_operator.handlers import jobcache, registration

DEFAULT_LIVENESS = "http://0.0.0.0:8081/healthz"
MALLOC_ARENAS = 2  # handler threads share two heaps instead of up to 16 on 2 cores


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="speechtune-operator",
        description="Reconcile FinetuneJobs (speechtune.dev/v1alpha1) into Kubeflow PyTorchJobs "
                    "or TrainJobs (--backend).")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", dest="namespace_flags", default=[],
                       help="Watch this namespace (repeatable). Default: every namespace.")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="Watch every namespace.")
    parser.add_argument("--standalone", action="store_true",
                        help="Accepted for kopf compatibility; the operator never peers.")
    parser.add_argument("--liveness", default=os.environ.get("SPEECHTUNE_LIVENESS", DEFAULT_LIVENESS),
                        help="kopf liveness endpoint URL; empty disables it. [env SPEECHTUNE_LIVENESS]")
    parser.add_argument("--kubeconfig", default=None, help="Kubeconfig file (default: $KUBECONFIG).")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="Warnings and errors only.")
    settings_mod.add_arguments(parser, os.environ)
    return parser.parse_args(argv)


def kopf_settings(settings: settings_mod.Settings, children: jobcache.ChildCache) -> kopf.OperatorSettings:
    config = kopf.OperatorSettings()
    # Our own annotation keys, not kopf's defaults, on the FinetuneJobs (nothing on children);
    # what has been handled is read from the children (persistence.ChildDiffBaseStorage).
    config.persistence.progress_storage = persistence.progress_storage()
    config.persistence.diffbase_storage = persistence.diffbase_storage(children)
    config.persistence.finalizer = "speechtune.dev/finalizer"
    # kopf's own "Handler succeeded" events only at WARNING; ours are posted explicitly.
    config.posting.level = logging.WARNING
    config.execution.max_workers = settings.workers
    # A restarted apiserver may leave watch connections silently dead; reconnect sooner.
    config.watching.server_timeout = 120
    config.watching.client_timeout = 150
    config.watching.connect_timeout = 10
    config.networking.request_timeout = 30
    config.networking.connect_timeout = 10
    if settings.admission_port:
        # The chart (or a test) installs the ValidatingWebhookConfiguration; kopf only serves.
        cert_dir = Path(settings.admission_cert_dir)
        config.admission.server = kopf.WebhookServer(
            addr=settings.admission_addr, port=settings.admission_port,
            certfile=cert_dir / "tls.crt", pkeyfile=cert_dir / "tls.key")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    runtime.limit_malloc_arenas(MALLOC_ARENAS)  # before the metrics server's thread starts
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_mod.from_namespace(vars(args))
    except ValueError as error:
        print(f"speechtune-operator: {error}", file=sys.stderr)
        return 2
    namespaces = tuple(args.namespace_flags) or settings.namespaces
    clients = api.connect(pool_size=settings.workers, kubeconfig=args.kubeconfig)
    cache = jobcache.JobCache()
    telemetry = telemetry_mod.Telemetry()
    telemetry.count_phases(cache.phase_counts)
    if settings.metrics_port:
        telemetry.serve(settings.metrics_port)
    registry = kopf.OperatorRegistry()
    registration.register_login(registry, args.kubeconfig)
    backend = backends.for_settings(settings)
    children = jobcache.ChildCache(backend.user_suspended)
    registration.register(registry, registration.Context(
        settings=settings, clients=clients, cache=cache, telemetry=telemetry,
        backend=backend, children=children))
    runtime.freeze_startup_heap()
    kopf.run(registry=registry, settings=kopf_settings(settings, children), standalone=True,
             clusterwide=not namespaces, namespaces=namespaces,
             liveness_endpoint=args.liveness or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
