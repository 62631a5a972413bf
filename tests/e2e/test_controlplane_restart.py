"""`cluster.restart_apiserver()` (the operator's fault tests rely on it) brings the same
apiserver back on the same port with the same data."""

from __future__ import annotations

import uuid

from typing import Any

import pytest

pytestmark = pytest.mark.cluster


def test_restarted_apiserver_serves_the_same_data(cluster: Any) -> None:
    if not cluster.can_restart_apiserver:
        pytest.skip("SPEECHTUNE_KUBECONFIG: an external cluster's apiserver cannot be restarted")
    name = f"restart-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "configmap", name, "-n", "default", "--from-literal=kept=yes")

    cluster.restart_apiserver()

    try:
        kept = cluster.kubectl("get", "configmap", name, "-n", "default", "-o", "jsonpath={.data.kept}")
        assert kept.stdout == "yes"
    finally:
        cluster.kubectl("delete", "configmap", name, "-n", "default", check=False)
