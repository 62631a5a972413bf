"""The per-job NetworkPolicy: same-job pods on any port, the metrics port from the operator
and Prometheus only, nothing else; never an ingress rule that admits everyone."""

from __future__ import annotations

from typing import Any

import ftj_crd as crdtools
from speechtune_operator import names, settings
from speechtune_operator.builders import backends, networkpolicy

FENCED = settings.Settings(trainer_network_policy=True, operator_namespace="speechtune-system",
                           operator_pod_labels=("app.kubernetes.io/name=speechtune", "app.kubernetes.io/instance=st"),
                           prometheus_namespaces=("monitoring", "observability"), trainer_metrics_port=9500)


def policy(config: settings.Settings = FENCED) -> dict[str, Any]:
    return networkpolicy.build_networkpolicy(crdtools.stored("speechbrain-atc0"), config)


def test_the_jobs_pods_and_only_they_are_fenced() -> None:
    built = policy()
    assert built["metadata"] == {"name": "sb-conformer-atc0-lora-trainers", "namespace": "research",
                                 "labels": names.child_labels(crdtools.stored("speechbrain-atc0"))}
    assert built["spec"]["podSelector"] == {"matchLabels": {names.LABEL_JOB: "sb-conformer-atc0-lora"}}
    assert built["spec"]["policyTypes"] == ["Ingress"]  # egress (model hub, object store) stays open


def test_same_job_pods_on_any_port_metrics_from_the_operator_and_prometheus() -> None:
    same_job, metrics = policy()["spec"]["ingress"]
    # Any port between ranks: rendezvous, and NCCL/gloo data channels on ephemeral ports.
    assert same_job == {"from": [{"podSelector": {"matchLabels": {names.LABEL_JOB: "sb-conformer-atc0-lora"}}}]}
    assert metrics["ports"] == [{"protocol": "TCP", "port": 9500}]
    operator, prometheus = metrics["from"]
    assert operator == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "speechtune-system"}},
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "speechtune",
                                                        "app.kubernetes.io/instance": "st"}}}
    assert prometheus["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring", "observability"]}]


def test_without_scrapers_there_is_no_open_rule() -> None:
    # An ingress rule with no `from` admits every source: it must not appear at all.
    (only,) = policy(settings.Settings(trainer_network_policy=True))["spec"]["ingress"]
    assert only["from"] and "ports" not in only


def test_the_policy_selects_the_pods_each_backend_makes() -> None:
    body = crdtools.stored("speechbrain-atc0")
    selector = policy()["spec"]["podSelector"]["matchLabels"]
    for backend in backends.BACKENDS.values():
        child = backend.build(body, FENCED)
        templates = [child]
        found = []
        while templates:  # every pod template inside the child, however deep
            node = templates.pop()
            if isinstance(node, dict):
                if "template" in node and isinstance(node["template"], dict) and "spec" in node["template"] \
                        and "containers" in node["template"]["spec"]:
                    found.append(node["template"])
                templates.extend(node.values())
            elif isinstance(node, list):
                templates.extend(node)
        assert found, f"no pod template in the {backend.name} child"
        for template in found:
            assert selector.items() <= template["metadata"]["labels"].items(), backend.name
