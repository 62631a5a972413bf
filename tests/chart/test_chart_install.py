"""The chart on the real local control plane: every object accepted, RBAC enough and no more.

Two releases: default values (cluster-wide) and the full values (every option on, the
operator limited to one jobs namespace). The Prometheus operator's ServiceMonitor and
PodMonitor CRDs come from its Go module, so the monitors are validated by the apiserver.
Then the operator runs out of cluster with the chart's own ServiceAccount token and exactly
the arguments and environment the chart's Deployment gives it, and takes a FinetuneJob
through to Succeeded (kwok plays the trainer pod).
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import socket
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from polling import free_port, wait_for

from chart_render import CHART, FULL_VALUES, ROOT, one, run_helm

pytestmark = pytest.mark.cluster

PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
MONITOR_CRDS = ("monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_podmonitors.yaml")
OPERATOR_EXE = ROOT / ".venv" / "bin" / "speechtune-operator"
KWOK_OUTCOME = "speechtune.dev/kwok-outcome"


@dataclasses.dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    jobs_namespace: str
    objects: list[dict[str, Any]]
    notes: str  # NOTES.txt as `helm install` printed it

    @property
    def service_account(self) -> str:
        return str(one(self.objects, "ServiceAccount")["metadata"]["name"])

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def monitoring_crds(cluster: Any) -> None:
    """ServiceMonitor/PodMonitor CRDs from the Prometheus operator's Go module (not committed)."""
    done = subprocess.run(["go", "mod", "download", "-json", f"{PROMETHEUS_OPERATOR}@{PROMETHEUS_OPERATOR_VERSION}"],
                          capture_output=True, text=True, cwd=tempfile.gettempdir(), timeout=300, check=False)
    info = json.loads(done.stdout or "{}")
    assert done.returncode == 0 and "Dir" in info, f"go mod download failed: {info.get('Error') or done.stderr}"
    folder = Path(info["Dir"]) / "example" / "prometheus-operator-crd"
    for name in MONITOR_CRDS:
        # Server-side: these CRDs are too big for the last-applied annotation.
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(folder / name))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/servicemonitors.monitoring.coreos.com", "crd/podmonitors.monitoring.coreos.com")


def install(cluster: Any, helm: Path, *values: str) -> Iterator[Release]:
    namespace, jobs_namespace = unique("st-chart"), unique("st-jobs")
    name = "speechtune"
    for ns in (namespace, jobs_namespace):
        cluster.kubectl("create", "namespace", ns)
    # The full values watch one namespace: the one this test puts its FinetuneJob in.
    watch = ["--set", f"operator.watchNamespaces={{{jobs_namespace}}}"] if values else []
    # The apiserver cannot reach a Service here (no kube-proxy, no operator pod): the webhook is
    # installed and validated but scoped to no namespace, so this cluster's other tests create
    # FinetuneJobs freely. tests/operator/test_operator_webhook.py covers the apiserver's calls.
    watch += ["--set", f"webhook.namespaceSelector.matchLabels.speechtune\\.dev/webhook-test={namespace}"]
    try:
        installed = run_helm(helm, "install", name, str(CHART), "--namespace", namespace, *values, *watch,
                             env=cluster.env)
        manifest = run_helm(helm, "get", "manifest", name, "--namespace", namespace, env=cluster.env).stdout
        objects = [doc for doc in yaml.safe_load_all(manifest) if doc]
        yield Release(name, namespace, jobs_namespace, objects, installed.stdout.partition("NOTES:")[2])
    finally:
        run_helm(helm, "uninstall", name, "--namespace", namespace, "--wait", env=cluster.env, check=False)
        for ns in (namespace, jobs_namespace):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def default_release(cluster: Any, helm: Path, monitoring_crds: None) -> Iterator[Release]:
    yield from install(cluster, helm)


@pytest.fixture(scope="module")
def full_release(cluster: Any, helm: Path, monitoring_crds: None) -> Iterator[Release]:
    yield from install(cluster, helm, "--values", str(FULL_VALUES))


def resource_type(obj: dict[str, Any]) -> str:
    """kubectl's fully qualified type: `deployment.apps`, `podmonitor.monitoring.coreos.com`, `service`."""
    group, _, _ = obj["apiVersion"].rpartition("/")
    return f"{obj['kind'].lower()}.{group}" if group else str(obj["kind"]).lower()


@pytest.mark.parametrize("which", ["default", "full"])
def test_every_object_is_accepted(which: str, request: pytest.FixtureRequest, cluster: Any) -> None:
    release: Release = request.getfixturevalue(f"{which}_release")
    kinds = {obj["kind"] for obj in release.objects}
    if which == "full":
        assert {"ServiceMonitor", "PodMonitor", "RoleBinding"} <= kinds
    for obj in release.objects:
        meta = obj["metadata"]
        scope = ["--namespace", meta["namespace"]] if "namespace" in meta else []
        found = cluster.kubectl("get", resource_type(obj), meta["name"], *scope, "-o", "json")
        assert json.loads(found.stdout)["metadata"]["name"] == meta["name"]


