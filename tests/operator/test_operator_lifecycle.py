"""Each shipped example through the whole path on the real control plane, on both backends:
kubectl apply -> the operator -> a PyTorchJob the real CRD (and the training-operator's
webhook) accepts, or a TrainJob Kubeflow Trainer v2's CRD and webhooks accept (its JobSet,
JobSet's Jobs) -> their pods -> kwok runs them -> the FinetuneJob's phase, conditions,
events and progress; deletion collects every child."""

from __future__ import annotations

import contextlib
import subprocess
from typing import Any, Iterator

import kubernetes
import prometheus_client
from prometheus_client import parser
import pytest
import yaml
from speechtune_operator.builders.phase import PHASES

import ftj_cluster
from ftj_cluster import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def namespace(backend_namespace: str) -> str:
    return backend_namespace


class Cluster:
    """The calls these tests make, on one namespace."""

    def __init__(self, cluster: Any, api: Any, namespace: str, backend: ftj_cluster.Backend) -> None:
        self.cluster, (self.core, self.custom), self.ns, self.backend = cluster, api, namespace, backend

    def apply(self, body: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "-n", self.ns, "-f", "-", input=yaml.safe_dump(body))

    def ftj(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(
            ftj_cluster.GROUP, ftj_cluster.VERSION, self.ns, ftj_cluster.PLURAL, name))

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.ftj(name).get("status") or {})

    def in_phase(self, name: str, phase: str) -> dict[str, Any] | None:
        status = self.status(name)
        return status if status.get("phase") == phase else None

    def child(self, name: str) -> dict[str, Any] | None:
        """The PyTorchJob or TrainJob."""
        b = self.backend
        try:
            return dict(self.custom.get_namespaced_custom_object(b.group, b.version, self.ns, b.plural, name))
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return None
            raise

    def pods(self, job: str) -> list[Any]:
        return list(self.core.list_namespaced_pod(self.ns, label_selector=f"{self.backend.pods_label}={job}").items)

    def rank0(self, job: str) -> str:
        """The running rank-0 pod's name (a TrainJob's pods end in a random suffix)."""
        pods = [p for p in self.pods(job) if p.status.phase == "Running"
                and self.backend.rank0_labels.items() <= (p.metadata.labels or {}).items()]
        assert len(pods) == 1, [p.metadata.name for p in pods]
        return str(pods[0].metadata.name)

    def running_pods(self, job: str, count: int) -> list[Any]:
        pods = [p for p in self.pods(job) if p.status.phase == "Running"]
        return pods if len(pods) == count else []

    def finish(self, pod: str, outcome: str) -> None:
        self.cluster.kubectl("annotate", "-n", self.ns, "pod", pod, f"speechtune.dev/kwok-outcome={outcome}",
                             "--overwrite")

    def initializer_pods(self, name: str) -> list[Any]:
        job = names_initializer_job(name)
        return list(self.core.list_namespaced_pod(self.ns, label_selector=f"batch.kubernetes.io/job-name={job}").items)

    def initialize(self, name: str) -> dict[str, Any]:
        """A job with a hub model and a model volume: phase Initializing, no child, until the
        model initializer's pod (kwok runs it) succeeds. Returns that status."""
        status = wait_for(lambda: self.in_phase(name, "Initializing"), timeout=180, what="phase Initializing")
        assert status["initializerJob"] == names_initializer_job(name)
        [pod] = wait_for(lambda: [p for p in self.initializer_pods(name) if p.status.phase == "Running"],
                         timeout=180, what="the model initializer's pod running")
        assert self.child(name) is None  # no trainer pod before the model is on the volume
        self.finish(pod.metadata.name, "succeed")
        return status

    def event_reasons(self, name: str) -> list[tuple[str, str, str]]:
        events = self.core.list_namespaced_event(self.ns, field_selector=f"involvedObject.name={name},"
                                                                         "involvedObject.kind=FinetuneJob").items
        return [(e.type, e.reason, e.message) for e in events]

    def suspend(self, name: str, value: bool) -> None:
        self.custom.patch_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, self.ns,
                                                   ftj_cluster.PLURAL, name, {"spec": {"runPolicy": {"suspend": value}}})

    def children_gone(self, name: str) -> bool:
        return self.child(name) is None and not self.pods(name)


