#!/usr/bin/env python3
"""The local Kubernetes control plane: `up`, `down`, `tools`, `env`, `restart-apiserver`.

    python hack/cluster/controlplane.py up     # build missing binaries, start, wait until ready
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

from localcluster import build, cluster  # noqa: E402


def cmd_up() -> int:
    began = time.monotonic()
    layout = cluster.default_layout()
    started = cluster.ensure_up(layout, started_by="cli")
    if not started:
        print("cluster: already up", file=sys.stderr)
    for line in cluster.describe(layout):
        print(f"  {line}", file=sys.stderr)
    print(f"cluster: ready after {time.monotonic() - began:.1f}s", file=sys.stderr)
    print(f"export KUBECONFIG={shlex.quote(str(layout.kubeconfig))}")
    return 0


def cmd_down() -> int:
    cluster.down(cluster.default_layout())
    print("cluster: down", file=sys.stderr)
    return 0


def cmd_tools() -> int:
    print(build.ensure_binaries().search_path)
    return 0


def cmd_env() -> int:
    bins = build.ensure_binaries(quiet=True)
    print(f"export PATH={shlex.quote(cluster.path_with_bins(bins))}")
    print(f"export KUBECONFIG={shlex.quote(str(cluster.default_layout().kubeconfig))}")
    return 0


def cmd_restart_apiserver() -> int:
    cluster.restart_apiserver(cluster.default_layout())
    return 0


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
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command]()
    except build.ToolchainMissing as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
