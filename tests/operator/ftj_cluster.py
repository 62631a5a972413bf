"""Helpers for the operator's tests on the real local control plane: the operator as a
subprocess, pre-bound volumes, and polling with generous deadlines."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import kubernetes
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "finetunejob.yaml"
EXAMPLES = {
    "canary": REPO / "examples" / "finetunejob-canary.yaml",
    "speechbrain-atc0": REPO / "examples" / "finetunejob-speechbrain-atc0.yaml",
    "mms-banglish-lora": REPO / "examples" / "finetunejob-mms-banglish-lora.yaml",
}
CLAIMS = ("asr-data", "asr-runs", "asr-models", "hf-cache")
GROUP, VERSION, PLURAL = "speechtune.dev", "v1alpha1", "finetunejobs"
TEST_NAMESPACE_LABEL = "speechtune.dev/test-namespace"
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Backend:
    """What the tests look at on each backend, written down here independently of the
    operator's own code: the child's resource, its pods' labels, its suspend switch."""

    name: str
    group: str
    version: str
    plural: str
    pods_label: str  # on every pod of a child, valued with the child's name
    rank0_labels: dict[str, str]
    created_reason: str

    def suspended(self, child: dict[str, Any]) -> bool:
        spec = child["spec"]
        return bool(spec["runPolicy"]["suspend"] if self.name == "pytorchjob" else spec["suspend"])

    def nodes(self, child: dict[str, Any]) -> int:
        if self.name == "pytorchjob":
            return sum(int(r["replicas"]) for r in child["spec"]["pytorchReplicaSpecs"].values())
        return int(child["spec"]["trainer"]["numNodes"])


BACKENDS = {
    "pytorchjob": Backend("pytorchjob", "kubeflow.org", "v1", "pytorchjobs", "training.kubeflow.org/job-name",
                          {"training.kubeflow.org/replica-type": "master"}, "PyTorchJobCreated"),
    # Pods of a TrainJob: JobSet's labels (its JobSet has the TrainJob's name), rank 0 = index 0.
    "trainjob": Backend("trainjob", "trainer.kubeflow.org", "v1alpha1", "trainjobs", "jobset.sigs.k8s.io/jobset-name",
                        {"batch.kubernetes.io/job-completion-index": "0"}, "TrainJobCreated"),
}


def children(custom: Any, backend: Backend, namespace: str) -> list[dict[str, Any]]:
    return list(custom.list_namespaced_custom_object(backend.group, backend.version, namespace,
                                                     backend.plural)["items"])


def wait_for(check: Callable[[], T], *, timeout: float = 120, interval: float = 0.25, what: str = "") -> T:
    """check()'s first truthy result; its last exception or a timeout otherwise. Deadlines are
    generous: two shared cores run the control plane, kwok and the operator."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (kubernetes.client.ApiException, KeyError, IndexError, AssertionError) as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}; last error: {last!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_clients(kubeconfig: Path) -> tuple[kubernetes.client.CoreV1Api, kubernetes.client.CustomObjectsApi]:
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    return kubernetes.client.CoreV1Api(client), kubernetes.client.CustomObjectsApi(client)


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load(EXAMPLES[name].read_text()))


def tiny_job(name: str) -> dict[str, Any]:
    """A CPU-only job small enough that fifty fit on the two fake nodes."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FinetuneJob", "metadata": {"name": name},
            "spec": {"engine": "speechbrain-ctc",
                     "data": {"volume": {"claimName": "asr-data"}, "train": "t.csv", "validation": "v.csv"},
                     "training": {"maxSteps": 10},
                     "resources": {"cpu": "100m", "memory": "64Mi", "shmSize": "64Mi"},
                     "output": {"volume": {"claimName": "asr-runs"}}}}


def bound_volumes(namespace: str) -> list[dict[str, Any]]:
    """PVs pre-bound to the claims the examples use: the kube-controller-manager binds them,
    so the scheduler can place pods that mount them (there is no provisioner)."""
    objects: list[dict[str, Any]] = []
    for claim in CLAIMS:
        pv = f"{namespace}-{claim}"
        objects.append({"apiVersion": "v1", "kind": "PersistentVolume",
                        "metadata": {"name": pv, "labels": {TEST_NAMESPACE_LABEL: namespace}},
                        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "",
                                 "hostPath": {"path": f"/tmp/speechtune-pv/{pv}"},
                                 "claimRef": {"namespace": namespace, "name": claim}}})
        objects.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": claim, "namespace": namespace},
                        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                                 "resources": {"requests": {"storage": "1Gi"}}}})
    return objects


class OperatorProcess:
    """`speechtune-operator` as a child process, watching one namespace."""

    def __init__(self, *, kubeconfig: Path, namespace: str, log: Path, extra_env: dict[str, str] | None = None,
                 verbose: bool = True, backend: str = "pytorchjob", trainer_metrics_port: int | None = None):
        self.metrics_port = free_port()
        self.health_port = free_port()
        # kwok's pods have IPs but no network: the operator's test-only setting scrapes
        # 127.0.0.1 instead, on the pods' container port named metrics (this free port).
        # On the trainjob backend the pod's metrics port comes from the ClusterTrainingRuntime:
        # the caller renders it with this port.
        self.trainer_metrics_port = trainer_metrics_port or free_port()
        self.log = log
        self._args = [sys.executable, "-m", "speechtune_operator.main", "--standalone", "--namespace", namespace,
                      f"--liveness=http://127.0.0.1:{self.health_port}/healthz"] + (["--verbose"] if verbose else [])
        self._env = {**os.environ, "KUBECONFIG": str(kubeconfig),
                     "SPEECHTUNE_OPERATOR_METRICS_PORT": str(self.metrics_port),
                     "SPEECHTUNE_SCRAPE_INTERVAL": "1", "SPEECHTUNE_TEST_SCRAPE_HOST": "127.0.0.1",
                     "SPEECHTUNE_TRAINER_METRICS_PORT": str(self.trainer_metrics_port),
                     "SPEECHTUNE_BACKEND": backend,
                     # As the chart runs it: each job fenced by its own NetworkPolicy.
                     "SPEECHTUNE_TRAINER_NETWORK_POLICY": "true", "SPEECHTUNE_PROMETHEUS_NAMESPACES": "monitoring",
                     **(extra_env or {})}
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> "OperatorProcess":
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(self._args, env=self._env, stdout=out, stderr=subprocess.STDOUT)
        wait_for(self.healthy, timeout=90, what=f"the operator's liveness endpoint (log: {self.log})")
        return self

    def healthy(self) -> bool:
        assert self._process is not None and self._process.poll() is None, f"operator exited; see {self.log}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final patches, exactly like a node loss or an OOM kill."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=30)

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=30)

    def cpu_seconds(self) -> float:
        """User + system CPU time the operator has used so far."""
        assert self._process is not None
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        assert self._process is not None
        for line in Path(f"/proc/{self._process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


@contextlib.contextmanager
def running_operator(**kwargs: Any) -> Iterator[OperatorProcess]:
    process = OperatorProcess(**kwargs).start()
    try:
        yield process
    finally:
        process.stop()
