"""Mirror a child's state (PyTorchJob or TrainJob, read by the backend's status reader) into
its FinetuneJob's status, with an Event per transition."""

from __future__ import annotations

import logging
from typing import Any, Mapping, cast

import kopf

from speechtune_operator import names
from speechtune_operator.builders import backends, phase, queueing
from speechtune_operator.client import api, finetunejobs, pods
from speechtune_operator.handlers import jobcache

logger = logging.getLogger(__name__)


def sync_from_child(child: Mapping[str, Any], *, clients: api.Clients, cache: jobcache.JobCache,
                    backend: backends.Backend = backends.PYTORCHJOB,
                    workloads: jobcache.WorkloadCache | None = None) -> None:
    if not child.get("status"):
        # Just created; its controller has not reconciled it yet. Its first status (Created,
        # Suspended, ...) follows within moments: one status write then, not two.
        return
    view = _parent(child, clients=clients, cache=cache)
    if view is None:
        return
    current = view.status
    desired = phase.desired_status(child, reader=backend.read)
    if desired["phase"] == phase.FAILED:
        if current.get("phase") == phase.FAILED:
            desired["message"] = current.get("message", desired["message"])  # keep the pod's reason
        else:
            job_pods = pods.matching(clients, view.namespace, backend.pods_selector(child["metadata"]["name"]))
            failure = phase.first_failure(job_pods, backend.container, backend.is_rank0)
            desired = phase.desired_status(child, failure, reader=backend.read)
    queue = (child["metadata"].get("labels") or {}).get(names.LABEL_KUEUE_QUEUE)
    if queue:
        workload = workloads.get(view.namespace, child["metadata"]["name"]) if workloads else None
        desired = queueing.apply(desired, queue=queue, user_suspended=backend.user_suspended(child),
                                 child_suspended=backend.suspended(child), workload=workload)
    # The spec generation this status describes: only runPolicy.suspend can change after
    # creation, and the suspend handler has acted on it before its effect shows up here.
    desired["observedGeneration"] = view.generation
    patch = phase.status_patch(current, desired)
    if not patch:
        return
    if not finetunejobs.patch_status(clients, view.namespace, view.name, patch):
        return
    cache.remember_status(view, patch)
    event = phase.transition_event(current.get("phase"), desired["phase"], desired["message"],
                                   old_message=current.get("message"))
    if event is not None:
        kopf.event(kopf.Body(cast(kopf.RawBody, names.object_ref(view.ref()))), type=event.type, reason=event.reason, message=event.message)


def _parent(child: Mapping[str, Any], *, clients: api.Clients,
            cache: jobcache.JobCache) -> jobcache.JobView | None:
    name = names.owner_name(child)
    namespace = child["metadata"]["namespace"]
    if name is None:
        return None
    view = cache.get(namespace, name)
    if view is None:  # the FinetuneJob's own watch has not delivered it yet
        body = finetunejobs.get(clients, namespace, name)
        if body is None:
            return None
        cache.observe(body)
        view = jobcache.JobView.of(body)
    owner_uids = {ref.get("uid") for ref in child["metadata"].get("ownerReferences") or []}
    if owner_uids and view.uid not in owner_uids:
        logger.debug("%s %s/%s belongs to an earlier FinetuneJob", child.get("kind"), namespace, name)
        return None
    return view
