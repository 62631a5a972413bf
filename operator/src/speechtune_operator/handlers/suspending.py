"""spec.runPolicy.suspend: true suspends the child (its pods go away), false resumes it."""

from __future__ import annotations

import logging

import kopf

from speechtune_operator import names
from speechtune_operator.builders import backends
from speechtune_operator.client import api, children
from speechtune_operator.handlers import jobcache

logger = logging.getLogger(__name__)


def apply_suspend(body: kopf.Body, suspend: bool, patch: kopf.Patch, *, clients: api.Clients,
                  seen: jobcache.ChildCache, backend: backends.Backend = backends.PYTORCHJOB) -> None:
    meta = body["metadata"]
    name = names.child_name(meta["name"])
    found = children.patch_child(clients, backend.child, meta["namespace"], name, backend.suspend_patch(suspend))
    # Handled (kopf's diff-base is this cache): not again when the next event of the job
    # comes before the child's own.
    seen.remember_suspend(meta["namespace"], name, suspend)
    if not found:
        logger.info("no %s for %s/%s to %s", backend.child.kind, meta["namespace"], meta["name"],
                    "suspend" if suspend else "resume")
    patch.status["observedGeneration"] = meta.get("generation")
