"""Create (or find) a FinetuneJob's ConfigMap and PyTorchJob: on creation and on resume."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import configmap, phase, pytorchjob
from speechtune_operator.client import api, children

logger = logging.getLogger(__name__)


def ensure_children(body: kopf.Body, *, settings: settings_mod.Settings,
                    clients: api.Clients) -> None:
    status = body.get("status") or {}
    if status.get("phase") in phase.FINISHED:
        # Its PyTorchJob may be gone (ttlSecondsAfterFinished); recreating it would train again.
        return
    objects = [configmap.build_configmap(body), pytorchjob.build_pytorchjob(body, settings)]
    kopf.adopt(objects, owner=body)
    stored_cm, _ = children.create_or_get_configmap(clients, objects[0])
    stored_pj, created = children.create_or_get_pytorchjob(clients, objects[1])
    for stored in (stored_cm, stored_pj):
        _check_owner(stored, body)
    if created:
        kopf.event(body, type="Normal", reason="PyTorchJobCreated",
                   message=f"created PyTorchJob {stored_pj['metadata']['name']}")
    # No status write here: the PyTorchJob's first watch event brings phase, pytorchJob and
    # observedGeneration in one patch (mirroring), one write per job fewer under a burst.


def _check_owner(child: dict[str, Any], body: kopf.Body) -> None:
    owners = [ref.get("uid") for ref in child.get("metadata", {}).get("ownerReferences") or []]
    if body["metadata"]["uid"] not in owners:
        # A namesake child of a deleted FinetuneJob of the same name, not yet collected.
        kind, name = child.get("kind", "child"), child.get("metadata", {}).get("name")
        raise kopf.TemporaryError(f"{kind} {name} belongs to an earlier {names.KIND}; "
                                  "waiting for garbage collection", delay=2)

