"""spec.runPolicy.suspend: true suspends the PyTorchJob (its pods go away), false resumes it."""

from __future__ import annotations

import logging

import kopf

from speechtune_operator import names
from speechtune_operator.client import api, children

logger = logging.getLogger(__name__)


def apply_suspend(body: kopf.Body, suspend: bool, patch: kopf.Patch, *, clients: api.Clients) -> None:
    meta = body["metadata"]
    found = children.set_pytorchjob_suspend(
        clients, meta["namespace"], names.pytorchjob_name(meta["name"]), suspend)
    if not found:
        logger.info("no PyTorchJob for %s/%s to %s", meta["namespace"], meta["name"],
                    "suspend" if suspend else "resume")
    patch.status["observedGeneration"] = meta.get("generation")
