"""Kueue's Workloads of queued children: their reason goes into the FinetuneJob's status
(phase Queued), and their spec.active follows the user's runPolicy.suspend."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from speechtune_operator import names
from speechtune_operator.builders import backends, queueing
from speechtune_operator.client import api, children
from speechtune_operator.handlers import jobcache, mirroring

logger = logging.getLogger(__name__)


def owner_child(workload: Mapping[str, Any], kind: names.ChildKind) -> str | None:
    """The name of the child (of the backend's kind) that the Workload was made for."""
    for ref in workload.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == kind.kind and ref.get("apiVersion") == kind.api_version:
            return str(ref["name"])
    return None


def sync_workload(workload: Mapping[str, Any], child_name: str, *, clients: api.Clients,
                  cache: jobcache.JobCache, workloads: jobcache.WorkloadCache,
                  backend: backends.Backend = backends.PYTORCHJOB) -> None:
    namespace = workload["metadata"]["namespace"]
    child = children.get_child(clients, backend.child, namespace, child_name)
    if child is None or names.LABEL_JOB not in (child["metadata"].get("labels") or {}):
        return  # not ours
    set_active(workload, user_suspended=backend.user_suspended(child), clients=clients)
    mirroring.sync_from_child(child, clients=clients, cache=cache, backend=backend, workloads=workloads)


def set_active(workload: Mapping[str, Any], *, user_suspended: bool, clients: api.Clients) -> None:
    """Deactivate (suspend) or activate (resume) the Workload, when it is not so already.
    A job created suspended gets its Workload deactivated here, when Kueue makes it."""
    patch = queueing.active_patch(workload, user_suspended=user_suspended)
    if patch is None:
        return
    meta = workload["metadata"]
    children.patch_child(clients, names.WORKLOAD, meta["namespace"], meta["name"], patch)
    logger.info("Workload %s/%s: active=%s", meta["namespace"], meta["name"], patch["spec"]["active"])
