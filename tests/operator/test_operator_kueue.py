"""Kueue v0.17.0 on the local control plane (started only for this module): a ClusterQueue
with 8 GPUs of quota, two FinetuneJobs of 1 node x 8 GPUs in one LocalQueue. One runs, the
other is Queued with Kueue's reason until the first succeeds, then is admitted and runs.
The timeline (seconds from the first submit) is printed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import ftj_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]
QUEUE = "team-gpus"


def kueue_objects(namespace: str) -> list[dict[str, Any]]:
    api = "kueue.x-k8s.io/v1beta2"
    # Kueue's webhook wants the flavor's resources in coveredResources' order.
    gpus = {"name": "default-flavor", "resources": [{"name": "cpu", "nominalQuota": 64},
                                                    {"name": "memory", "nominalQuota": "1Ti"},
                                                    {"name": "nvidia.com/gpu", "nominalQuota": 8}]}
    return [
        {"apiVersion": api, "kind": "ResourceFlavor", "metadata": {"name": "default-flavor"}},
        {"apiVersion": api, "kind": "ClusterQueue", "metadata": {"name": f"gpus-{namespace}"},
         "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                                                               "flavors": [gpus]}]}},
        {"apiVersion": api, "kind": "LocalQueue", "metadata": {"name": QUEUE, "namespace": namespace},
         "spec": {"clusterQueue": f"gpus-{namespace}"}},
    ]


@pytest.fixture(scope="module")
def kueue_namespace(cluster: Any, namespace: str) -> Iterator[str]:
    """Kueue started (once, only for this module), its queues, and the claims the jobs mount."""
    cluster.ensure_backend("kueue")
    items = kueue_objects(namespace) + ftj_cluster.bound_volumes(namespace)
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    yield namespace
    cluster.kubectl("delete", "clusterqueue", f"gpus-{namespace}", "--wait=false", check=False)


def gpu_job(name: str) -> dict[str, Any]:
    job = ftj_cluster.tiny_job(name)
    job["spec"]["resources"].update(nodes=1, gpusPerNode=8)
    job["spec"]["runPolicy"] = {"queueName": QUEUE}
    return job


def test_two_8_gpu_jobs_share_8_gpus_of_quota_one_after_the_other(cluster: Any, kueue_namespace: str,
                                                                   tmp_path: Path) -> None:
    core, custom = ftj_cluster.api_clients(cluster.kubeconfig)
    ns = kueue_namespace
    timeline: dict[str, dict[str, float]] = {"first": {}, "second": {}}
    with ftj_cluster.running_operator(kubeconfig=cluster.kubeconfig, namespace=ns, log=tmp_path / "operator.log"):
        start = time.monotonic()

        def mark(job: str, what: str) -> None:
            timeline[job].setdefault(what, round(time.monotonic() - start, 2))

        def ftj(job: str) -> dict[str, Any]:
            return dict(custom.get_namespaced_custom_object("speechtune.dev", "v1alpha1", ns, "finetunejobs", job))

        for job in ("first", "second"):
            custom.create_namespaced_custom_object("speechtune.dev", "v1alpha1", ns, "finetunejobs", gpu_job(job))
            mark(job, "submit")
            if job == "first":
                ftj_cluster.wait_for(lambda: ftj("first").get("status", {}).get("phase") in ("Pending", "Running"),
                                     what="the first job admitted")
                mark("first", "admitted")
        status = ftj_cluster.wait_for(lambda: (s := ftj("second").get("status", {})).get("phase") == "Queued"
                                      and "insufficient" in s.get("message", "") and s, what="the second job Queued")
        mark("second", "queued")
        assert "LocalQueue team-gpus" in status["message"], status
        print(f"\nsecond job while queued: {status['message']}")
        ftj_cluster.wait_for(lambda: ftj("first").get("status", {}).get("phase") == "Running", what="first Running")
        mark("first", "running")
        assert ftj("second")["status"]["phase"] == "Queued"
        core.patch_namespaced_pod("first-master-0", ns, {"metadata": {"annotations": {
            "speechtune.dev/kwok-outcome": "succeed"}}})
        ftj_cluster.wait_for(lambda: ftj("first").get("status", {}).get("phase") == "Succeeded", what="first Succeeded")
        mark("first", "succeeded")
        ftj_cluster.wait_for(lambda: ftj("second").get("status", {}).get("phase") in ("Pending", "Running"),
                             what="the second job admitted")
        mark("second", "admitted")
        ftj_cluster.wait_for(lambda: ftj("second").get("status", {}).get("phase") == "Running", what="second Running")
        mark("second", "running")
        core.patch_namespaced_pod("second-master-0", ns, {"metadata": {"annotations": {
            "speechtune.dev/kwok-outcome": "succeed"}}})
        ftj_cluster.wait_for(lambda: ftj("second").get("status", {}).get("phase") == "Succeeded", what="second Succeeded")
        mark("second", "succeeded")
    print("\nKueue timeline (s from the first submit):")
    for job, marks in timeline.items():
        print(f"  {job:7s} " + "  ".join(f"{what} {at:6.2f}" for what, at in marks.items()))
    assert timeline["second"]["admitted"] >= timeline["first"]["succeeded"]
