"""The chart's security policy, rendered: NetworkPolicies (the operator's, and the per-job one
the operator builds from the chart's settings), the spec.image allow-list and the priority
class rules, each followed from values -> Deployment env -> operator settings -> objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from chart_render import CHART, FULL_VALUES, KUBE_VERSION, ROOT, by_kind, one, run_helm, template

pytestmark = pytest.mark.cluster  # helm comes from the control plane's Go build


@pytest.fixture(scope="module")
def default_objects(helm: Path) -> list[dict[str, Any]]:
    return template(helm)


@pytest.fixture(scope="module")
def full_objects(helm: Path) -> list[dict[str, Any]]:
    return template(helm, "--values", str(FULL_VALUES), release="asr", namespace="ml-platform")


def operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def operator_settings(objects: list[dict[str, Any]]) -> Any:
    from speechtune_operator import settings  # noqa: PLC0415  (the operator's venv package)

    return settings.from_env(operator_env(objects))


def example_job(namespace: str = "speechtune-team-a") -> dict[str, Any]:
    job = dict(yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text()))
    job["metadata"].update(namespace=namespace, uid="0000")
    return job


def master_pod_template(job: dict[str, Any], config: Any) -> dict[str, Any]:
    from speechtune_operator.builders import pytorchjob  # noqa: PLC0415

    return dict(pytorchjob.build_pytorchjob(job, config)["spec"]["pytorchReplicaSpecs"]["Master"]["template"])


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items() and all(
        {"In": labels.get(e["key"]) in e.get("values", []), "Exists": e["key"] in labels}[e["operator"]]
        for e in selector.get("matchExpressions", []))


@pytest.mark.parametrize("which", ["default", "full"])
def test_operator_accepts_only_prometheus_on_its_metrics_port(which: str, default_objects: list[dict[str, Any]],
                                                               full_objects: list[dict[str, Any]]) -> None:
    objects = default_objects if which == "default" else full_objects
    values = yaml.safe_load((CHART / "values.yaml").read_text() if which == "default" else FULL_VALUES.read_text())
    policy = one(objects, "NetworkPolicy")
    pod = one(objects, "Deployment")["spec"]["template"]
    assert policy["metadata"]["namespace"] == one(objects, "Deployment")["metadata"]["namespace"]
    assert matches(policy["spec"]["podSelector"], pod["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = policy["spec"]["ingress"]
    # The admission webhook's port is open without a peer: the apiserver calls it and is no pod
    # a selector could name. Exactly that port, nothing else, when the webhook is on.
    webhook_rules = [r for r in rules if "from" not in r]
    webhook = {**yaml.safe_load((CHART / "values.yaml").read_text())["webhook"], **(values.get("webhook") or {})}
    if webhook["enabled"]:
        assert webhook_rules == [{"ports": [{"protocol": "TCP", "port": webhook["port"]}]}]
    else:
        assert webhook_rules == []
    (rule,) = [r for r in rules if "from" in r]
    (peer,) = rule["from"]
    assert peer == {"namespaceSelector": {"matchExpressions": [{
        "key": "kubernetes.io/metadata.name", "operator": "In",
        "values": values["networkPolicy"]["prometheusNamespaces"]}]}}
    metrics_port = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "metrics")
    assert rule["ports"] == [{"protocol": "TCP", "port": metrics_port}]  # not the health port, nothing else


def test_no_prometheus_namespaces_means_no_ingress_at_all(helm: Path) -> None:
    objects = template(helm, "--set-json", "networkPolicy.prometheusNamespaces=[]")
    # Nothing but the admission webhook's port (the apiserver's calls), which has no peer to name.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert one(objects, "NetworkPolicy")["spec"]["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": values["webhook"]["port"]}]}]
    from speechtune_operator.builders import networkpolicy  # noqa: PLC0415

    built = networkpolicy.build_networkpolicy(example_job(), operator_settings(objects))
    # Only the operator may reach the trainers' metrics; never a rule without peers.
    assert all(rule.get("from") for rule in built["spec"]["ingress"])


def test_the_per_job_policy_fences_the_pods_the_operator_makes(full_objects: list[dict[str, Any]]) -> None:
    """values -> env -> settings -> the job's NetworkPolicy, which must select the trainer
    pods built with the same settings and admit the chart's operator pod on the metrics port."""
    from speechtune_operator.builders import networkpolicy  # noqa: PLC0415

    config = operator_settings(full_objects)
    assert config.trainer_network_policy is True
    job = example_job()
    policy = networkpolicy.build_networkpolicy(job, config)
    template_ = master_pod_template(job, config)
    assert matches(policy["spec"]["podSelector"], template_["metadata"]["labels"])
    same_job, metrics = policy["spec"]["ingress"]
    assert matches(same_job["from"][0]["podSelector"], template_["metadata"]["labels"])  # rank to rank
    ports = {p["name"]: p["containerPort"] for p in template_["spec"]["containers"][0]["ports"]}
    assert metrics["ports"] == [{"protocol": "TCP", "port": ports["metrics"]}]
    operator_peer, prometheus_peer = metrics["from"]
    deployment = one(full_objects, "Deployment")
    assert operator_peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": deployment["metadata"]["namespace"]}
    assert matches(operator_peer["podSelector"], deployment["spec"]["template"]["metadata"]["labels"])
    values = yaml.safe_load(FULL_VALUES.read_text())
    assert prometheus_peer["namespaceSelector"]["matchExpressions"][0]["values"] == \
        values["networkPolicy"]["prometheusNamespaces"]


