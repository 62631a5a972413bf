"""Kueue: what a FinetuneJob that names a LocalQueue (spec.runPolicy.queueName) shows while
its child waits, and how a user's suspend reaches Kueue.

Kueue suspends a queued child until its Workload is admitted, then unsuspends it. A
child that is suspended, not by the user, and whose Workload is not admitted is `Queued`,
with the Workload's own reason ("couldn't assign flavors ...: insufficient unused quota")
as the message. Kueue unsuspends any admitted child it finds suspended, so a user's suspend
cannot go through the child: it deactivates the Workload (spec.active=false, Kueue's own
stop), which evicts it and suspends the child; resuming activates it again.
"""

from __future__ import annotations

from typing import Any, Mapping

from speechtune_operator import names
from speechtune_operator.builders import phase


def queue_name(spec: Mapping[str, Any]) -> str | None:
    queue = (spec.get("runPolicy") or {}).get("queueName")
    return str(queue) if queue else None


def suspend_annotations(user_suspended: bool) -> dict[str, str]:
    """A queued child's record of the user's runPolicy.suspend (Kueue owns its switch)."""
    return {names.ANNOTATION_SUSPEND: "true" if user_suspended else "false"}


def _condition(workload: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    for condition in ((workload or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition  # type: ignore[no-any-return]
    return None


def is_true(workload: Mapping[str, Any] | None, kind: str) -> bool:
    condition = _condition(workload, kind)
    return condition is not None and condition.get("status") == "True"


def is_admitted(workload: Mapping[str, Any] | None) -> bool:
    return is_true(workload, "Admitted")


def is_active(workload: Mapping[str, Any]) -> bool:
    return (workload.get("spec") or {}).get("active", True) is not False


def cluster_queue(workload: Mapping[str, Any] | None) -> str:
    return str((((workload or {}).get("status") or {}).get("admission") or {}).get("clusterQueue") or "")


def waiting_reason(workload: Mapping[str, Any] | None) -> str:
    """Why Kueue has not admitted the Workload, in Kueue's words."""
    if workload is None:
        return "waiting for Kueue to create its Workload"
    for kind, status in (("Evicted", "True"), ("QuotaReserved", "False"), ("QuotaReserved", "True")):
        condition = _condition(workload, kind)
        if condition is not None and condition.get("status") == status and condition.get("message"):
            return str(condition["message"])
    return "waiting for admission"


def apply(desired: Mapping[str, Any], *, queue: str | None, user_suspended: bool, child_suspended: bool,
          workload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The status `desired` (phase.desired_status) as Kueue makes it: Queued while Kueue
    holds the child back, Pending once admitted until the child starts."""
    out = dict(desired)
    if not queue or user_suspended or out["phase"] in phase.FINISHED:
        return out
    if child_suspended and not is_admitted(workload):
        out["phase"], out["message"] = phase.QUEUED, f"LocalQueue {queue}: {waiting_reason(workload)}"
    elif child_suspended or out["phase"] == phase.SUSPENDED:
        # Admitted: Kueue unsuspends the child, whose Suspended condition lags behind.
        out["phase"], out["message"] = phase.PENDING, f"admitted by ClusterQueue {cluster_queue(workload)}"
    return out


def active_patch(workload: Mapping[str, Any], *, user_suspended: bool) -> dict[str, Any] | None:
    """The merge patch that makes the Workload's spec.active follow runPolicy.suspend, or
    None when it already does."""
    if is_active(workload) == (not user_suspended):
        return None
    return {"spec": {"active": not user_suspended}}
