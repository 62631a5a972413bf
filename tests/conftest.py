"""Shared pytest fixtures for every tier.

`cluster` (session): the real local control plane from `hack/cluster/` (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, kwok GPU nodes, the Kubeflow
training-operator), brought up once per session and reused when one is already healthy.
`SPEECHTUNE_KUBECONFIG=/path` points the tests at an existing cluster instead.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Cluster:
    """A running cluster as the tests see it."""

    kubeconfig: Path
    env: dict[str, str]  # os.environ plus KUBECONFIG and PATH (with bin_dir first)
    bin_dir: Path | None  # kubectl, helm, ... ; None on an external cluster (PATH's own)
    _restart_apiserver: Callable[[], None] | None = None

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; on failure (with check) the error shows stderr."""
        kubectl = str(self.bin_dir / "kubectl") if self.bin_dir else (shutil.which("kubectl") or "kubectl")
        result = subprocess.run(
            [kubectl, *args], input=input, env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}"
            )
        return result

    @property
    def can_restart_apiserver(self) -> bool:
        return self._restart_apiserver is not None

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port; returns once it is ready."""
        if self._restart_apiserver is None:
            pytest.skip("SPEECHTUNE_KUBECONFIG points at an external cluster: its apiserver cannot be restarted")
        self._restart_apiserver()


def _external_cluster(kubeconfig: str) -> Cluster:
    path = Path(kubeconfig).expanduser().resolve()
    if not path.is_file():
        pytest.fail(f"SPEECHTUNE_KUBECONFIG={kubeconfig}: no such file")
    env = dict(os.environ, KUBECONFIG=str(path))
    return Cluster(kubeconfig=path, env=env, bin_dir=None)


def _import_localcluster():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(REPO / "hack" / "cluster"))
    from localcluster import build, cluster  # noqa: PLC0415  (hack/ is not a package on sys.path)

    return build, cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    external = os.environ.get("SPEECHTUNE_KUBECONFIG")
    if external:
        yield _external_cluster(external)
        return
    build, local = _import_localcluster()
    layout = local.default_layout()
    try:
        bins = build.ensure_binaries()
    except build.ToolchainMissing as error:
        # Never a skip: CI must say what is missing rather than pass without e2e tests.
        pytest.fail(f"the local control plane cannot be built: {error}", pytrace=False)
    local.ensure_up(layout, started_by="pytest", user_pid=os.getpid())
    try:
        yield Cluster(
            kubeconfig=layout.kubeconfig,
            env=local.kubectl_env(layout, bins),
            bin_dir=bins.dir,
            _restart_apiserver=lambda: local.restart_apiserver(layout),
        )
    finally:
        local.release(layout, os.getpid())