def test_network_policies_can_be_switched_off(helm: Path) -> None:
    objects = template(helm, "--set", "networkPolicy.enabled=false")
    assert not by_kind(objects, "NetworkPolicy")
    assert operator_settings(objects).trainer_network_policy is False
    resources = {r for role in by_kind(objects, "ClusterRole") for rule in role["rules"] for r in rule["resources"]}
    assert "networkpolicies" not in resources  # no right the operator does not use


def test_image_allow_list_and_priority_rules_reach_the_operator(helm: Path, full_objects: list[dict[str, Any]]) -> None:
    from speechtune_operator.builders import admission  # noqa: PLC0415

    config = operator_settings(full_objects)
    values = yaml.safe_load(FULL_VALUES.read_text())
    assert config.allowed_image_prefixes == tuple(values["trainers"]["allowedImagePrefixes"])
    assert admission.refusal({"image": "registry.example.com:5000/asr-team/mms:3"}, config) is None
    refused = admission.refusal({"image": "docker.io/library/python:3"}, config)
    assert refused is not None and refused.reason == "ImageNotAllowed"
    assert admission.refusal({"resources": {"priorityClassName": "system-node-critical"}}, config) is not None

    default = operator_settings(template(helm))
    assert default.refuse_unlisted_images and default.forbid_system_priority_classes
    assert default.allowed_image_prefixes == ()  # only the engine images by default

    pinned = template(helm, "--set", "trainers.priorityClass.default=training-batch",
                      "--set", "trainers.priorityClass.forbidSystem=false", "--set", "trainers.refuseUnlistedImages=false")
    config = operator_settings(pinned)
    assert master_pod_template(example_job(), config)["spec"]["priorityClassName"] == "training-batch"
    assert admission.refusal({"resources": {"priorityClassName": "system-node-critical"}}, config) is None
    tolerated = example_job()
    tolerated["spec"]["image"] = "docker.io/someone/trainer:1"
    assert admission.refusal(tolerated["spec"], config) is None
    env = {e["name"] for e in master_pod_template(tolerated, config)["spec"]["containers"][0]["env"]}
    assert "HF_TOKEN" not in env  # runs, but without the cluster's token


@pytest.mark.parametrize(("setting", "field"), [
    ("networkPolicy.enabled=maybe", "enabled"),
    ("networkPolicy.prometheusNamespaces={Monitoring}", "prometheusNamespaces"),
    ("trainers.allowedImagePrefixes={a\\,b}", "allowedImagePrefixes"),
    ("trainers.priorityClass.default=Not_A_Name", "default"),
    ("trainers.refuseUnlistedImages=sometimes", "refuseUnlistedImages"),
])
def test_schema_refuses_bad_policy_values(helm: Path, setting: str, field: str) -> None:
    done = run_helm(helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, "--set", setting, check=False)
    assert done.returncode != 0 and field in done.stderr
