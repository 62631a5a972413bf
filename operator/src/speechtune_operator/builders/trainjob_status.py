"""The status reader of the trainjob backend: FinetuneJob phase from a TrainJob.

Trainer v2 (v2.2.0, pkg/controller/trainjob_controller.go and the jobset plugin's Status)
writes three conditions, Suspended, Complete and Failed (the last two copied from its
JobSet's Completed/Failed), and `jobsStatus`, its JobSet's replicatedJobsStatus (ready,
active, failed, ... pods of each replicated Job). Running and Restarting, which a
PyTorchJob states as conditions, are read from the JobSet's counts of the `node` Job.
A TrainJob has no start time; startTime is Trainer's own notion of it (for its deadline):
when it was last resumed (Suspended turned False), else when it was created.
"""

from __future__ import annotations

from typing import Any, Mapping

from speechtune_operator.builders import phase

TRAINER_JOB = "node"  # the replicated Job of the trainer pods in our ClusterTrainingRuntimes


def read_trainjob(trainjob: Mapping[str, Any]) -> phase.Observed:
    status = trainjob.get("status") or {}
    conditions = tuple(status.get("conditions") or ())
    by_type = {c.get("type"): c for c in conditions}
    nodes: Mapping[str, Any] = next(
        (j for j in status.get("jobsStatus") or () if j.get("name") == TRAINER_JOB), {})

    def true(condition_type: str) -> Mapping[str, Any] | None:
        condition = by_type.get(condition_type)
        return condition if condition and condition.get("status") == "True" else None

    resumed = by_type.get("Suspended") or {}
    started = (resumed.get("lastTransitionTime") if resumed.get("status") == "False"
               else (trainjob.get("metadata") or {}).get("creationTimestamp"))

    def observed(phase_name: str, message: str, completion: Mapping[str, Any] | None = None) -> phase.Observed:
        return phase.Observed(phase=phase_name, message=message, status_field="trainJob",
                              conditions=conditions,
                              start_time=started if phase_name not in (phase.PENDING, phase.SUSPENDED) else None,
                              completion_time=(completion or {}).get("lastTransitionTime"))

    # First match wins: a finished job stays finished, whatever its counts still say.
    if done := true("Complete"):
        return observed(phase.SUCCEEDED, str(done.get("message", "")), done)
    if failed := true("Failed"):
        return observed(phase.FAILED, str(failed.get("message", "")), failed)
    if suspended := true("Suspended"):
        return observed(phase.SUSPENDED, str(suspended.get("message", "")))
    ready, failures = int(nodes.get("ready") or 0), int(nodes.get("failed") or 0)
    if ready > 0:
        return observed(phase.RUNNING, f"{ready} trainer pod(s) ready")
    if failures > 0:
        # A pod failed with a retryable exit code and its Job has not replaced it yet.
        return observed(phase.RESTARTING, f"{failures} trainer pod failure(s); restarting")
    return observed(phase.PENDING, "waiting for the TrainJob's pods")
