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
    env: dict[str, str]  # os.environ plus KUBECONFIG and PATH (with the binaries' folders first)
    bin_dir: Path | None  # kubectl's folder; None on an external cluster (PATH's own)
    _restart_apiserver: Callable[[], None] | None = None
    _ensure_backend: Callable[[str], None] | None = None

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

    def ensure_backend(self, backend: str) -> None:
        """Start the controllers of `backend` (trainjob: JobSet and Kubeflow Trainer v2) unless
        they run; an external cluster is taken to have them installed."""
        if self._ensure_backend is not None:
            self._ensure_backend(backend)

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
    # Our pinned kubectl/helm when they are already built; otherwise whatever PATH has.
    bins = _import_localcluster()[0].versions.binaries()
    bin_dir = bins.path("kubectl").parent if bins.path("kubectl").is_file() else None
    env = dict(os.environ, KUBECONFIG=str(path))
    if bin_dir is not None:
        env["PATH"] = f"{bins.search_path}{os.pathsep}{env.get('PATH', '')}"
    return Cluster(kubeconfig=path, env=env, bin_dir=bin_dir)


def _import_localcluster():  # type: ignore[no-untyped-def]
    if str(REPO / "hack" / "cluster") not in sys.path:
        sys.path.insert(0, str(REPO / "hack" / "cluster"))
    from localcluster import build, cluster  # noqa: PLC0415  (hack/ is not a package on sys.path)

    return build, cluster


_BUILD_ERROR: list[str] = []  # set during collection, reported by the fixtures


def _needs_binaries(item: pytest.Item) -> bool:
    fixtures = getattr(item, "fixturenames", ())
    return item.get_closest_marker("cluster") is not None or "cluster" in fixtures or "helm" in fixtures


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Build missing control-plane binaries before any test starts: a cold build takes tens
    of minutes on two cores, longer than the per-test timeout, which collection is not under."""
    if os.environ.get("SPEECHTUNE_KUBECONFIG") or not any(_needs_binaries(item) for item in items):
        return
    build, _ = _import_localcluster()
    # Tests on the trainjob backend (the `backend` fixture) need JobSet and Kubeflow Trainer
    # v2 too; built here, in parallel with the rest, not in the middle of a test.
    trainjob = any("backend" in getattr(item, "fixturenames", ()) for item in items)
    versions = build.versions
    components = versions.BASE_COMPONENTS + (versions.TRAINJOB_COMPONENTS if trainjob else ())
    # Kueue (tests/operator/test_operator_kueue.py): built only when such a test is collected.
    if any("kueue_namespace" in getattr(item, "fixturenames", ()) for item in items):
        components += versions.KUEUE_COMPONENTS
    try:
        build.ensure_binaries(components=components)
    except build.ToolchainMissing as error:
        _BUILD_ERROR.append(str(error))


def _binaries():  # type: ignore[no-untyped-def]
    build, _ = _import_localcluster()
    if _BUILD_ERROR:
        pytest.fail(f"the local control plane cannot be built: {_BUILD_ERROR[0]}", pytrace=False)
    try:
        return build.ensure_binaries()
    except build.ToolchainMissing as error:
        # Never a skip: CI must say what is missing rather than pass without e2e tests.
        pytest.fail(f"the local control plane cannot be built: {error}", pytrace=False)


@pytest.fixture(scope="session")
def helm() -> Path:
    """The pinned helm binary (built from the Go module proxy like the control plane)."""
    external = shutil.which("helm") if os.environ.get("SPEECHTUNE_KUBECONFIG") else None
    return Path(external) if external else Path(_binaries().path("helm"))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    external = os.environ.get("SPEECHTUNE_KUBECONFIG")
    if external:
        yield _external_cluster(external)
        return
    bins = _binaries()
    _, local = _import_localcluster()
    layout = local.default_layout()
    local.ensure_up(layout, started_by="pytest", user_pid=os.getpid())
    try:
        yield Cluster(
            kubeconfig=layout.kubeconfig,
            env=local.kubectl_env(layout, bins),
            bin_dir=bins.path("kubectl").parent,
            _restart_apiserver=lambda: local.restart_apiserver(layout),
            _ensure_backend=lambda backend: local.ensure_up(layout, started_by="pytest", backends=(backend,)),
        )
    finally:
        local.release(layout, os.getpid())
