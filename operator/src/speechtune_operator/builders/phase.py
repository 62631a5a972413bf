"""FinetuneJob status from its child (PyTorchJob or TrainJob): phase, conditions, times,
and the Event that a phase transition deserves.

A backend's status reader turns its child into an `Observed` (`read_pytorchjob` here,
`trainjob_status.read_trainjob` for TrainJobs); everything after that is shared."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

PENDING, RUNNING, RESTARTING = "Pending", "Running", "Restarting"
SUSPENDED, SUCCEEDED, FAILED = "Suspended", "Succeeded", "Failed"
# Before the child exists: the model initializer Job downloads a hub model to the model volume.
INITIALIZING = "Initializing"
# The child waits, suspended by Kueue, for its Workload to be admitted (runPolicy.queueName).
QUEUED = "Queued"
PHASES = (INITIALIZING, QUEUED, PENDING, RUNNING, RESTARTING, SUSPENDED, SUCCEEDED, FAILED)
FINISHED = frozenset({SUCCEEDED, FAILED})

# First true condition wins: a finished job stays finished even when the training-operator
# leaves an older Running condition true next to it.
_PRECEDENCE = (("Succeeded", SUCCEEDED), ("Failed", FAILED), ("Suspended", SUSPENDED),
               ("Restarting", RESTARTING), ("Running", RUNNING))

# Fields this module owns in .status; progress/metrics belong to the scraper.
OWNED_FIELDS = ("phase", "message", "conditions", "startTime", "completionTime", "pytorchJob", "trainJob",
                "initializerJob")


@dataclasses.dataclass(frozen=True)
class PodFailure:
    """Why a trainer pod ended, from its `pytorch` container's terminated state."""

    pod: str
    reason: str
    message: str = ""
    exit_code: int | None = None

    def describe(self) -> str:
        code = f" (exit code {self.exit_code})" if self.exit_code is not None else ""
        detail = f": {self.message.strip()}" if self.message.strip() else ""
        return f"pod {self.pod} failed: {self.reason}{code}{detail}"


@dataclasses.dataclass(frozen=True)
class Observed:
    """What a backend's status reader makes of its child."""

    phase: str
    message: str
    status_field: str  # where the child's name goes in the FinetuneJob's status
    conditions: tuple[Mapping[str, Any], ...] = ()
    start_time: str | None = None
    completion_time: str | None = None


Reader = Callable[[Mapping[str, Any]], Observed]


@dataclasses.dataclass(frozen=True)
class PhaseEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


def phase_of(pytorchjob_status: Mapping[str, Any]) -> tuple[str, str]:
    """(phase, message of the condition that decided it)."""
    conditions = {c.get("type"): c for c in pytorchjob_status.get("conditions") or []}
    for condition_type, phase in _PRECEDENCE:
        condition = conditions.get(condition_type)
        if condition and condition.get("status") == "True":
            return phase, str(condition.get("message", ""))
    return PENDING, "waiting for the PyTorchJob's pods"


def read_pytorchjob(pytorchjob: Mapping[str, Any]) -> Observed:
    status = pytorchjob.get("status") or {}
    phase, message = phase_of(status)
    return Observed(phase=phase, message=message, status_field="pytorchJob",
                    conditions=tuple(status.get("conditions") or ()),
                    start_time=status.get("startTime"), completion_time=status.get("completionTime"))


