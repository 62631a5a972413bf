"""Phase, status and Events from PyTorchJob conditions and pods."""

from __future__ import annotations

from typing import Any

import pytest

from speechtune_operator.builders import phase


def pj(*conditions: tuple[str, str], **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "job"}, "status": {
        "conditions": [{"type": t, "status": s, "reason": f"PyTorchJob{t}", "message": f"{t} message",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "lastUpdateTime": "2026-01-01T00:00:09Z"}
                       for t, s in conditions], **status}}


@pytest.mark.parametrize(("conditions", "expected"), [
    ((), "Pending"),
    ((("Created", "True"),), "Pending"),
    ((("Created", "True"), ("Running", "True")), "Running"),
    ((("Created", "True"), ("Running", "False"), ("Restarting", "True")), "Restarting"),
    ((("Created", "True"), ("Suspended", "True"), ("Running", "False")), "Suspended"),
    ((("Created", "True"), ("Suspended", "False"), ("Running", "True")), "Running"),
    ((("Running", "True"), ("Succeeded", "True")), "Succeeded"),
    ((("Running", "False"), ("Failed", "True")), "Failed"),
    ((("Restarting", "True"), ("Failed", "True")), "Failed"),
])
def test_phase_of_conditions(conditions: tuple[tuple[str, str], ...], expected: str) -> None:
    assert phase.phase_of(pj(*conditions)["status"])[0] == expected


def test_desired_status_copies_conditions_and_times_without_update_times() -> None:
    job = pj(("Created", "True"), ("Running", "True"), startTime="2026-01-01T00:00:00Z")
    desired = phase.desired_status(job)
    assert desired["phase"] == "Running"
    assert desired["pytorchJob"] == "job"
    assert desired["startTime"] == "2026-01-01T00:00:00Z"
    assert "completionTime" not in desired
    assert all("lastUpdateTime" not in c for c in desired["conditions"])
    assert [c["type"] for c in desired["conditions"]] == ["Created", "Running"]


def test_failed_message_carries_the_pod_reason() -> None:
    failure = phase.PodFailure(pod="job-master-0", reason="Error", message="CUDA OOM", exit_code=1)
    desired = phase.desired_status(pj(("Failed", "True")), failure)
    assert desired["message"] == "Failed message pod job-master-0 failed: Error (exit code 1): CUDA OOM"


def test_status_patch_is_empty_when_nothing_changed() -> None:
    desired = phase.desired_status(pj(("Running", "True")))
    assert phase.status_patch(dict(desired, progress={"step": 3}), desired) == {}
    assert phase.status_patch({"phase": "Pending"}, desired)["phase"] == "Running"


@pytest.mark.parametrize(("old", "new", "reason", "kind"), [
    ("Restarting", "Pending", "TrainingPending", "Normal"),
    (None, "Suspended", "TrainingSuspended", "Normal"),
    ("Pending", "Running", "TrainingRunning", "Normal"),
    ("Running", "Restarting", "TrainingRestarting", "Warning"),
    ("Running", "Suspended", "TrainingSuspended", "Normal"),
    ("Suspended", "Running", "TrainingResumed", "Normal"),
    ("Suspended", "Pending", "TrainingResumed", "Normal"),
    ("Running", "Succeeded", "TrainingSucceeded", "Normal"),
    ("Running", "Failed", "TrainingFailed", "Warning"),
])
def test_each_transition_has_an_event(old: str | None, new: str, reason: str, kind: str) -> None:
    event = phase.transition_event(old, new, "why")
    assert event == phase.PhaseEvent(kind, reason, "why")


def test_no_event_for_no_transition_nor_for_the_first_pending() -> None:
    # The child's Created event marks a job's start; Pending is where every job starts.
    assert phase.transition_event(None, "Pending", "why") is None
    assert phase.transition_event("Running", "Running", "why") is None


def test_no_event_without_a_transition() -> None:
    assert phase.transition_event("Running", "Running", "again") is None


def failed_pod(name: str, replica: str, **terminated: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"training.kubeflow.org/replica-type": replica}},
            "status": {"phase": "Failed", "reason": "Error", "message": "pod level",
                       "containerStatuses": [{"name": "pytorch", "state": {"terminated": terminated}}]}}


def test_pod_failure_reads_the_pytorch_container() -> None:
    pod = failed_pod("j-master-0", "master", reason="OOMKilled", exitCode=137, message="")
    assert phase.pod_failure(pod) == phase.PodFailure("j-master-0", "OOMKilled", "", 137)
    assert phase.pod_failure({"metadata": {"name": "x"}, "status": {"phase": "Running"}}) is None


def test_pod_failure_falls_back_to_the_pod_status() -> None:
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Failed", "reason": "Evicted", "message": "disk"}}
    assert phase.pod_failure(pod) == phase.PodFailure("p", "Evicted", "disk")


def test_first_failure_prefers_the_master() -> None:
    worker = failed_pod("j-worker-0", "worker", reason="Error", exitCode=1)
    master = failed_pod("j-master-0", "master", reason="Error", exitCode=2)
    running = {"metadata": {"name": "j-worker-1"}, "status": {"phase": "Running"}}
    assert phase.first_failure([worker, running, master]).pod == "j-master-0"  # type: ignore[union-attr]
    assert phase.first_failure([worker, running]).pod == "j-worker-0"  # type: ignore[union-attr]
    assert phase.first_failure([running]) is None


def test_completion_time_falls_back_to_the_final_condition() -> None:
    desired = phase.desired_status(pj(("Running", "False"), ("Failed", "True")))
    assert desired["completionTime"] == "2026-01-01T00:00:00Z"
    assert "completionTime" not in phase.desired_status(pj(("Running", "True")))