def names_initializer_job(name: str) -> str:
    return f"{name}-model"  # written down here, not imported from the operator


@pytest.fixture(scope="module")
def k(cluster: Any, api: Any, namespace: str, backend: ftj_cluster.Backend,
      operator: ftj_cluster.OperatorProcess) -> Cluster:
    return Cluster(cluster, api, namespace, backend)


def test_canary_on_two_nodes_fails_with_the_pods_reason_and_deletion_collects_it(k: Cluster) -> None:
    name = "canary-1b-v2-atc"
    k.apply(ftj_cluster.example("canary"))
    k.initialize(name)
    child = wait_for(lambda: k.child(name), what=f"the {k.backend.name}")
    assert k.backend.nodes(child) == 2
    assert child["metadata"]["ownerReferences"][0]["uid"] == k.ftj(name)["metadata"]["uid"]
    pods = wait_for(lambda: k.running_pods(name, 2), timeout=180, what="both nodes' pods running under kwok")
    env = {e.name: e.value for e in pods[0].spec.containers[0].env}
    assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "8"  # torchrun's, from either controller
    assert pods[0].spec.containers[0].command[:2] == ["torchrun", "--no-python"]
    # spec.pod reached the real pods: RDMA resource, IPC_LOCK, NCCL settings, fabric affinity.
    for pod in pods:
        [box] = pod.spec.containers
        assert box.resources.limits["rdma/ib"] == "1" and box.resources.limits["nvidia.com/gpu"] == "8"
        assert box.security_context.capabilities.add == ["IPC_LOCK"]
        assert box.security_context.capabilities.drop == ["ALL"]
        assert {e.name: e.value for e in box.env}["NCCL_IB_HCA"] == "mlx5"
        assert pod.spec.affinity.pod_affinity.required_during_scheduling_ignored_during_execution
        assert pod.spec.automount_service_account_token is False
        assert {e.name: e.value for e in box.env}["HF_HUB_OFFLINE"] == "1"  # the initializer fetched it
    wait_for(lambda: k.in_phase(name, "Running"), what="phase Running")

    rank0 = k.rank0(name)
    k.finish(rank0, "fail")
    status = wait_for(lambda: k.in_phase(name, "Failed"), what="phase Failed")
    assert f"pod {rank0} failed: Error (exit code 1)" in status["message"]
    assert "kwok-outcome=fail" in status["message"]
    assert status["completionTime"]
    failed = wait_for(lambda: [e for e in k.event_reasons(name) if e[1] == "TrainingFailed"], what="the event")
    assert failed[0][0] == "Warning" and "exit code 1" in failed[0][2]

    k.cluster.kubectl("delete", "-n", k.ns, "finetunejob", name)
    wait_for(lambda: k.children_gone(name) and not k.initializer_pods(name), timeout=180,
             what="garbage collection of every child, the initializer's Job and pod included")


def test_a_capability_outside_the_allow_list_fails_the_job_with_an_event(k: Cluster) -> None:
    body = ftj_cluster.tiny_job("cap-refused")
    body["spec"]["pod"] = {"addCapabilities": ["SYS_ADMIN"]}
    k.apply(body)
    status = wait_for(lambda: k.in_phase("cap-refused", "Failed"), what="phase Failed")
    assert status["message"].startswith("spec.pod.addCapabilities: SYS_ADMIN not in the operator's allow-list")
    refused = wait_for(lambda: [e for e in k.event_reasons("cap-refused") if e[1] == "JobRefused"], what="the event")
    assert refused[0][0] == "Warning" and "SYS_ADMIN" in refused[0][2]
    assert k.child("cap-refused") is None


