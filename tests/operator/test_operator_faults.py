"""The operator under faults on the real control plane, on both backends: SIGKILL in the
middle of a burst of creations, and an apiserver restart under a running operator."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import ftj_cluster
from ftj_cluster import wait_for

pytestmark = pytest.mark.cluster
BURST = 50


@pytest.fixture(scope="module")
def namespace(backend_namespace: str) -> str:
    return backend_namespace


def finetunejobs(custom: Any, namespace: str) -> list[dict[str, Any]]:
    return list(custom.list_namespaced_custom_object(
        ftj_cluster.GROUP, ftj_cluster.VERSION, namespace, ftj_cluster.PLURAL)["items"])


def converged(custom: Any, namespace: str, count: int) -> bool:
    jobs = finetunejobs(custom, namespace)
    return len(jobs) == count and all(
        (job.get("status") or {}).get("phase") == "Running" and job["status"].get("observedGeneration") == 1
        for job in jobs)


def test_kill_9_during_a_burst_then_restart_converges_without_duplicates(
        cluster: Any, api: Any, namespace: str, backend: ftj_cluster.Backend, tmp_path: Path) -> None:
    _, custom = api

    jobs = [ftj_cluster.tiny_job(f"burst-{i:02d}") for i in range(BURST)]
    log = tmp_path / "operator.log"
    first = ftj_cluster.OperatorProcess(kubeconfig=cluster.kubeconfig, namespace=namespace, log=log,
                                        backend=backend.name).start()
    # Create the burst in the background and kill the operator as soon as it has made a few
    # children: it dies with creations, status writes and progress annotations in flight.
    burst = subprocess.Popen(["kubectl", "apply", "-n", namespace, "-f", "-"], env=cluster.env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert burst.stdin is not None
    burst.stdin.write(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": jobs}))
    burst.stdin.close()
    wait_for(lambda: len(ftj_cluster.children(custom, backend, namespace)) >= 3, interval=0.01, what="the first children")
    first.kill()
    made, created = len(ftj_cluster.children(custom, backend, namespace)), len(finetunejobs(custom, namespace))
    print(f"at SIGKILL: {created}/{BURST} FinetuneJobs created, {made} {backend.plural} made")
    assert burst.wait(timeout=120) == 0
    assert made < BURST, "the operator finished before it was killed: nothing was tested"

    with ftj_cluster.running_operator(kubeconfig=cluster.kubeconfig, namespace=namespace, log=log,
                                      backend=backend.name):
        wait_for(lambda: converged(custom, namespace, BURST), timeout=300, interval=1,
                 what=f"{BURST} FinetuneJobs Running with observedGeneration 1")
        owners = {job["metadata"]["name"]: job["metadata"]["uid"] for job in finetunejobs(custom, namespace)}
        children = ftj_cluster.children(custom, backend, namespace)
        assert sorted(pj["metadata"]["name"] for pj in children) == sorted(owners)
        for pj in children:
            [ref] = pj["metadata"]["ownerReferences"]
            assert ref["uid"] == owners[pj["metadata"]["name"]]
        assert not api[0].list_namespaced_config_map(namespace, label_selector="speechtune.dev/finetunejob").items
    cluster.kubectl("delete", "-n", namespace, "finetunejobs", "--all", "--wait=false")


def test_operator_recovers_from_an_apiserver_restart(cluster: Any, api: Any, namespace: str,
                                                     backend: ftj_cluster.Backend, tmp_path: Path) -> None:
    _, custom = api

    log = tmp_path / "operator.log"
    with ftj_cluster.running_operator(kubeconfig=cluster.kubeconfig, namespace=namespace, log=log,
                                      backend=backend.name) as operator:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(ftj_cluster.tiny_job("before")))
        wait_for(lambda: any(pj["metadata"]["name"] == "before" for pj in ftj_cluster.children(custom, backend, namespace)))

        cluster.restart_apiserver()

        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(ftj_cluster.tiny_job("after")))
        wait_for(lambda: any(pj["metadata"]["name"] == "after" for pj in ftj_cluster.children(custom, backend, namespace)),
                 timeout=180, what="a child for a job created after the restart")
        wait_for(lambda: (custom.get_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace,
                                                              ftj_cluster.PLURAL, "after").get("status") or {})
                 .get("phase") == "Running", timeout=180, what="status mirrored after the restart")
        assert operator.healthy()
