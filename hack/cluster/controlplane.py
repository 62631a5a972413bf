#!/usr/bin/env python3
"""The local Kubernetes control plane: `up`, `down`, `tools`, `env`, `restart-apiserver`.

    python hack/cluster/controlplane.py up     # build missing binaries, start, wait until ready
    python hack/cluster/controlplane.py up --backend trainjob   # also JobSet + Kubeflow Trainer v2
    python hack/cluster/controlplane.py up --backend kueue      # also Kueue (PyTorchJob integration)
    python hack/cluster/controlplane.py down   # stop everything, forget the cluster's data
    python hack/cluster/controlplane.py tools  # build missing binaries, print their folders (a PATH prefix)
    eval "$(python hack/cluster/controlplane.py env)"   # PATH and KUBECONFIG for a shell

State (pids, logs, certificates, etcd data) lives in `.cluster/` at the repository root.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localcluster import build, cluster, versions  # noqa: E402


def cmd_up(backends: list[str]) -> int:
    began = time.monotonic()
    layout = cluster.default_layout()
    started = cluster.ensure_up(layout, started_by="cli", backends=backends)
    if not started:
        print("cluster: already up", file=sys.stderr)
    for line in cluster.describe(layout):
        print(f"  {line}", file=sys.stderr)
    print(f"cluster: ready after {time.monotonic() - began:.1f}s", file=sys.stderr)
    print(f"export KUBECONFIG={shlex.quote(str(layout.kubeconfig))}")
    return 0


def cmd_down(backends: list[str]) -> int:
    cluster.down(cluster.default_layout())
    print("cluster: down", file=sys.stderr)
    return 0


def cmd_tools(backends: list[str]) -> int:
    print(build.ensure_binaries(components=components(backends)).search_path)
    return 0


def cmd_env(backends: list[str]) -> int:
    bins = build.ensure_binaries(quiet=True)
    print(f"export PATH={shlex.quote(cluster.path_with_bins(bins))}")
    print(f"export KUBECONFIG={shlex.quote(str(cluster.default_layout().kubeconfig))}")
    return 0


def cmd_restart_apiserver(backends: list[str]) -> int:
    cluster.restart_apiserver(cluster.default_layout())
    return 0


def components(backends: list[str]) -> tuple[versions.Component, ...]:
    extra = versions.TRAINJOB_COMPONENTS if "trainjob" in backends else ()
    return versions.BASE_COMPONENTS + extra + (versions.KUEUE_COMPONENTS if "kueue" in backends else ())


COMMANDS = {
    "up": cmd_up,
    "down": cmd_down,
    "tools": cmd_tools,
    "env": cmd_env,
    "restart-apiserver": cmd_restart_apiserver,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--backend", action="append", choices=cluster.BACKENDS, default=[],
                        help="controllers to run besides the training-operator (repeatable): "
                             "trainjob adds JobSet and Kubeflow Trainer v2")
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args.backend or ["pytorchjob"])
    except build.ToolchainMissing as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
