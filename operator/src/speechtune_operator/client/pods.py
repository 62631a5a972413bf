"""The trainer pods of a FinetuneJob's child, found by label (the backend says which)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from speechtune_operator.client import api


def get(clients: api.Clients, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return clients.get(f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}")
    except Exception as error:
        if api.is_status(error, 404):
            return None
        raise


def matching(clients: api.Clients, namespace: str, selector: str) -> list[dict[str, Any]]:
    listed = clients.get(f"/api/v1/namespaces/{quote(namespace)}/pods", [("labelSelector", selector)])
    return list(listed.get("items") or [])