@pytest.mark.parametrize("which", ["default", "full"])
def test_notes_tell_how_to_apply_an_example_and_open_the_dashboards(which: str,
                                                                     request: pytest.FixtureRequest) -> None:
    release: Release = request.getfixturevalue(f"{which}_release")
    assert "kubectl apply -f examples/" in release.notes
    assert f"rollout status deployment/{one(release.objects, 'Deployment')['metadata']['name']}" in release.notes
    for uid in ("speechtune-training", "speechtune-operator"):
        assert f"/d/{uid}" in release.notes
    if which == "full":
        assert release.jobs_namespace in release.notes and "release=monitoring" in release.notes


def can_i(cluster: Any, release: Release, *args: str) -> bool:
    done = cluster.kubectl("auth", "can-i", *args, f"--as={release.user}", check=False)
    assert done.stdout.strip() in {"yes", "no"}, done.stderr
    return done.stdout.strip() == "yes"


@pytest.mark.parametrize("which", ["default", "full"])
def test_service_account_cannot_read_secrets_or_touch_nodes(which: str, request: pytest.FixtureRequest,
                                                            cluster: Any) -> None:
    release: Release = request.getfixturevalue(f"{which}_release")
    jobs = release.jobs_namespace
    assert not can_i(cluster, release, "list", "secrets", "--all-namespaces")
    assert not can_i(cluster, release, "get", "secrets", "--namespace", jobs)
    assert not can_i(cluster, release, "get", "secrets", "--namespace", release.namespace)
    assert not can_i(cluster, release, "delete", "nodes")
    assert not can_i(cluster, release, "create", "pods", "--namespace", jobs)
    assert not can_i(cluster, release, "delete", "finetunejobs.speechtune.dev", "--namespace", jobs)
    assert can_i(cluster, release, "create", "pytorchjobs.kubeflow.org", "--namespace", jobs)
    assert can_i(cluster, release, "watch", "finetunejobs.speechtune.dev", "--namespace", jobs)
    assert can_i(cluster, release, "patch", "finetunejobs.speechtune.dev", "--subresource=status", "--namespace", jobs)
    # Cluster-wide job rights only when no namespaces are listed.
    elsewhere = can_i(cluster, release, "create", "pytorchjobs.kubeflow.org", "--namespace", "default")
    assert elsewhere is (which == "default")


def service_account_kubeconfig(cluster: Any, release: Release, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount with a real token."""
    token = cluster.kubectl("create", "token", release.service_account, "--namespace", release.namespace,
                            "--duration=3600s").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    server = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "local", "cluster": server["cluster"]}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
    }))
    return path


def operator_command(release: Release, health_port: int, metrics_port: int) -> tuple[list[str], dict[str, str]]:
    """The Deployment's container command line and plain env, ports moved to free loopback ones."""
    (container,) = one(release.objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    args = [f"--liveness=http://127.0.0.1:{health_port}/healthz" if a.startswith("--liveness=") else a
            for a in container["args"]]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env["SPEECHTUNE_OPERATOR_METRICS_PORT"] = str(metrics_port)
    return [str(OPERATOR_EXE), *args], env


def webhook_tls(cluster: Any, release: Release, folder: Path) -> tuple[Path, bytes]:
    """The chart's webhook Secret as its Deployment mounts it (tls.crt, tls.key), and its CA."""
    secret = one(release.objects, "Secret")
    found = json.loads(cluster.kubectl("get", "secret", secret["metadata"]["name"], "-n", release.namespace,
                                       "-o", "json").stdout)
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("tls.crt", "tls.key"):
        (folder / key).write_bytes(base64.b64decode(found["data"][key]))
    return folder, base64.b64decode(found["data"]["ca.crt"])


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def operator_as_service_account(cluster: Any, full_release: Release, tmp_path: Path) -> Iterator[Path]:
    """The operator, out of cluster, as the chart's ServiceAccount; yields its log file."""
    kubeconfig = service_account_kubeconfig(cluster, full_release, tmp_path / "operator.kubeconfig")
    health_port, metrics_port = free_port(), free_port()
    argv, chart_env = operator_command(full_release, health_port, metrics_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(chart_env, KUBECONFIG=str(kubeconfig))
    # The webhook serves the chart's own certificate, from the Secret the chart made.
    certs, _ = webhook_tls(cluster, full_release, tmp_path / "webhook-tls")
    webhook_port = free_port()
    (tmp_path / "webhook.port").write_text(str(webhook_port))  # for the test (same tmp_path)
    env.update(SPEECHTUNE_ADMISSION_CERT_DIR=str(certs), SPEECHTUNE_ADMISSION_ADDR="127.0.0.1",
               SPEECHTUNE_ADMISSION_PORT=str(webhook_port))
    log = tmp_path / "operator.log"
    with log.open("w") as sink:
        process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for("the operator's liveness endpoint", lambda: process.poll() is None and healthy(
            f"http://127.0.0.1:{health_port}/healthz") or process.poll() is not None, timeout=180)
        assert process.poll() is None, f"the operator exited:\n{log.read_text()[-4000:]}"
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def hostpath_claim(cluster: Any, namespace: str, claim: str, folder: Path) -> None:
    """A PVC bound to a hostPath PV, so the scheduler places the trainer pod (kwok runs it)."""
    volume = f"{namespace}-{claim}"
    manifests = [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": str(folder)},
                  "claimRef": {"namespace": namespace, "name": claim}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": volume,
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(m) for m in manifests))


def small_job(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "speechtune.dev/v1alpha1", "kind": "FinetuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"engine": "speechbrain-ctc",
                 "data": {"volume": {"claimName": "rbac-data"}, "train": "train.json", "validation": "valid.json"},
                 "training": {"maxSteps": 5, "precision": "fp32"},
                 "resources": {"nodes": 1, "gpusPerNode": 1},
                 "output": {"volume": {"claimName": "rbac-runs"}}},
    }


def diagnose(cluster: Any, namespace: str) -> str:
    """What the namespace holds, for a failure message."""
    listed = cluster.kubectl("get", "finetunejobs,pytorchjobs,pods,pvc,configmaps", "-n", namespace, "-o", "wide",
                             check=False)
    events = cluster.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False)
    return f"{listed.stdout}{listed.stderr}\nevents:\n{events.stdout[-3000:]}"