def desired_status(child: Mapping[str, Any], failure: PodFailure | None = None,
                   reader: Reader = read_pytorchjob) -> dict[str, Any]:
    observed = reader(child)
    phase, message = observed.phase, observed.message
    if phase == FAILED and failure is not None:
        message = f"{message} {failure.describe()}".strip()
    desired: dict[str, Any] = {
        "phase": phase,
        "message": message,
        observed.status_field: child["metadata"]["name"],
        "conditions": [_condition(c) for c in observed.conditions],
    }
    if observed.start_time:
        desired["startTime"] = observed.start_time
    if observed.completion_time:
        desired["completionTime"] = observed.completion_time
    if phase in FINISHED and "completionTime" not in desired:
        # The training-operator leaves completionTime unset when a non-retryable exit code
        # fails the job (restartPolicy ExitCode); the Failed condition still dates it.
        ended: Mapping[str, Any] = next(
            (c for c in observed.conditions if c.get("type") == phase), {})
        if ended.get("lastTransitionTime"):
            desired["completionTime"] = ended["lastTransitionTime"]
    return desired


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Only the fields that differ; {} when the status is already right (no write)."""
    return {key: value for key, value in desired.items() if current.get(key) != value}


def transition_event(old_phase: str | None, new_phase: str, message: str,
                     old_message: str | None = None) -> PhaseEvent | None:
    if old_phase == new_phase == QUEUED and message != old_message:
        # Kueue's reason for holding the job changed (its Workload appeared, or was evicted):
        # worth telling, as the first Queued event may predate the Workload.
        return PhaseEvent("Normal", "TrainingQueued", message)
    if old_phase == new_phase or (old_phase in (None, INITIALIZING) and new_phase == PENDING):
        # A job starts Pending (after Initializing, when it has a model initializer); the
        # child's Created event already marks that start.
        return None
    if old_phase == SUSPENDED and new_phase in (PENDING, RUNNING):  # pods come back: Pending first
        return PhaseEvent("Normal", "TrainingResumed", message or "training resumed")
    if old_phase == QUEUED and new_phase in (PENDING, RUNNING):  # Kueue admitted it
        return PhaseEvent("Normal", "TrainingAdmitted", message or "admitted by Kueue")
    reason, kind = {
        INITIALIZING: ("ModelInitializing", "Normal"),
        QUEUED: ("TrainingQueued", "Normal"),
        PENDING: ("TrainingPending", "Normal"),
        RUNNING: ("TrainingRunning", "Normal"),
        RESTARTING: ("TrainingRestarting", "Warning"),
        SUSPENDED: ("TrainingSuspended", "Normal"),
        SUCCEEDED: ("TrainingSucceeded", "Normal"),
        FAILED: ("TrainingFailed", "Warning"),
    }[new_phase]
    return PhaseEvent(kind, reason, message or new_phase)


def _condition(condition: Mapping[str, Any]) -> dict[str, Any]:
    # lastUpdateTime is dropped: it moves on every resync and would rewrite status for nothing.
    return {key: condition[key] for key in ("type", "status", "reason", "message", "lastTransitionTime")
            if key in condition}


def pod_failure(pod: Mapping[str, Any], container_name: str = "pytorch") -> PodFailure | None:
    """The failure of a Failed pod, preferring its trainer container's terminated state."""
    status = pod.get("status") or {}
    if status.get("phase") != "Failed":
        return None
    name = str(pod.get("metadata", {}).get("name", "?"))
    for container in status.get("containerStatuses") or []:
        if container.get("name") != container_name:
            continue
        state = container.get("state") or {}
        terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
        if terminated:
            return PodFailure(pod=name, reason=str(terminated.get("reason") or "Error"),
                              message=str(terminated.get("message") or ""),
                              exit_code=terminated.get("exitCode"))
    return PodFailure(pod=name, reason=str(status.get("reason") or "Failed"),
                      message=str(status.get("message") or ""))


def is_pytorchjob_master(pod: Mapping[str, Any]) -> bool:
    labels = pod.get("metadata", {}).get("labels") or {}
    return labels.get("training.kubeflow.org/replica-type") in ("master", "Master")


def first_failure(pods: Sequence[Mapping[str, Any]], container_name: str = "pytorch",
                  is_rank0: Callable[[Mapping[str, Any]], bool] = is_pytorchjob_master) -> PodFailure | None:
    """Rank 0's failure when it failed, else any other pod's: rank 0 is what users read."""
    failures = [(not is_rank0(pod), failure) for pod in pods
                if (failure := pod_failure(pod, container_name))]
    return min(failures, key=lambda pair: pair[0])[1] if failures else None
