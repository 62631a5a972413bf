"""Reads of FinetuneJobs and merge-patches of their status subresource."""

from __future__ import annotations

from typing import Any, Mapping

from speechtune_operator import names
from speechtune_operator.client import api

_FTJ = (names.GROUP, names.VERSION)


def get(clients: api.Clients, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return clients.plain(clients.custom.get_namespaced_custom_object(*_FTJ, namespace, names.PLURAL, name))
    except Exception as error:
        if api.is_status(error, 404):
            return None
        raise


def patch_status(clients: api.Clients, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
    """Merge-patch .status; False when the FinetuneJob is gone."""
    try:
        clients.custom.patch_namespaced_custom_object_status(
            *_FTJ, namespace, names.PLURAL, name, {"status": dict(status)})
        return True
    except Exception as error:
        if api.is_status(error, 404):
            return False
        raise