def test_a_two_node_job_on_a_read_write_once_claim_is_refused(k: Cluster) -> None:
    k.cluster.kubectl("apply", "-n", k.ns, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "rwo-runs"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    body = ftj_cluster.example("canary")
    body["metadata"]["name"] = "rwo-canary"
    body["spec"]["output"]["volume"]["claimName"] = "rwo-runs"
    k.apply(body)
    status = wait_for(lambda: k.in_phase("rwo-canary", "Failed"), what="phase Failed")
    assert status["message"].startswith("spec.output.volume.claimName: PersistentVolumeClaim rwo-runs is "
                                        "ReadWriteOnce, but a job on 2 nodes")
    refused = wait_for(lambda: [e for e in k.event_reasons("rwo-canary") if e[1] == "VolumesNotShared"],
                       what="the event")
    assert refused[0][0] == "Warning" and "ReadWriteMany" in refused[0][2]
    assert k.child("rwo-canary") is None


@contextlib.contextmanager
def trainer_metrics(job: str, namespace: str, port: int) -> Iterator[str]:
    """A real Prometheus endpoint with the trainer's metric names, standing in for rank 0 on
    the port the operator reads from the master pod (it connects to 127.0.0.1 in tests)."""
    registry = prometheus_client.CollectorRegistry()
    labels = {"finetunejob": job, "namespace": namespace, "engine": "speechbrain-ctc"}

    def gauge(name: str, value: float) -> None:
        prometheus_client.Gauge(name, name, list(labels), registry=registry).labels(**labels).set(value)

    gauge("speechtune_step", 120)
    gauge("speechtune_max_steps", 480)
    gauge("speechtune_epoch", 1.0)
    gauge("speechtune_train_loss", 1.25)
    gauge("speechtune_val_wer_ratio", 0.3125)
    prometheus_client.Counter("speechtune_audio_seconds", "a", list(labels), registry=registry).labels(**labels).inc(600)
    histogram = prometheus_client.Histogram("speechtune_step_duration_seconds", "s", list(labels), registry=registry)
    for _ in range(120):
        histogram.labels(**labels).observe(0.25)
    server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        thread.join()


def test_speechbrain_succeeds_with_progress_from_its_metrics_endpoint(
        k: Cluster, operator: ftj_cluster.OperatorProcess) -> None:
    name = "sb-conformer-atc0-lora"
    body = ftj_cluster.example("speechbrain-atc0")
    with trainer_metrics(name, k.ns, operator.trainer_metrics_port):
        k.apply(body)
        wait_for(lambda: k.running_pods(name, 1), timeout=180, what="the master pod running")
        status = wait_for(lambda: k.status(name).get("progress", {}).get("etaSeconds") is not None and k.status(name),
                          what="status.progress from the scrape")
    assert status["phase"] == "Running"
    assert status["progress"] == {"step": 120, "maxSteps": 480, "epoch": 1.0, "etaSeconds": 90,
                                  "summary": "25% (120/480)"}
    assert status["metrics"] == {"trainLoss": 1.25, "wer": 0.3125, "audioSecondsPerSecond": 20.0}
    table = k.cluster.kubectl("get", "ftj", name, "-n", k.ns).stdout
    assert table.split("\n")[0].split()[:5] == ["NAME", "ENGINE", "PHASE", "PROGRESS", "WER"]
    assert "speechbrain-ctc" in table and "25% (120/480)" in table and "0.3125" in table

    # kwok has no kubelet to project it: read what the pod's downwardAPI volume names.
    [pod] = k.pods(name)
    [volume] = [v for v in pod.spec.volumes if v.name == "job"]
    [item] = volume.downward_api.items
    key = item.field_ref.field_path.removeprefix("metadata.annotations['").removesuffix("']")
    assert (item.path, key) == ("job.yaml", "speechtune.dev/job-file")
    assert yaml.safe_load(pod.metadata.annotations[key])["spec"] == k.ftj(name)["spec"]
    assert not k.core.list_namespaced_config_map(k.ns, label_selector=f"speechtune.dev/finetunejob={name}").items

    k.finish(k.rank0(name), "succeed")
    status = wait_for(lambda: k.in_phase(name, "Succeeded"), what="phase Succeeded")
    assert status["completionTime"] and status["startTime"]
    assert status["observedGeneration"] == k.ftj(name)["metadata"]["generation"]
    reasons = [reason for _, reason, _ in wait_for(
        lambda: any(e[1] == "TrainingSucceeded" for e in k.event_reasons(name)) and k.event_reasons(name))]
    assert {k.backend.created_reason, "TrainingRunning", "TrainingSucceeded"} <= set(reasons)


def test_mms_suspends_and_resumes(k: Cluster) -> None:
    name = "mms-1b-banglish-lora"
    k.apply(ftj_cluster.example("mms-banglish-lora"))
    k.initialize(name)
    wait_for(lambda: k.in_phase(name, "Running"), timeout=180, what="phase Running")

    k.suspend(name, True)
    wait_for(lambda: k.in_phase(name, "Suspended"), what="phase Suspended")
    assert k.backend.suspended(k.child(name))  # type: ignore[arg-type]
    wait_for(lambda: not k.pods(name), what="the suspended job's pods deleted")

    k.suspend(name, False)
    wait_for(lambda: k.in_phase(name, "Running") and k.running_pods(name, 1), timeout=180, what="resumed and running")
    assert any(reason == "TrainingResumed" for _, reason, _ in k.event_reasons(name))
    k.finish(k.rank0(name), "succeed")
    wait_for(lambda: k.in_phase(name, "Succeeded"), what="phase Succeeded")


def test_operator_metrics_and_liveness(k: Cluster, operator: ftj_cluster.OperatorProcess) -> None:
    assert operator.healthy()
    jobs = k.custom.list_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, k.ns,
                                                  ftj_cluster.PLURAL)["items"]
    expected = {phase: 0 for phase in PHASES}  # every phase the operator's gauge exports
    for job in jobs:
        expected[(job.get("status") or {}).get("phase") or "Pending"] += 1

    def gauge() -> dict[str, float]:
        families = {f.name: f for f in parser.text_string_to_metric_families(operator.metrics())}
        return {s.labels["phase"]: s.value for s in families["speechtune_finetunejobs"].samples}

    wait_for(lambda: gauge() == expected, timeout=30, what=f"speechtune_finetunejobs == {expected}")
    families = {f.name: f for f in parser.text_string_to_metric_families(operator.metrics())}
    reconciles = {s.labels["result"]: s.value for s in families["speechtune_operator_reconcile"].samples
                  if s.name.endswith("_total")}
    assert reconciles["success"] >= len(jobs)
    assert families["speechtune_operator_reconcile_duration_seconds"].samples


