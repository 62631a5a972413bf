"""Kubernetes API clients, configured once at start-up."""

from __future__ import annotations

import dataclasses
import http
import os
from typing import Any, Mapping, Sequence, cast

import kubernetes


@dataclasses.dataclass(frozen=True)
class Clients:
    custom: kubernetes.client.CustomObjectsApi

    def plain(self, obj: object) -> dict[str, Any]:
        """A typed client model (V1Pod, ...) or a custom-object response as the camelCase
        dict the API speaks."""
        return cast(dict[str, Any], self.custom.api_client.sanitize_for_serialization(obj))

    def get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        """GET of a core-API path (e.g. /api/v1/namespaces/ns/pods/name) through the client's
        ApiClient (credentials, TLS, connection pool, ApiException on errors), as a dict.

        Not CoreV1Api: its generated module is 4.5 MB of Python, and importing it costs
        the operator 16 MiB of resident memory (78 MiB where no bytecode cache exists, as
        in a venv installed without compiling) for the two pod reads the operator makes.
        """
        client = self.custom.api_client
        method, url, headers, body, post = client.param_serialize(
            method="GET", resource_path=path, query_params=list(query),
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        response = client.call_api(method, url, header_params=headers, body=body, post_params=post)
        response.read()
        return cast(dict[str, Any], client.response_deserialize(response, {"200": "object"}).data)


def post(clients: Clients, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """POST of an object to a built-in API's collection path (e.g.
    /apis/networking.k8s.io/v1/namespaces/ns/networkpolicies), as Clients.get does GETs:
    the typed NetworkingV1Api would cost its generated module's memory for one create."""
    client = clients.custom.api_client
    method, url, headers, sent, post_params = client.param_serialize(
        method="POST", resource_path=path, body=dict(body),
        header_params={"Accept": "application/json", "Content-Type": "application/json"},
        auth_settings=["BearerToken"])
    response = client.call_api(method, url, header_params=headers, body=sent, post_params=post_params)
    response.read()
    return cast(dict[str, Any], client.response_deserialize(response, {"201": "object", "200": "object"}).data)


def load_configuration(kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """In-cluster credentials inside a pod, else the kubeconfig file (default: $KUBECONFIG,
    then ~/.kube/config). Read again on every call, so rotated tokens are picked up."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    else:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig or os.environ.get("KUBECONFIG"), client_configuration=configuration)
    return configuration


def bearer_token(configuration: kubernetes.client.Configuration) -> str | None:
    header = (configuration.get_api_key_with_prefix("BearerToken")
              or configuration.get_api_key_with_prefix("authorization"))
    return header.split(" ", 1)[-1] if header else None


def connect(*, pool_size: int, kubeconfig: str | None = None) -> Clients:
    configuration = load_configuration(kubeconfig)
    # Handlers run in a thread pool; without a pool per thread they queue on one connection.
    configuration.connection_pool_maxsize = pool_size
    return Clients(custom=kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(configuration)))


def is_status(error: BaseException, *codes: int) -> bool:
    return isinstance(error, kubernetes.client.ApiException) and error.status in codes


def describe_error(error: BaseException) -> str:
    """A short description of a failed call made of our words only: the HTTP status of an API
    error (its body echoes the request, which may hold user data), else the exception's type."""
    if isinstance(error, kubernetes.client.ApiException) and error.status:
        try:
            return f"Kubernetes API {error.status} {http.HTTPStatus(error.status).phrase}"
        except ValueError:
            return f"Kubernetes API {error.status}"
    return type(error).__name__
