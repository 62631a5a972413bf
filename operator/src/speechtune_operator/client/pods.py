"""The trainer pods of a FinetuneJob's child, found by label (the backend says which)."""

from __future__ import annotations

from typing import Any

from speechtune_operator.client import api


def get(clients: api.Clients, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return clients.plain(clients.core.read_namespaced_pod(name, namespace))
    except Exception as error:
        if api.is_status(error, 404):
            return None
        raise


def matching(clients: api.Clients, namespace: str, selector: str) -> list[dict[str, Any]]:
    listed = clients.core.list_namespaced_pod(namespace, label_selector=selector)
    return [clients.plain(pod) for pod in listed.items]
