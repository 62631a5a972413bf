"""Kueue queueing (runPolicy.queueName): the queued child as built, phase Queued with the
Workload's reason, and the user's suspend reaching Kueue as the Workload's spec.active.
The Kueue reasons below are Kueue v0.17's own wording (pkg/scheduler, flavorassigner)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

import ftj_crd
from speechtune_operator import settings
from speechtune_operator.builders import backends, phase, queueing

GOLDEN = Path(__file__).parent / "golden" / "queued"
NO_QUOTA = ("couldn't assign flavors to pod set master: insufficient unused quota for nvidia.com/gpu "
            "in flavor default-flavor, 8 more needed")


def queued_body(example: str = "speechbrain-atc0", **run_policy: Any) -> dict[str, Any]:
    body = ftj_crd.stored(example)
    body["spec"]["runPolicy"].update({"queueName": "team-gpus", **run_policy})
    return body


@pytest.mark.parametrize("backend", [backends.PYTORCHJOB, backends.TRAINJOB], ids=lambda b: b.name)
def test_a_queued_child_renders_its_golden_label_suspend_and_annotation(backend: backends.Backend) -> None:
    child = backend.build(queued_body(), settings.Settings())
    text = yaml.safe_dump({"metadata": child["metadata"], "suspend": backend.suspended(child)}, sort_keys=False)
    golden = GOLDEN / f"{backend.name}.yaml"
    if os.environ.get("SPEECHTUNE_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()
    assert child["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-gpus"
    assert backend.suspended(child) is True  # Kueue unsuspends it on admission
    assert backend.user_suspended(child) is False


@pytest.mark.parametrize("backend", [backends.PYTORCHJOB, backends.TRAINJOB], ids=lambda b: b.name)
def test_the_users_suspend_is_the_annotation_on_a_queued_child_and_the_switch_otherwise(backend: backends.Backend) -> None:
    queued = backend.build(queued_body(suspend=True), settings.Settings())
    assert backend.user_suspended(queued) is True
    assert queued["metadata"]["annotations"] == {"speechtune.dev/suspend": "true"}
    plain = backend.build(ftj_crd.stored("speechbrain-atc0"), settings.Settings())
    assert "annotations" not in plain["metadata"] and backend.suspended(plain) is False
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]


def test_scheduling_policy_is_passed_through_to_the_pytorchjob() -> None:
    policy = {"minAvailable": 2, "queue": "gang", "priorityClass": "high", "scheduleTimeoutSeconds": 600}
    body = queued_body(schedulingPolicy=policy)
    child = backends.PYTORCHJOB.build(body, settings.Settings())
    assert child["spec"]["runPolicy"]["schedulingPolicy"] == policy


def workload(*conditions: tuple[str, str, str], active: bool = True, cluster_queue: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": t, "status": s, "reason": "Pending", "message": m}
                                             for t, s, m in conditions]}
    if cluster_queue:
        status["admission"] = {"clusterQueue": cluster_queue}
    return {"metadata": {"name": "pytorchjob-job-1a2b3", "namespace": "research"},
            "spec": {"active": active, "queueName": "team-gpus"}, "status": status}


SUSPENDED = {"phase": "Suspended", "message": "PyTorchJob job is suspended."}


@pytest.mark.parametrize(("desired", "options", "expected"), [
    # Waiting for quota: Kueue's reason.
    (SUSPENDED, {"workload": workload(("QuotaReserved", "False", NO_QUOTA))},
     ("Queued", f"LocalQueue team-gpus: {NO_QUOTA}")),
    # Kueue has not made the Workload yet.
    (SUSPENDED, {"workload": None}, ("Queued", "LocalQueue team-gpus: waiting for Kueue to create its Workload")),
    # Preempted: evicted with Kueue's message, queued again.
    (SUSPENDED, {"workload": workload(("Evicted", "True", "Preempted to accommodate a workload"),
                                      ("QuotaReserved", "False", NO_QUOTA))},
     ("Queued", "LocalQueue team-gpus: Preempted to accommodate a workload")),
    # Admitted, the child still suspended for a moment: Pending, not Suspended.
    (SUSPENDED, {"workload": workload(("QuotaReserved", "True", "Quota reserved in ClusterQueue gpus"),
                                      ("Admitted", "True", "The workload is admitted"), cluster_queue="gpus")},
     ("Pending", "admitted by ClusterQueue gpus")),
    # The user suspended it: Suspended, as without Kueue.
    (SUSPENDED, {"user_suspended": True, "workload": workload(("QuotaReserved", "False", NO_QUOTA))},
     ("Suspended", "PyTorchJob job is suspended.")),
    # Unsuspended by Kueue, its Suspended condition not yet cleared: Pending, not Suspended.
    (SUSPENDED, {"child_suspended": False, "workload": workload(("Admitted", "True", "admitted"),
                                                                cluster_queue="gpus")},
     ("Pending", "admitted by ClusterQueue gpus")),
    # Unsuspended by Kueue: the child's own phase.
    ({"phase": "Running", "message": "running"}, {"child_suspended": False}, ("Running", "running")),
    # No queue: untouched.
    (SUSPENDED, {"queue": None}, ("Suspended", "PyTorchJob job is suspended.")),
    # Finished stays finished.
    ({"phase": "Succeeded", "message": "done"}, {}, ("Succeeded", "done")),
])
def test_phase_queued_until_admitted(desired: dict[str, Any], options: dict[str, Any], expected: tuple[str, str]) -> None:
    arguments: dict[str, Any] = {"queue": "team-gpus", "user_suspended": False, "child_suspended": True,
                                 "workload": None, **options}
    out = queueing.apply(desired, **arguments)
    assert (out["phase"], out["message"]) == expected


def test_queued_and_admitted_are_events_with_kueues_words() -> None:
    queued = phase.transition_event(None, phase.QUEUED, f"LocalQueue team-gpus: {NO_QUOTA}")
    assert queued is not None and (queued.type, queued.reason) == ("Normal", "TrainingQueued")
    assert "insufficient unused quota" in queued.message
    admitted = phase.transition_event(phase.QUEUED, phase.PENDING, "admitted by ClusterQueue gpus")
    assert admitted is not None and admitted.reason == "TrainingAdmitted"
    assert phase.transition_event(phase.QUEUED, phase.QUEUED, "same", old_message="same") is None
    again = phase.transition_event(phase.QUEUED, phase.QUEUED, NO_QUOTA, old_message="waiting for Kueue")
    assert again is not None and again.reason == "TrainingQueued" and again.message == NO_QUOTA


@pytest.mark.parametrize(("active", "user_suspended", "expected"), [
    (True, False, None),
    (True, True, {"spec": {"active": False}}),
    (False, True, None),
    (False, False, {"spec": {"active": True}}),
])
def test_the_workloads_active_flag_follows_the_users_suspend(active: bool, user_suspended: bool,
                                                            expected: dict[str, Any] | None) -> None:
    assert queueing.active_patch(workload(active=active), user_suspended=user_suspended) == expected


def test_the_queued_phase_is_in_the_crd() -> None:
    status = ftj_crd.schema()["properties"]["status"]["properties"]["phase"]
    assert set(phase.PHASES) == set(status["enum"])
    run_policy = ftj_crd.schema()["properties"]["spec"]["properties"]["runPolicy"]["properties"]
    assert "LocalQueue" in run_policy["queueName"]["description"]