def phase(cluster: Any, namespace: str, name: str) -> str | None:
    done = cluster.kubectl("get", "finetunejob", name, "-n", namespace, "-o", "jsonpath={.status.phase}",
                           check=False)
    return done.stdout.strip() or None


def test_operator_as_service_account_runs_a_job_to_succeeded(
        cluster: Any, full_release: Release, operator_as_service_account: Path, tmp_path: Path) -> None:
    namespace, name = full_release.jobs_namespace, "rbac-check"
    for claim in ("rbac-data", "rbac-runs"):
        hostpath_claim(cluster, namespace, claim, tmp_path)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(small_job(name, namespace)))
    pod = f"{name}-master-0"
    log = operator_as_service_account

    def refused() -> None:
        # Fail at the first refusal rather than at the timeout: it names the missing right.
        text = log.read_text()
        # A 403 from the apiserver reads "Forbidden" in both kopf's and the client's errors.
        assert "Forbidden" not in text, f"the operator was refused:\n{text[-4000:]}"

    def pod_running() -> bool:
        refused()
        return cluster.kubectl("get", "pod", pod, "-n", namespace, "-o", "jsonpath={.status.phase}",
                               check=False).stdout == "Running"

    def succeeded() -> bool:
        refused()
        return phase(cluster, namespace, name) == "Succeeded"

    try:
        wait_for(f"pod {pod} running", pod_running, timeout=180)
        cluster.kubectl("annotate", "pod", pod, "-n", namespace, f"{KWOK_OUTCOME}=succeed", "--overwrite")
        wait_for(f"FinetuneJob {name} Succeeded", succeeded, timeout=180)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{diagnose(cluster, namespace)}\noperator log:\n{log.read_text()[-4000:]}") from None
    # Enough: nothing the operator tried was refused along the way.
    refused()
    cluster.kubectl("delete", "finetunejob", name, "-n", namespace, "--wait=true", "--timeout=120s")


def test_the_charts_webhook_certificate_serves_the_engine_rules(cluster: Any, full_release: Release,
                                                                operator_as_service_account: Path,
                                                                tmp_path: Path) -> None:
    """An AdmissionReview to the operator, over TLS verified as the apiserver does: the chart's
    CA, the chart's Service name (sent as SNI/hostname to the loopback port)."""
    _, ca = webhook_tls(cluster, full_release, tmp_path / "tls")
    [hook] = one(full_release.objects, "ValidatingWebhookConfiguration")["webhooks"]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca
    service = hook["clientConfig"]["service"]
    host = f"{service['name']}.{service['namespace']}.svc"
    port = int((tmp_path / "webhook.port").read_text())
    job = small_job("lora-canary", full_release.jobs_namespace)
    job["spec"]["engine"] = "nemo-canary"
    job["spec"]["training"]["peft"] = {"method": "lora"}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "1", "kind": {"group": "speechtune.dev", "version": "v1alpha1", "kind": "FinetuneJob"},
                          "resource": {"group": "speechtune.dev", "version": "v1alpha1", "resource": "finetunejobs"},
                          "operation": "CREATE", "namespace": full_release.jobs_namespace, "object": job,
                          "userInfo": {"username": "test"}, "dryRun": True}}
    context = ssl.create_default_context(cadata=ca.decode())
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context)
    # Verified for the Service's name, as the apiserver does, though connected to loopback.
    connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30),
                                          server_hostname=host)
    connection.request("POST", service["path"], body=json.dumps(review), headers={"Content-Type": "application/json"})
    answer = json.loads(connection.getresponse().read())["response"]
    assert answer["allowed"] is False
    assert answer["status"]["message"].startswith("spec.training.peft.method: 'lora' is not supported by nemo-canary")
