"""Fixtures for the operator on the real local control plane (`cluster` from tests/conftest.py)."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def namespace(cluster: Any, ftj_crd: Path) -> Iterator[str]:
    """A fresh namespace with bound volumes for the examples' claims; deleted afterwards."""
    name = f"ftj-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(ftj_cluster.bound_volumes(name)))
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    cluster.kubectl("delete", "pv", "-l", f"{ftj_cluster.TEST_NAMESPACE_LABEL}={name}", "--wait=false", check=False)


@pytest.fixture(scope="module")
def api(cluster: Any) -> tuple[kubernetes.client.CoreV1Api, kubernetes.client.CustomObjectsApi]:
    return ftj_cluster.api_clients(cluster.kubeconfig)


@pytest.fixture(scope="module")
def operator(cluster: Any, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ftj_cluster.OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with ftj_cluster.running_operator(kubeconfig=cluster.kubeconfig, namespace=namespace, log=log) as process:
        yield process
