"""The model initializer on the real control plane: the operator's batch/v1 Job, run by the
real Job controller (kube-controller-manager) on a kwok node, its pod's outcome set with
the speechtune.dev/kwok-outcome annotation; then the PyTorchJob, offline. The download
itself is tested against a local hub in tests/unit/trainers/test_model_fetch.py (kwok runs
no containers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import kubernetes
import pytest
import yaml

import ftj_cluster
from ftj_cluster import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def operator(cluster: Any, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with ftj_cluster.running_operator(kubeconfig=cluster.kubeconfig, namespace=namespace, log=log,
                                      extra_env={"SPEECHTUNE_HF_ENDPOINT": "https://hf-mirror.example.com"}):
        yield log


@pytest.fixture(scope="module")
def api(cluster: Any) -> Any:
    return ftj_cluster.api_clients(cluster.kubeconfig)


def hub_job(name: str) -> dict[str, Any]:
    body = ftj_cluster.example("mms-banglish-lora")
    body["metadata"]["name"] = name
    return body


def status(api: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(api[1].get_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace,
                                                    ftj_cluster.PLURAL, name).get("status") or {})


def initializer_pod(api: Any, namespace: str, name: str) -> Any:
    pods = api[0].list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={name}-model").items
    running = [p for p in pods if p.status.phase == "Running"]
    return running[0] if len(running) == 1 else None


def events(api: Any, namespace: str, name: str) -> list[tuple[str, str, str]]:
    found = api[0].list_namespaced_event(namespace, field_selector=f"involvedObject.name={name},"
                                                                   "involvedObject.kind=FinetuneJob").items
    return [(e.type, e.reason, e.message) for e in found]


def pytorchjob(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    items = api[1].list_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs")["items"]
    return next((dict(j) for j in items if j["metadata"]["name"] == name), None)


def test_the_model_is_fetched_by_a_cpu_job_before_the_offline_pytorchjob(
        cluster: Any, api: Any, namespace: str, operator: Path) -> None:
    name = "init-ok"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(hub_job(name)))
    current = wait_for(lambda: (s := status(api, namespace, name)).get("phase") == "Initializing" and s,
                       timeout=120, what="phase Initializing")
    assert current["initializerJob"] == f"{name}-model"
    job = kubernetes.client.BatchV1Api(api[1].api_client).read_namespaced_job(f"{name}-model", namespace)
    [owner] = job.metadata.owner_references
    assert (owner.kind, owner.name, owner.controller) == ("FinetuneJob", name, True)
    pod = wait_for(lambda: initializer_pod(api, namespace, name), timeout=180, what="the initializer's pod running")
    [box] = pod.spec.containers
    assert box.command[:3] == ["speechtune", "model", "fetch"]
    assert "nvidia.com/gpu" not in (box.resources.limits or {})
    env = {e.name: e for e in box.env}
    assert env["HF_ENDPOINT"].value == "https://hf-mirror.example.com"  # the operator's setting
    assert env["HF_TOKEN"].value_from.secret_key_ref.name == "speechtune-hf-token"
    assert pod.spec.security_context.run_as_non_root and box.security_context.capabilities.drop == ["ALL"]
    assert ("Normal", "ModelInitializing") in {e[:2] for e in events(api, namespace, name)}
    assert pytorchjob(api, namespace, name) is None

    cluster.kubectl("annotate", "-n", namespace, "pod", pod.metadata.name, "speechtune.dev/kwok-outcome=succeed")
    child = wait_for(lambda: pytorchjob(api, namespace, name), timeout=120, what="the PyTorchJob after the Job completed")
    for replica in child["spec"]["pytorchReplicaSpecs"].values():
        [trainer] = replica["template"]["spec"]["containers"]
        variables = {e["name"]: e for e in trainer["env"]}
        assert variables["HF_HUB_OFFLINE"]["value"] == "1"
        assert "HF_TOKEN" not in variables and "HF_ENDPOINT" not in variables
    wait_for(lambda: status(api, namespace, name).get("phase") in ("Pending", "Running"), what="the child's phase")


def test_a_failed_initializer_fails_the_job_with_its_reason(
        cluster: Any, api: Any, namespace: str, operator: Path) -> None:
    name = "init-fails"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(hub_job(name)))
    pod = wait_for(lambda: initializer_pod(api, namespace, name), timeout=180, what="the initializer's pod running")
    # kwok ends it with exit code 1, as `speechtune model fetch` does for an unknown repo:
    # the Job's podFailurePolicy fails the Job at once, without retries.
    cluster.kubectl("annotate", "-n", namespace, "pod", pod.metadata.name, "speechtune.dev/kwok-outcome=fail")
    failed = wait_for(lambda: (s := status(api, namespace, name)).get("phase") == "Failed" and s,
                      timeout=120, what="phase Failed")
    message = failed["message"]
    assert message.startswith(f"model initializer Job {name}-model failed: PodFailurePolicy"), message
    assert f"pod {pod.metadata.name} failed: Error (exit code 1)" in message and "\n" not in message
    warning = wait_for(lambda: [e for e in events(api, namespace, name) if e[1] == "ModelInitializationFailed"],
                       what="the Warning event")
    assert warning[0][0] == "Warning"
    assert pytorchjob(api, namespace, name) is None
    # No retry pod: exit 1 is permanent.
    pods = api[0].list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={name}-model").items
    assert len(pods) == 1