def podmonitor_selector(helm: Any, backend: str) -> str:
    """The chart's PodMonitor selector for this backend, as a label selector string."""
    rendered = subprocess.run(
        [str(helm), "template", "speechtune", str(ftj_cluster.REPO / "charts" / "speechtune"),
         "--set", "metrics.podMonitor.enabled=true", "--set", f"backend={backend}",
         "--show-only", "templates/podmonitor.yaml"], capture_output=True, text=True, check=True).stdout
    selector = yaml.safe_load(rendered)["spec"]["selector"]
    operators = {"Exists": "{key}", "DoesNotExist": "!{key}", "In": "{key} in ({values})",
                 "NotIn": "{key} notin ({values})"}
    terms = [f"{key}={value}" for key, value in (selector.get("matchLabels") or {}).items()]
    terms += [operators[e["operator"]].format(key=e["key"], values=",".join(e.get("values") or ()))
              for e in selector.get("matchExpressions") or ()]
    return ",".join(terms)


def test_the_podmonitor_selects_only_the_serving_rank_of_a_two_node_job(k: Cluster, helm: Any) -> None:
    """Only rank 0 serves /metrics: the chart's PodMonitor, listed through the apiserver with
    its exact selector, matches the master pod of a 2-node job and never a worker (nor a
    model initializer's pod, nor any other job's non-zero rank): every target it makes is up."""
    name = "two-node-metrics"
    body = ftj_cluster.tiny_job(name)
    body["spec"]["resources"].update(nodes=2, gpusPerNode=1)  # the CRD: several nodes need GPUs
    k.apply(body)
    pods = wait_for(lambda: k.running_pods(name, 2), timeout=180, what="both nodes' pods running under kwok")
    selector = podmonitor_selector(helm, k.backend.name)
    selected = k.core.list_namespaced_pod(k.ns, label_selector=selector).items
    mine = [p.metadata.name for p in selected if (p.metadata.labels or {}).get("speechtune.dev/finetunejob") == name]
    assert mine == [k.rank0(name)], (selector, mine)
    workers = {p.metadata.name for p in pods} - set(mine)
    assert len(workers) == 1 and not workers & {p.metadata.name for p in selected}
    # Across the namespace (the other tests' jobs, initializer pods included): rank 0 only.
    for pod in selected:
        assert k.backend.rank0_labels.items() <= (pod.metadata.labels or {}).items(), pod.metadata.name
        assert "speechtune.dev/component" not in (pod.metadata.labels or {})
    k.cluster.kubectl("delete", "-n", k.ns, "finetunejob", name)
