"""Where the operator may scrape a job's metrics: only its own rank-0 pod, as the API
describes that pod, on the port the operator itself configured. Nothing a user writes on the
FinetuneJob (annotations, labels, spec) takes part, so no user can point the fetch anywhere.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any, Mapping

METRICS_PORT_NAME = "metrics"


@dataclasses.dataclass(frozen=True)
class Target:
    host: str  # an IP literal
    port: int


def rank0_target(pod: Mapping[str, Any], *, container: str, port: int,
                 host_override: str = "") -> Target | None:
    """The pod's podIP and `port`, or None when this pod is not one to scrape: not Running,
    no IP yet, on the host's network (its IP would be the node's, and any port on it a node
    service), or its trainer `container`'s port named `metrics` is not `port` (the
    operator's own setting, which it wrote into the pod template).

    `host_override` is the operator's own test setting (a loopback address standing in for
    the pod network, which does not exist under kwok); no Kubernetes object can set it.
    """
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if status.get("phase") != "Running" or spec.get("hostNetwork"):
        return None
    if metrics_port(spec, container) != port:
        return None
    host = host_override or str(status.get("podIP") or "")
    return Target(host=host, port=port) if _is_ip(host) else None


def metrics_port(pod_spec: Mapping[str, Any], container: str) -> int | None:
    for candidate in pod_spec.get("containers") or []:
        if candidate.get("name") != container:
            continue
        for port in candidate.get("ports") or []:
            number = port.get("containerPort")
            if (port.get("name") == METRICS_PORT_NAME and isinstance(number, int)
                    and not isinstance(number, bool) and 0 < number < 65536):
                return number
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
