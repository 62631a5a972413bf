"""spec.runPolicy.suspend: true suspends the child (its pods go away), false resumes it.

A queued child's switch is Kueue's: the user's is recorded in its annotation, and reaches
Kueue as the Workload's spec.active (handlers/queueing.py)."""

from __future__ import annotations

import logging

import kopf

from speechtune_operator import names
from speechtune_operator.builders import backends, queueing as queueing_builder
from speechtune_operator.client import api, children
from speechtune_operator.handlers import jobcache, queueing

logger = logging.getLogger(__name__)


def apply_suspend(body: kopf.Body, suspend: bool, patch: kopf.Patch, *, clients: api.Clients,
                  seen: jobcache.ChildCache, backend: backends.Backend = backends.PYTORCHJOB,
                  workloads: jobcache.WorkloadCache | None = None) -> None:
    meta = body["metadata"]
    name = names.child_name(meta["name"])
    if queueing_builder.queue_name(body["spec"]):
        found = children.patch_child(clients, backend.child, meta["namespace"], name,
                                     {"metadata": {"annotations": queueing_builder.suspend_annotations(suspend)}})
        workload = workloads.get(meta["namespace"], name) if workloads else None
        if workload is not None:
            queueing.set_active(workload, user_suspended=suspend, clients=clients)
    else:
        found = children.patch_child(clients, backend.child, meta["namespace"], name, backend.suspend_patch(suspend))
    # Handled (kopf's diff-base is this cache): not again when the next event of the job
    # comes before the child's own.
    seen.remember_suspend(meta["namespace"], name, suspend)
    if not found:
        logger.info("no %s for %s/%s to %s", backend.child.kind, meta["namespace"], meta["name"],
                    "suspend" if suspend else "resume")
    patch.status["observedGeneration"] = meta.get("generation")
