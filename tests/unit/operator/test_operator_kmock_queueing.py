"""A queued FinetuneJob against kmock's in-memory API with the real kopf machinery: the
child starts suspended with Kueue's queue label, the Workload's reason becomes phase Queued
(with its Event), the user's suspend and resume reach the Workload's spec.active and never
the child's switch (Kueue's), and admission makes it run."""

from __future__ import annotations

from typing import Any, AsyncIterator

import kmock as km
import pytest
import pytest_asyncio

import ftj_crd
from test_operator_kmock import FTJ, NS, PJ, Harness, eventually, running

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]
WL = "kueue.x-k8s.io/v1beta2/workloads"
NAME = "sb-conformer-atc0-lora"
WORKLOAD = f"pytorchjob-{NAME}-1a2b3"
NO_QUOTA = ("couldn't assign flavors to pod set master: insufficient unused quota for nvidia.com/gpu "
            "in flavor default-flavor, 8 more needed")


@pytest_asyncio.fixture
async def queued(kmock: km.KubernetesEmulator) -> AsyncIterator[Harness]:
    kmock.resources[WL] = km.ResourceInfo(kind="Workload", namespaced=True, subresources={"status"},
                                          verbs={"list", "watch", "get", "create", "patch", "update", "delete"})
    async with running(kmock, "pytorchjob") as harness:
        body = ftj_crd.stored("speechbrain-atc0", namespace=NS)
        body["metadata"].update(resourceVersion="1", uid="uid-q1")
        body["spec"]["runPolicy"]["queueName"] = "team-gpus"
        await harness.call(harness.clients.custom.create_namespaced_custom_object,
                           "speechtune.dev", "v1alpha1", NS, "finetunejobs", body)
        yield harness


def condition(kind: str, status: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": kind, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


async def set_status(h: Harness, group: str, version: str, plural: str, name: str, *conditions: dict[str, Any],
                     **extra: Any) -> None:
    await h.call(h.clients.custom.patch_namespaced_custom_object_status, group, version, NS, plural, name,
                 {"status": {"conditions": list(conditions), **extra}})


async def make_workload(h: Harness, child: dict[str, Any]) -> None:
    """What Kueue makes for the child: a Workload it owns, waiting for quota."""
    workload = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
                "metadata": {"name": WORKLOAD, "namespace": NS, "resourceVersion": "1",
                             "labels": {"kueue.x-k8s.io/job-uid": "pj-uid"},
                             "ownerReferences": [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                                                  "name": NAME, "uid": "pj-uid", "controller": True}]},
                "spec": {"active": True, "queueName": "team-gpus", "podSets": []}}
    await h.call(h.clients.custom.create_namespaced_custom_object, "kueue.x-k8s.io", "v1beta2", NS, "workloads",
                 workload)
    await set_status(h, "kueue.x-k8s.io", "v1beta2", "workloads", WORKLOAD,
                     condition("QuotaReserved", "False", NO_QUOTA))


def status(h: Harness) -> dict[str, Any]:
    return dict(h.get(FTJ, NAME).get("status") or {})


def reasons(h: Harness) -> list[str]:
    return [event["reason"] for event in h.events()]


async def test_queued_until_admitted_and_suspend_goes_through_the_workload(queued: Harness) -> None:
    h = queued
    child = await eventually(lambda: h.objects(PJ) and h.get(PJ, NAME))
    assert child["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-gpus"
    assert child["spec"]["runPolicy"]["suspend"] is True
    assert child["metadata"]["annotations"] == {"speechtune.dev/suspend": "false"}

    # The training-operator reports the suspended job; Kueue makes its Workload.
    await set_status(h, "kubeflow.org", "v1", "pytorchjobs", NAME, condition("Created", "True"),
                     condition("Suspended", "True", f"PyTorchJob {NAME} is suspended."))
    await make_workload(h, child)
    await eventually(lambda: status(h).get("phase") == "Queued" and NO_QUOTA in status(h)["message"])
    assert status(h)["message"] == f"LocalQueue team-gpus: {NO_QUOTA}"
    # The Event says Kueue's reason (a first one may have come before Kueue made the Workload).
    await eventually(lambda: [e for e in h.events() if e["reason"] == "TrainingQueued" and NO_QUOTA in e["message"]])

    # The user suspends: the Workload is deactivated; the child's switch stays Kueue's.
    for suspend in (True, False):
        await h.call(h.clients.custom.patch_namespaced_custom_object, "speechtune.dev", "v1alpha1", NS,
                     "finetunejobs", NAME, {"spec": {"runPolicy": {"suspend": suspend}}})
        await eventually(lambda: h.get(WL, WORKLOAD)["spec"]["active"] is (not suspend))
        await eventually(lambda: h.get(PJ, NAME)["metadata"]["annotations"]["speechtune.dev/suspend"]
                         == str(suspend).lower())
        assert h.get(PJ, NAME)["spec"]["runPolicy"]["suspend"] is True
        if suspend:
            await eventually(lambda: status(h).get("phase") == "Suspended")

    # Kueue admits it and unsuspends the child; the training-operator starts it.
    await eventually(lambda: status(h).get("phase") == "Queued")
    await set_status(h, "kueue.x-k8s.io", "v1beta2", "workloads", WORKLOAD,
                     condition("QuotaReserved", "True", "Quota reserved in ClusterQueue gpus"),
                     condition("Admitted", "True", "The workload is admitted"), admission={"clusterQueue": "gpus"})
    await h.call(h.clients.custom.patch_namespaced_custom_object, "kubeflow.org", "v1", NS, "pytorchjobs", NAME,
                 {"spec": {"runPolicy": {"suspend": False}}})
    await set_status(h, "kubeflow.org", "v1", "pytorchjobs", NAME, condition("Created", "True"),
                     condition("Suspended", "False"), condition("Running", "True", "running"))
    await eventually(lambda: status(h).get("phase") == "Running")
    await eventually(lambda: "TrainingAdmitted" in reasons(h) or "TrainingRunning" in reasons(h))
    assert reasons(h).index("TrainingQueued") < reasons(h).index("TrainingSuspended")


async def test_a_job_created_suspended_gets_its_workload_deactivated(kmock: km.KubernetesEmulator) -> None:
    kmock.resources[WL] = km.ResourceInfo(kind="Workload", namespaced=True, subresources={"status"},
                                          verbs={"list", "watch", "get", "create", "patch", "update", "delete"})
    async with running(kmock, "pytorchjob") as h:
        body = ftj_crd.stored("speechbrain-atc0", namespace=NS)
        body["metadata"].update(resourceVersion="1", uid="uid-q2")
        body["spec"]["runPolicy"].update(queueName="team-gpus", suspend=True)
        await h.call(h.clients.custom.create_namespaced_custom_object,
                     "speechtune.dev", "v1alpha1", NS, "finetunejobs", body)
        child = await eventually(lambda: h.objects(PJ) and h.get(PJ, NAME))
        assert child["metadata"]["annotations"] == {"speechtune.dev/suspend": "true"}
        await make_workload(h, child)
        await eventually(lambda: h.get(WL, WORKLOAD)["spec"]["active"] is False)
