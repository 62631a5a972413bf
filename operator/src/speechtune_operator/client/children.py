"""Create-or-get of a FinetuneJob's ConfigMap and PyTorchJob, and the suspend switch."""

from __future__ import annotations

from typing import Any, Mapping

from speechtune_operator import names
from speechtune_operator.client import api

_PJ = (names.PYTORCHJOB_GROUP, names.PYTORCHJOB_VERSION)


def create_or_get_configmap(clients: api.Clients, configmap: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the object as stored, whether this call created it). 409 means someone (an earlier
    run of the same handler) made it already: read that one instead."""
    meta = configmap["metadata"]
    try:
        made = clients.core.create_namespaced_config_map(meta["namespace"], dict(configmap))  # type: ignore[arg-type]  # the client sends dicts as they are
        return _created(clients, made, configmap), True
    except Exception as error:
        if not api.is_status(error, 409):
            raise
    return clients.plain(clients.core.read_namespaced_config_map(meta["name"], meta["namespace"])), False


def create_or_get_pytorchjob(clients: api.Clients, pytorchjob: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    meta = pytorchjob["metadata"]
    try:
        made = clients.custom.create_namespaced_custom_object(
            *_PJ, meta["namespace"], names.PYTORCHJOB_PLURAL, dict(pytorchjob))
        return _created(clients, made, pytorchjob), True
    except Exception as error:
        if not api.is_status(error, 409):
            raise
    return get_pytorchjob(clients, meta["namespace"], meta["name"]) or {}, False


def get_pytorchjob(clients: api.Clients, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return clients.plain(clients.custom.get_namespaced_custom_object(
            *_PJ, namespace, names.PYTORCHJOB_PLURAL, name))
    except Exception as error:
        if api.is_status(error, 404):
            return None
        raise


def set_pytorchjob_suspend(clients: api.Clients, namespace: str, name: str, suspend: bool) -> bool:
    """False when there is no PyTorchJob (yet, or any more) to suspend or resume."""
    try:
        clients.custom.patch_namespaced_custom_object(
            *_PJ, namespace, names.PYTORCHJOB_PLURAL, name, {"spec": {"runPolicy": {"suspend": suspend}}})
        return True
    except Exception as error:
        if api.is_status(error, 404):
            return False
        raise


def _created(clients: api.Clients, made: object, sent: Mapping[str, Any]) -> dict[str, Any]:
    # The client maps only a 201 answer to an object; a server answering 200 (kmock does)
    # yields None. What we sent is then the best account of what now exists.
    return clients.plain(made) if made is not None else dict(sent)
