"""The local control plane's configuration, checked without starting it: loopback-only
command lines, the kwok lifecycle the other tests rely on, the fake GPU nodes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack" / "cluster"))

from localcluster import commandlines, layout, trainer_v2, training_operator, versions  # noqa: E402

MANIFESTS = REPO / "hack" / "cluster" / "manifests"


@pytest.fixture
def ports() -> dict[str, int]:
    return commandlines.pick_ports()


@pytest.fixture
def tmp_layout(tmp_path: Path) -> layout.Layout:
    return layout.Layout(root=tmp_path)


def stages() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((MANIFESTS / "kwok-stages.yaml").read_text())
    return {doc["metadata"]["name"]: doc for doc in docs}


def test_every_component_listens_on_loopback_only(ports: dict[str, int], tmp_layout: layout.Layout) -> None:
    bins = versions.binaries(versions.ALL_COMPONENTS)
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "training-operator"):
        args = " ".join(commandlines.argv(name, bins, tmp_layout, ports))
        assert "0.0.0.0" not in args, name
        assert "127.0.0.1" in args, name
    assert len(set(ports.values())) == len(ports)
    # JobSet and Trainer v2 take theirs from a config file: every address there is loopback.
    assert "--metrics-bind-address=0" in commandlines.argv("jobset", bins, tmp_layout, ports)
    for config in (trainer_v2.jobset_config(tmp_layout, ports), trainer_v2.trainer_config(ports)):
        assert config["webhook"]["host"] == "127.0.0.1"
        assert config["health"]["healthProbeBindAddress"].startswith("127.0.0.1:")
        assert config["leaderElection"] == {"leaderElect": False}
    assert trainer_v2.trainer_config(ports)["metrics"]["bindAddress"].startswith("127.0.0.1:")


def test_trainjob_webhooks_are_called_at_loopback_and_pod_webhooks_only_for_jobset_pods(tmp_layout: layout.Layout) -> None:
    tmp_layout.pki.mkdir(parents=True)
    (tmp_layout.pki / "webhook-ca.crt").write_text("not a real certificate")
    manifests = """
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: mutating-webhook-configuration}
webhooks:
- name: mpod.kb.io
  clientConfig: {service: {name: webhook-service, namespace: system, path: /mutate--v1-pod}}
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}]
- name: mjobset.kb.io
  clientConfig: {service: {name: webhook-service, namespace: system, path: /mutate-jobset}}
  rules: [{apiGroups: [jobset.x-k8s.io], apiVersions: [v1alpha2], operations: [CREATE], resources: [jobsets]}]
"""
    [config] = trainer_v2.webhook_configurations(tmp_layout, manifests, 4321, "jobset")
    assert config["metadata"]["name"] == "jobset-mutating-webhook-configuration"
    pod, jobset = config["webhooks"]
    assert pod["clientConfig"]["url"] == "https://127.0.0.1:4321/mutate--v1-pod"
    assert pod["objectSelector"]["matchExpressions"][0]["key"] == "jobset.sigs.k8s.io/jobset-name"
    assert "objectSelector" not in jobset


def test_training_operator_runs_pytorchjob_only_without_gang_scheduling(ports: dict[str, int], tmp_layout: layout.Layout) -> None:
    args = commandlines.argv("training-operator", versions.binaries(), tmp_layout, ports)
    assert "--enable-scheme=pytorchjob" in args
    assert "--gang-scheduler-name=" in args
    env = commandlines.env("training-operator", tmp_layout)
    assert env is not None and env["KUBECONFIG"] == str(tmp_layout.kubeconfig)


def test_webhook_is_called_at_the_operators_loopback_port(tmp_layout: layout.Layout) -> None:
    tmp_layout.pki.mkdir(parents=True)
    (tmp_layout.pki / "webhook-ca.crt").write_text("not a real certificate")
    config = training_operator.webhook_configuration(tmp_layout, 12345)
    (webhook,) = config["webhooks"]
    assert webhook["clientConfig"]["url"] == "https://127.0.0.1:12345/validate-kubeflow-org-v1-pytorchjob"
    assert webhook["rules"][0]["resources"] == ["pytorchjobs"]


@pytest.mark.parametrize(("outcome", "phase", "exit_code"), [("succeed", "Succeeded", 0), ("fail", "Failed", 1)])
def test_an_outcome_annotation_ends_a_running_pod(outcome: str, phase: str, exit_code: int) -> None:
    stage = stages()[f"speechtune-pod-{outcome}"]
    selector = {e["key"]: e for e in stage["spec"]["selector"]["matchExpressions"]}
    assert selector['.metadata.annotations["speechtune.dev/kwok-outcome"]']["values"] == [outcome]
    assert selector[".status.phase"]["values"] == ["Running"]
    template = stage["spec"]["next"]["statusTemplate"]
    assert f"phase: {phase}" in template
    assert f"exitCode: {exit_code}" in template
    assert "running: null" in template  # a terminated container must not stay running


def test_pods_become_running_without_an_annotation() -> None:
    ready = stages()["pod-ready"]
    keys = {e["key"] for e in ready["spec"]["selector"]["matchExpressions"]}
    assert not any("annotations" in key for key in keys)
    assert "phase: Running" in ready["spec"]["next"]["statusTemplate"]


def test_fake_nodes_offer_eight_gpus_each() -> None:
    nodes = yaml.safe_load((MANIFESTS / "gpu-nodes.yaml").read_text())["items"]
    assert len(nodes) >= 2
    for node in nodes:
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"]
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"


def test_each_component_has_its_own_cache_folder_keyed_by_its_version() -> None:
    bins = versions.binaries(versions.ALL_COMPONENTS)
    assert bins.path("kube-apiserver").parent.name == f"kubernetes-{versions.KUBERNETES}"
    assert bins.path("trainer-controller-manager").parent.name == f"trainer-{versions.TRAINER}"
    assert bins.path("jobset").parent.name == f"jobset-{versions.JOBSET}"
    assert bins.crd_path("trainer.kubeflow.org_trainjobs.yaml").parent.parent.name == f"trainer-{versions.TRAINER}"
    assert len(set(bins.dirs)) == len(versions.ALL_COMPONENTS)


def test_an_older_all_in_one_cache_is_linked_not_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Binaries an older checkout built into the single legacy folder are hard-linked into
    the per-component folders (no Go runs: `go` is not even on PATH here)."""
    from localcluster import build  # noqa: PLC0415

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")
    legacy = versions.cache_root() / versions.legacy_stack_key()
    (legacy / "crds").mkdir(parents=True)
    for component in versions.BASE_COMPONENTS:
        for name in component.binaries:
            (legacy / name).write_text(name)
    (legacy / "crds" / "kubeflow.org_pytorchjobs.yaml").write_text("crd")
    bins = build.ensure_binaries(quiet=True)
    assert bins.path("kube-apiserver").read_text() == "kube-apiserver"
    assert bins.path("kube-apiserver").stat().st_ino == (legacy / "kube-apiserver").stat().st_ino
    assert bins.crd_path("kubeflow.org_pytorchjobs.yaml").read_text() == "crd"
    assert (legacy / "kubectl").is_file()  # older checkouts keep theirs
