"""The local control plane is a real Kubernetes: the training-operator runs PyTorchJobs on
kwok's fake GPU nodes, the garbage collector deletes owned objects, CRD schemas validate."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, Iterator

import pytest

pytestmark = pytest.mark.cluster

WAIT_S = 240  # generous: two busy cores; only a hang may fail these tests, never slowness


def pytorchjob(name: str, *, restart_policy: str) -> dict[str, Any]:
    def replica(gpus: int) -> dict[str, Any]:
        return {
            "replicas": 1,
            "restartPolicy": restart_policy,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "pytorch",
                            "image": "registry.invalid/speechtune/trainer:test",
                            "command": ["speechtune", "train"],
                            "resources": {"limits": {"nvidia.com/gpu": gpus}},
                        }
                    ],
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-B200"},
                }
            },
        }

    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name},
        "spec": {"pytorchReplicaSpecs": {"Master": replica(8), "Worker": replica(8)}},
    }


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """Poll until `probe` returns something truthy; return it."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(1)


@pytest.fixture(scope="module")
def namespace(cluster: Any) -> Iterator[str]:
    name = f"cp-e2e-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def get_json(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def job_pods(cluster: Any, namespace: str, job: str) -> list[dict[str, Any]]:
    selector = f"training.kubeflow.org/job-name={job}"
    return list(get_json(cluster, "pods", "-n", namespace, "-l", selector)["items"])


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == kind and cond["status"] == "True":
            return dict(cond)
    return None


def run_job_until_running(cluster: Any, namespace: str, name: str, restart_policy: str) -> list[dict[str, Any]]:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pytorchjob(name, restart_policy=restart_policy)))

    def both_running() -> list[dict[str, Any]] | None:
        pods = job_pods(cluster, namespace, name)
        ok = len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods)
        return pods if ok else None

    pods = wait_for(f"the pods of PyTorchJob {name} to run", both_running)
    wait_for(
        f"PyTorchJob {name} to be Running",
        lambda: condition(get_json(cluster, "pytorchjob", name, "-n", namespace), "Running"),
    )
    return list(pods)


def annotate_outcome(cluster: Any, namespace: str, pod: str, outcome: str) -> None:
    cluster.kubectl("annotate", "pod", pod, "-n", namespace, f"speechtune.dev/kwok-outcome={outcome}")


def test_pytorchjob_runs_on_kwok_gpu_nodes_and_succeeds(cluster: Any, namespace: str) -> None:
    pods = run_job_until_running(cluster, namespace, "ok", restart_policy="Never")

    assert sorted(p["metadata"]["name"] for p in pods) == ["ok-master-0", "ok-worker-0"]
    assert {p["spec"]["nodeName"] for p in pods} <= {"kwok-gpu-0", "kwok-gpu-1"}
    # 8 GPUs each: the scheduler had to put master and worker on different nodes.
    assert len({p["spec"]["nodeName"] for p in pods}) == 2
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0].get("env", [])}
    assert env.get("WORLD_SIZE") == "2" and env.get("MASTER_ADDR") == "ok-master-0"
    services = get_json(cluster, "services", "-n", namespace, "-l", "training.kubeflow.org/job-name=ok")
    assert {s["metadata"]["name"] for s in services["items"]} == {"ok-master-0", "ok-worker-0"}
    assert all(s["spec"]["clusterIP"] == "None" for s in services["items"])  # headless
    # The endpoint controllers resolve the master's Service to the IP kwok gave its pod.
    master_ip = next(p["status"]["podIP"] for p in pods if p["metadata"]["name"] == "ok-master-0")
    wait_for(
        "the master Service's EndpointSlice",
        lambda: any(
            master_ip in endpoint["addresses"]
            for slice_ in get_json(cluster, "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=ok-master-0")["items"]
            for endpoint in slice_.get("endpoints") or []
        ),
    )

    for pod in pods:
        annotate_outcome(cluster, namespace, pod["metadata"]["name"], "succeed")
    done = wait_for(
        "PyTorchJob ok to succeed",
        lambda: condition(get_json(cluster, "pytorchjob", "ok", "-n", namespace), "Succeeded"),
    )
    assert "successfully completed" in done["message"]
    master = get_json(cluster, "pod", "ok-master-0", "-n", namespace)
    assert master["status"]["phase"] == "Succeeded"
    assert master["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_pytorchjob_fails_when_its_master_fails(cluster: Any, namespace: str) -> None:
    # ExitCode: exit code 1 is a permanent error for the training-operator (no restart).
    run_job_until_running(cluster, namespace, "boom", restart_policy="ExitCode")
    # Unannotated pods stay Running: the outcome is the test's to choose.
    assert get_json(cluster, "pod", "boom-master-0", "-n", namespace)["status"]["phase"] == "Running"

    annotate_outcome(cluster, namespace, "boom-master-0", "fail")
    wait_for(
        "PyTorchJob boom to fail",
        lambda: condition(get_json(cluster, "pytorchjob", "boom", "-n", namespace), "Failed"),
    )
    master = get_json(cluster, "pod", "boom-master-0", "-n", namespace)
    assert master["status"]["phase"] == "Failed"
    terminated = master["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 1 and terminated["reason"] == "Error"


def test_deleting_an_owner_deletes_what_it_owns(cluster: Any, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=a=b")
    owner_uid = get_json(cluster, "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
            ],
        },
        "data": {"c": "d"},
    }
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(owned))

    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(
        "the garbage collector to delete the owned ConfigMap",
        lambda: cluster.kubectl("get", "configmap", "owned", "-n", namespace, check=False).returncode != 0,
    )
    gone = cluster.kubectl("get", "configmap", "owned", "-n", namespace, check=False)
    assert "NotFound" in gone.stderr


def test_crd_schema_refuses_a_wrong_typed_field(cluster: Any, namespace: str) -> None:
    job = pytorchjob("bad", restart_policy="Never")
    job["spec"]["runPolicy"] = {"backoffLimit": "three"}

    result = cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(job), check=False)

    assert result.returncode != 0
    assert "spec.runPolicy.backoffLimit" in result.stderr
    assert cluster.kubectl("get", "pytorchjob", "bad", "-n", namespace, check=False).returncode != 0


def test_training_operator_webhook_refuses_a_job_without_a_pytorch_container(cluster: Any, namespace: str) -> None:
    job = pytorchjob("unnamed", restart_policy="Never")
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["name"] = "trainer"

    result = cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(job), check=False)

    assert result.returncode != 0
    assert "validator.pytorchjob.training-operator.kubeflow.org" in result.stderr
    assert "must have at least one container with name pytorch" in result.stderr
