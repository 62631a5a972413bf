"""Kubernetes API clients, configured once at start-up."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, cast

import kubernetes


@dataclasses.dataclass(frozen=True)
class Clients:
    core: kubernetes.client.CoreV1Api
    custom: kubernetes.client.CustomObjectsApi

    def plain(self, obj: object) -> dict[str, Any]:
        """A typed client model (V1Pod, ...) or a custom-object response as the camelCase
        dict the API speaks."""
        return cast(dict[str, Any], self.core.api_client.sanitize_for_serialization(obj))


def connect(*, pool_size: int, kubeconfig: str | None = None) -> Clients:
    """In-cluster credentials inside a pod, else $KUBECONFIG / ~/.kube/config."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    else:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration)
    # Handlers run in a thread pool; without a pool per thread they queue on one connection.
    configuration.connection_pool_maxsize = pool_size
    api = kubernetes.client.ApiClient(configuration)
    return Clients(core=kubernetes.client.CoreV1Api(api), custom=kubernetes.client.CustomObjectsApi(api))


def is_status(error: BaseException, *codes: int) -> bool:
    return isinstance(error, kubernetes.client.ApiException) and error.status in codes
