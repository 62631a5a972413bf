"""What the operator last saw of each FinetuneJob and of each child, fed by their watch
streams (and by its own writes, before the watch brings them back).

The status mirror compares against the FinetuneJob view to write status only when it
changes, without a GET per event; the phase gauge counts from it. The child view is kopf's
record of what has been handled (persistence.ChildDiffBaseStorage).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Mapping

from speechtune_operator.builders import phase


@dataclasses.dataclass(frozen=True)
class JobView:
    namespace: str
    name: str
    uid: str
    generation: int
    status: Mapping[str, Any]

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> "JobView":
        meta = body["metadata"]
        return cls(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
                   generation=int(meta.get("generation", 0)), status=dict(body.get("status") or {}))

    def ref(self) -> dict[str, Any]:
        return {"metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid}}


class JobCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._views: dict[tuple[str, str], JobView] = {}

    def observe(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self._lock:
            if deleted:
                self._views.pop(key, None)
            else:
                self._views[key] = JobView.of(body)

    def get(self, namespace: str, name: str) -> JobView | None:
        with self._lock:
            return self._views.get((namespace, name))

    def remember_status(self, view: JobView, patch: Mapping[str, Any]) -> JobView:
        """Apply a status patch we just wrote, so the next event does not write it again
        before the watch stream brings the object back."""
        updated = dataclasses.replace(view, status={**view.status, **patch})
        with self._lock:
            current = self._views.get((view.namespace, view.name))
            if current is None or current.uid == view.uid:
                self._views[(view.namespace, view.name)] = updated
        return updated

    def in_phase(self, wanted: str) -> list[JobView]:
        with self._lock:
            return [view for view in self._views.values() if view.status.get("phase") == wanted]

    def phase_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(phase.PHASES, 0)
        with self._lock:
            for view in self._views.values():
                # No phase yet: the PyTorchJob has not reported; that is Pending to a user.
                counts[str(view.status.get("phase") or phase.PENDING)] += 1
        return counts


@dataclasses.dataclass(frozen=True)
class ChildView:
    owner_uids: frozenset[str]
    suspended: bool


class ChildCache:
    """Each child (PyTorchJob or TrainJob) by namespace and name: who owns it, and its
    suspend switch."""

    def __init__(self, suspended: Callable[[Mapping[str, Any]], bool]) -> None:
        self._suspended = suspended
        self._lock = threading.Lock()
        self._views: dict[tuple[str, str], ChildView] = {}

    def observe(self, child: Mapping[str, Any], *, deleted: bool = False) -> None:
        meta = child["metadata"]
        key = (meta["namespace"], meta["name"])
        owners = frozenset(str(ref.get("uid")) for ref in meta.get("ownerReferences") or [])
        with self._lock:
            if deleted:
                self._views.pop(key, None)
            else:
                self._views[key] = ChildView(owner_uids=owners, suspended=self._suspended(child))

    def remember_suspend(self, namespace: str, name: str, suspended: bool) -> None:
        """After patching the child's switch, before its watch event comes back."""
        with self._lock:
            view = self._views.get((namespace, name))
            if view is not None:
                self._views[(namespace, name)] = dataclasses.replace(view, suspended=suspended)

    def get(self, namespace: str, name: str) -> ChildView | None:
        with self._lock:
            return self._views.get((namespace, name))


class WorkloadCache:
    """Kueue's Workload of each queued child, by namespace and child name (fed by the
    Workloads' watch): the reason a queued job waits, without a GET per child event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workloads: dict[tuple[str, str], Mapping[str, Any]] = {}

    def observe(self, namespace: str, child_name: str, workload: Mapping[str, Any], *, deleted: bool = False) -> None:
        with self._lock:
            if deleted:
                self._workloads.pop((namespace, child_name), None)
            else:
                self._workloads[(namespace, child_name)] = workload

    def get(self, namespace: str, child_name: str) -> Mapping[str, Any] | None:
        with self._lock:
            return self._workloads.get((namespace, child_name))
