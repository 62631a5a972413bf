"""Fixtures for the operator on the real local control plane (`cluster` from tests/conftest.py)."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import kubernetes
import pytest
import yaml

import ftj_cluster


@pytest.fixture(scope="session")
def ftj_crd(cluster: Any) -> Path:
    """The FinetuneJob CRD installed (re-applied, so a changed schema is what is tested)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ftj_cluster.CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/finetunejobs.speechtune.dev", "--timeout=60s")
    return ftj_cluster.CRD


@contextlib.contextmanager
def fresh_namespace(cluster: Any) -> Iterator[str]:
    """A fresh namespace with bound volumes for the examples' claims; deleted afterwards."""
    name = f"ftj-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(ftj_cluster.bound_volumes(name)))
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    cluster.kubectl("delete", "pv", "-l", f"{ftj_cluster.TEST_NAMESPACE_LABEL}={name}", "--wait=false", check=False)


@pytest.fixture(scope="module")
def namespace(cluster: Any, ftj_crd: Path) -> Iterator[str]:
    with fresh_namespace(cluster) as name:
        yield name


@pytest.fixture(scope="module")
def trainer_metrics_port() -> int:
    """The trainers' metrics port of this module's operator (and of the runtimes it uses)."""
    return ftj_cluster.free_port()


@pytest.fixture(scope="module", params=sorted(ftj_cluster.BACKENDS))
def backend(request: pytest.FixtureRequest, cluster: Any, helm: Path, trainer_metrics_port: int) -> ftj_cluster.Backend:
    """Each test that takes it runs on both backends: PyTorchJob (training-operator v1) and
    TrainJob (Kubeflow Trainer v2 and JobSet, started on demand, with the chart's
    ClusterTrainingRuntimes, which Trainer's own webhook validates)."""
    chosen = ftj_cluster.BACKENDS[request.param]
    if chosen.name == "trainjob":
        cluster.ensure_backend("trainjob")
        runtimes = subprocess.run(
            [str(helm), "template", "speechtune", str(ftj_cluster.REPO / "charts" / "speechtune"),
             "--set", "backend=trainjob", "--set", f"trainers.metricsPort={trainer_metrics_port}",
             "--show-only", "templates/trainingruntimes.yaml"],
            capture_output=True, text=True, check=True).stdout
        cluster.kubectl("apply", "-f", "-", input=runtimes)
    return chosen


@pytest.fixture(scope="module")
def backend_namespace(cluster: Any, ftj_crd: Path, backend: ftj_cluster.Backend) -> Iterator[str]:
    """A fresh namespace per backend: one backend's jobs never meet the other's operator."""
    with fresh_namespace(cluster) as name:
        yield name


@pytest.fixture(scope="module")
def api(cluster: Any) -> tuple[kubernetes.client.CoreV1Api, kubernetes.client.CustomObjectsApi]:
    return ftj_cluster.api_clients(cluster.kubeconfig)


@pytest.fixture(scope="module")
def operator(cluster: Any, backend_namespace: str, backend: ftj_cluster.Backend, trainer_metrics_port: int,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ftj_cluster.OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with ftj_cluster.running_operator(kubeconfig=cluster.kubeconfig, namespace=backend_namespace, log=log,
                                      backend=backend.name, trainer_metrics_port=trainer_metrics_port) as process:
        yield process
