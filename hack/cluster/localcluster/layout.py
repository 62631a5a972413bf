"""Where one local cluster keeps its files, and its state file (pids, argv, ports)."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

from localcluster.pki import ClientIdentity

REPO = Path(__file__).resolve().parents[3]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one cluster keeps its files."""

    root: Path  # <repo>/.cluster

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def users(self) -> Path:
        return self.root / "users"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def webhook_cert_dir(self) -> Path:
        return self.tmp / "k8s-webhook-server" / "serving-certs"

    def component_kubeconfig(self, identity: ClientIdentity) -> Path:
        return self.pki / f"{identity.name}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def default_layout() -> Layout:
    """`<repo>/.cluster`, or $SPEECHTUNE_CLUSTER_DIR (a second, independent cluster)."""
    override = os.environ.get("SPEECHTUNE_CLUSTER_DIR")
    return Layout(root=Path(override).resolve() if override else REPO / ".cluster")


def read_state(layout: Layout) -> dict[str, Any]:
    try:
        return dict(json.loads(layout.state.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_state(layout: Layout, state: dict[str, Any]) -> None:
    tmp = layout.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, layout.state)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Serialise up/down/restart across processes (several pytest sessions may share it)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with (layout.root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
