"""Create-or-get of a FinetuneJob's child (PyTorchJob or TrainJob), and merge-patches of
the child (the suspend switch)."""

from __future__ import annotations

from typing import Any, Mapping

from speechtune_operator import names
from speechtune_operator.client import api


def create_or_get_networkpolicy(clients: api.Clients, policy: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The job's NetworkPolicy as stored, and whether this call created it (409: read it)."""
    meta = policy["metadata"]
    collection = f"/apis/networking.k8s.io/v1/namespaces/{meta['namespace']}/networkpolicies"
    try:
        return api.post(clients, collection, policy), True
    except Exception as error:
        if not api.is_status(error, 409):
            raise
    return clients.get(f"{collection}/{meta['name']}"), False


def create_or_get_child(clients: api.Clients, kind: names.ChildKind,
                        child: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The PyTorchJob or TrainJob as stored, and whether this call created it. 409 means
    someone (an earlier run of the same handler) made it already: read that one instead."""
    meta = child["metadata"]
    try:
        made = clients.custom.create_namespaced_custom_object(
            kind.group, kind.version, meta["namespace"], kind.plural, dict(child))
        return _created(clients, made, child), True
    except Exception as error:
        if not api.is_status(error, 409):
            raise
    return get_child(clients, kind, meta["namespace"], meta["name"]) or {}, False


def get_child(clients: api.Clients, kind: names.ChildKind, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return clients.plain(clients.custom.get_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, name))
    except Exception as error:
        if api.is_status(error, 404):
            return None
        raise


def patch_child(clients: api.Clients, kind: names.ChildKind, namespace: str, name: str,
                patch: Mapping[str, Any]) -> bool:
    """Merge-patch the child (e.g. its suspend switch); False when there is none (yet, or any more)."""
    try:
        clients.custom.patch_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, name, dict(patch))
        return True
    except Exception as error:
        if api.is_status(error, 404):
            return False
        raise


def _created(clients: api.Clients, made: object, sent: Mapping[str, Any]) -> dict[str, Any]:
    # The client maps only a 201 answer to an object; a server answering 200 (kmock does)
    # yields None. What we sent is then the best account of what now exists.
    return clients.plain(made) if made is not None else dict(sent)
