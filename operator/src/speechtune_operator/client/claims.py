"""PersistentVolumeClaims a job mounts: only their access modes are read."""

from __future__ import annotations

from urllib.parse import quote

from speechtune_operator.client import api


def access_modes(clients: api.Clients, namespace: str, name: str) -> list[str] | None:
    """The claim's spec.accessModes; None when it does not exist."""
    try:
        claim = clients.get(f"/api/v1/namespaces/{quote(namespace)}/persistentvolumeclaims/{quote(name)}")
    except Exception as error:
        if api.is_status(error, 404):
            return None
        raise
    return [str(mode) for mode in (claim.get("spec") or {}).get("accessModes") or []]
