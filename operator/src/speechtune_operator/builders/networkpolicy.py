"""The NetworkPolicy that fences one FinetuneJob's trainer pods (made when the operator's
setting trainer_network_policy is on; the chart turns it on by default).

Ingress to the job's pods: from the pods of the same job on any port (the rendezvous port,
and NCCL/gloo, which open data channels on ephemeral ports between ranks), and on the
metrics port from the operator's pod and the Prometheus namespaces only. Nothing else.
Egress stays open: trainers may need the model hub or an object store.

One policy per job, not one per namespace, because a NetworkPolicy peer cannot say "pods
with the same label value as the target": only a selector naming the job can.
"""

from __future__ import annotations

from typing import Any, Mapping

from speechtune_operator import settings as settings_mod
from speechtune_operator import names

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the apiserver on every namespace


def build_networkpolicy(body: Mapping[str, Any], settings: settings_mod.Settings) -> dict[str, Any]:
    meta = body["metadata"]
    job_pods = {"matchLabels": {names.LABEL_JOB: meta["name"]}}
    ingress: list[dict[str, Any]] = [{"from": [{"podSelector": job_pods}]}]
    scrapers = metrics_peers(settings)
    if scrapers:  # an ingress rule without peers would admit everyone
        ingress.append({"from": scrapers,
                        "ports": [{"protocol": "TCP", "port": settings.trainer_metrics_port}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": names.networkpolicy_name(meta["name"]), "namespace": meta["namespace"],
                     "labels": names.child_labels(body)},
        "spec": {"podSelector": job_pods, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def metrics_peers(settings: settings_mod.Settings) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = []
    if settings.operator_namespace:
        peer: dict[str, Any] = {"namespaceSelector": {
            "matchLabels": {NAMESPACE_NAME_LABEL: settings.operator_namespace}}}
        labels = dict(item.split("=", 1) for item in settings.operator_pod_labels)
        if labels:
            peer["podSelector"] = {"matchLabels": labels}
        peers.append(peer)
    if settings.prometheus_namespaces:
        peers.append({"namespaceSelector": {"matchExpressions": [
            {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(settings.prometheus_namespaces)}]}})
    return peers
