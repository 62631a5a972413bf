"""Create (or find) a FinetuneJob's ConfigMap and its child (the backend's PyTorchJob or
TrainJob): on creation and on resume."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import backends, configmap, phase, podtemplate
from speechtune_operator.client import api, children, finetunejobs

logger = logging.getLogger(__name__)


def ensure_children(body: kopf.Body, *, settings: settings_mod.Settings, clients: api.Clients,
                    backend: backends.Backend = backends.PYTORCHJOB) -> None:
    status = body.get("status") or {}
    if status.get("phase") in phase.FINISHED:
        # Its child may be gone (ttlSecondsAfterFinished); recreating it would train again.
        return
    try:
        child = backend.build(body, settings)
    except podtemplate.Unsupported as error:
        # The spec is valid, but this cluster's backend cannot run it: say so once, no retry.
        message = f"backend {backend.name}: {error}"
        finetunejobs.patch_status(clients, body["metadata"]["namespace"], body["metadata"]["name"],
                                  {"phase": phase.FAILED, "message": message})
        kopf.event(body, type="Warning", reason="UnsupportedByBackend", message=message)
        return
    objects = [configmap.build_configmap(body), child]
    kopf.adopt(objects, owner=body)
    stored_cm, _ = children.create_or_get_configmap(clients, objects[0])
    stored_child, created = children.create_or_get_child(clients, backend.child, objects[1])
    for stored in (stored_cm, stored_child):
        _check_owner(stored, body)
    if created:
        kind = backend.child.kind
        kopf.event(body, type="Normal", reason=f"{kind}Created",
                   message=f"created {kind} {stored_child['metadata']['name']}")
    # No status write here: the child's first watch event brings phase, its name and
    # observedGeneration in one patch (mirroring), one write per job fewer under a burst.


def _check_owner(child: dict[str, Any], body: kopf.Body) -> None:
    owners = [ref.get("uid") for ref in child.get("metadata", {}).get("ownerReferences") or []]
    if body["metadata"]["uid"] not in owners:
        # A namesake child of a deleted FinetuneJob of the same name, not yet collected.
        kind, name = child.get("kind", "child"), child.get("metadata", {}).get("name")
        raise kopf.TemporaryError(f"{kind} {name} belongs to an earlier {names.KIND}; "
                                  "waiting for garbage collection", delay=2)

