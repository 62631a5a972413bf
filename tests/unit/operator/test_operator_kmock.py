"""The operator's handlers end to end against kmock's in-memory Kubernetes API: the real
kopf machinery (watches, handler progress, patches, events) and the real Kubernetes client,
without a control plane. The real-apiserver tier is tests/operator."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, TypeVar

import kmock as km
import kopf
import kubernetes
import prometheus_client
import pytest
import pytest_asyncio

import ftj_crd
from polling import free_port
from speechtune_operator import main, settings, telemetry
from speechtune_operator.builders import backends
from speechtune_operator.client import api
from speechtune_operator.handlers import jobcache, registration

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]
NS = "research"
FTJ = "speechtune.dev/v1alpha1/finetunejobs"
PJ = "kubeflow.org/v1/pytorchjobs"
TJ = "trainer.kubeflow.org/v1alpha1/trainjobs"
JOBS = "batch/v1/jobs"
T = TypeVar("T")


@dataclasses.dataclass
class Harness:
    server: km.KubernetesEmulator
    clients: api.Clients
    config: settings.Settings
    telemetry: telemetry.Telemetry

    def reconciled(self) -> float:
        """Handler runs that succeeded so far (creation and status mirror)."""
        return float(self.telemetry.reconciles.labels(telemetry.RESULT_SUCCESS)._value.get())

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # The Kubernetes client blocks; kmock serves from this event loop.
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def create_job(self, example: str = "speechbrain-atc0", **metadata: Any) -> dict[str, Any]:
        body = ftj_crd.stored(example, namespace=NS)
        # kmock keeps no resourceVersion; kopf's JSON-patches test it, so give one that stays.
        body["metadata"].update(resourceVersion="1", **metadata)
        await self.call(self.clients.custom.create_namespaced_custom_object,
                        "speechtune.dev", "v1alpha1", NS, "finetunejobs", body)
        return body

    def objects(self, resource: str) -> list[dict[str, Any]]:
        wanted = km.resource(resource)
        return [obj.raw for key, obj in self.server.objects.items()
                if key[0] == wanted and not obj.deleted]

    def get(self, resource: str, name: str) -> dict[str, Any]:
        return self.server.objects[resource, NS, name].raw

    def events(self) -> list[dict[str, Any]]:
        return [request.data for request in self.server["post"]
                if request.resource is not None and request.resource.plural == "events"]


async def eventually(check: Callable[[], T], *, timeout: float = 20) -> T:
    """Poll until check() returns a truthy value or stops raising; generous on slow machines."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (KeyError, AssertionError, IndexError):
            if asyncio.get_running_loop().time() > deadline:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in {timeout}s: {check}")
        await asyncio.sleep(0.05)


def declare_resources(server: km.KubernetesEmulator) -> None:
    verbs = {"list", "watch", "get", "create", "patch", "update", "delete"}
    server.resources[FTJ] = km.ResourceInfo(kind="FinetuneJob", namespaced=True, subresources={"status"}, verbs=verbs)
    server.resources[PJ] = km.ResourceInfo(kind="PyTorchJob", namespaced=True, subresources={"status"}, verbs=verbs)
    server.resources[TJ] = km.ResourceInfo(kind="TrainJob", namespaced=True, subresources={"status"}, verbs=verbs)
    server.resources[JOBS] = km.ResourceInfo(kind="Job", namespaced=True, subresources={"status"}, verbs=verbs)
    for plural, kind in (("pods", "Pod"), ("configmaps", "ConfigMap"), ("events", "Event")):
        server.resources[f"v1/{plural}"] = km.ResourceInfo(kind=kind, namespaced=True, verbs=verbs)
    # kopf watches these to notice resources and namespaces appearing at run time.
    server.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = km.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=verbs)
    server.resources["v1/namespaces"] = km.ResourceInfo(kind="Namespace", namespaced=False, verbs=verbs)
    server.resources["networking.k8s.io/v1/networkpolicies"] = km.ResourceInfo(
        kind="NetworkPolicy", namespaced=True, verbs=verbs)


@pytest_asyncio.fixture
async def operator(kmock: km.KubernetesEmulator) -> AsyncIterator[Harness]:
    async with running(kmock, "pytorchjob") as harness:
        yield harness


@pytest_asyncio.fixture
async def trainjob_operator(kmock: km.KubernetesEmulator) -> AsyncIterator[Harness]:
    async with running(kmock, "trainjob") as harness:
        yield harness


@pytest_asyncio.fixture
async def fenced_operator(kmock: km.KubernetesEmulator) -> AsyncIterator[Harness]:
    """As the chart runs it by default: each job gets its NetworkPolicy."""
    async with running(kmock, "pytorchjob", trainer_network_policy=True, operator_namespace="speechtune-system",
                       prometheus_namespaces=("monitoring",)) as harness:
        yield harness


@contextlib.asynccontextmanager
async def running(kmock: km.KubernetesEmulator, backend: str, **overrides: Any) -> AsyncIterator[Harness]:
    declare_resources(kmock)
    url = str(kmock.url).rstrip("/")
    client_api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
    clients = api.Clients(custom=kubernetes.client.CustomObjectsApi(client_api))
    # The operator scrapes the master pod's metrics port, on 127.0.0.1 instead of its IP.
    config = settings.Settings(scrape_interval=0.2, scrape_timeout=1.0, metrics_port=0, workers=4,
                               test_scrape_host="127.0.0.1", trainer_metrics_port=free_port(), backend=backend,
                               **overrides)
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url)

    backend = backends.for_settings(config)
    context = registration.Context(settings=config, clients=clients, cache=jobcache.JobCache(),
                                   telemetry=telemetry.Telemetry(), backend=backend,
                                   children=jobcache.ChildCache(backend.user_suspended))
    registration.register(registry, context)
    # kopf owns its event loop (it cancels tasks it finds there on exit): give it a thread.
    stop, ready = threading.Event(), threading.Event()
    kopf_config = main.kopf_settings(config, context.children)
    # kopf can post its log lines (handler failures included) as Events; on here, so the
    # tests see that whatever reaches an Event that way is in our words.
    kopf_config.posting.loggers = True
    thread = threading.Thread(target=lambda: asyncio.run(kopf.operator(
        registry=registry, settings=kopf_config, standalone=True, clusterwide=True,
        stop_flag=stop, ready_flag=ready)), daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, 30), "the operator did not start"
    try:
        yield Harness(server=kmock, clients=clients, config=config, telemetry=context.telemetry)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)


async def set_pj_conditions(h: Harness, name: str, *conditions: tuple[str, str]) -> None:
    status = {"conditions": [{"type": t, "status": s, "reason": f"PyTorchJob{t}", "message": f"PyTorchJob {name} is {t}.",
                              "lastTransitionTime": "2026-01-01T00:00:00Z"} for t, s in conditions],
              "startTime": "2026-01-01T00:00:00Z"}
    await h.call(h.clients.custom.patch_namespaced_custom_object_status, "kubeflow.org", "v1", NS, "pytorchjobs",
                 name, {"status": status})


async def test_creation_makes_one_owned_pytorchjob_and_nothing_else(operator: Harness) -> None:
    body = await operator.create_job(uid="uid-1")
    [pj] = await eventually(lambda: operator.objects(PJ))
    [owner] = pj["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == \
        ("FinetuneJob", body["metadata"]["name"], "uid-1", True)
    assert pj["metadata"]["name"] == "sb-conformer-atc0-lora"
    assert operator.objects("v1/configmaps") == []  # the job file travels in the pod template
    # No status before the training-operator's first (kmock has none: this test plays it).
    await asyncio.sleep(0.5)
    assert "status" not in operator.get(FTJ, "sb-conformer-atc0-lora")
    await set_pj_conditions(operator, "sb-conformer-atc0-lora", ("Created", "True"))
    status = await eventually(lambda: operator.get(FTJ, "sb-conformer-atc0-lora")["status"])
    assert (status["phase"], status["pytorchJob"], status["observedGeneration"]) == \
        ("Pending", "sb-conformer-atc0-lora", 1)
    # Handling the new job wrote nothing to it but that status: no bookkeeping annotation,
    # no finalizer (kopf's record of what is handled is the child).
    metadata = operator.get(FTJ, "sb-conformer-atc0-lora")["metadata"]
    assert not any(key.startswith("speechtune.dev/") for key in metadata.get("annotations") or {}), metadata.get("annotations")
    assert not metadata.get("finalizers")
    patches = [r for r in operator.server["patch"] if r.resource is not None and r.resource.plural == "finetunejobs"]
    assert [r.subresource for r in patches] == ["status"]
    assert any(e.get("reason") == "PyTorchJobCreated" for e in await eventually(operator.events))


async def test_an_existing_child_is_adopted_not_duplicated(operator: Harness) -> None:
    # As if an earlier operator process died after creating the PyTorchJob: the retry finds it.
    from speechtune_operator.builders import pytorchjob
    body = ftj_crd.stored("speechbrain-atc0", namespace=NS, uid="uid-2")
    existing = pytorchjob.build_pytorchjob(body, settings.Settings())
    kopf.adopt(existing, owner=kopf.Body(body))
    await operator.call(operator.clients.custom.create_namespaced_custom_object, "kubeflow.org", "v1", NS,
                        "pytorchjobs", existing)
    await operator.create_job(uid="uid-2")
    # Seen by the operator: its child's status reaches it.
    await set_pj_conditions(operator, body["metadata"]["name"], ("Created", "True"))
    await eventually(lambda: operator.get(FTJ, body["metadata"]["name"]).get("status", {}).get("pytorchJob"))
    # Whether the child's watch event came first (nothing to do) or the job's (the creation
    # handler meets 409 and reads it): still exactly one PyTorchJob, the existing one.
    [pj] = operator.objects(PJ)
    assert pj["spec"] == existing["spec"]


async def test_pytorchjob_conditions_drive_phase_and_events(operator: Harness) -> None:
    await operator.create_job(uid="uid-3")
    name = "sb-conformer-atc0-lora"
    await eventually(lambda: operator.objects(PJ))
    await set_pj_conditions(operator, name, ("Created", "True"), ("Running", "True"))
    status = await eventually(lambda: operator.get(FTJ, name)["status"].get("phase") == "Running" and
                              operator.get(FTJ, name)["status"])
    assert status["startTime"] == "2026-01-01T00:00:00Z"
    assert [c["type"] for c in status["conditions"]] == ["Created", "Running"]
    await set_pj_conditions(operator, name, ("Created", "True"), ("Running", "False"), ("Succeeded", "True"))
    await eventually(lambda: operator.get(FTJ, name)["status"]["phase"] == "Succeeded")
    reasons = lambda: [e["reason"] for e in operator.events()]  # noqa: E731
    await eventually(lambda: "TrainingSucceeded" in reasons())
    assert reasons().index("TrainingRunning") < reasons().index("TrainingSucceeded")


async def test_failure_carries_the_pods_reason(operator: Harness) -> None:
    await operator.create_job(uid="uid-4")
    name = "sb-conformer-atc0-lora"
    await eventually(lambda: operator.objects(PJ))
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"{name}-master-0", "namespace": NS, "labels": {
               "training.kubeflow.org/job-name": name, "training.kubeflow.org/replica-type": "master"}},
           "spec": {"containers": [{"name": "pytorch", "image": "x"}]},
           "status": {"phase": "Failed", "containerStatuses": [{"name": "pytorch", "image": "x", "imageID": "", "ready": False,
                                                         "restartCount": 0, "state": {"terminated": {
               "exitCode": 1, "reason": "Error", "message": "manifest atc0/base/train.csv: no such file"}}}]}}
    await operator.call(kubernetes.client.CoreV1Api(operator.clients.custom.api_client).create_namespaced_pod, NS, pod)
    await set_pj_conditions(operator, name, ("Created", "True"), ("Failed", "True"))
    status = await eventually(lambda: operator.get(FTJ, name)["status"].get("phase") == "Failed" and
                              operator.get(FTJ, name)["status"])
    assert "pod sb-conformer-atc0-lora-master-0 failed: Error (exit code 1)" in status["message"]
    assert "no such file" in status["message"]
    failed = await eventually(lambda: [e for e in operator.events() if e.get("reason") == "TrainingFailed"])
    assert failed[0]["type"] == "Warning" and "exit code 1" in failed[0]["message"]


async def test_suspend_and_resume_reach_the_pytorchjob(operator: Harness) -> None:
    await operator.create_job(uid="uid-5")
    name = "sb-conformer-atc0-lora"
    await eventually(lambda: operator.objects(PJ))
    await set_pj_conditions(operator, name, ("Created", "True"))
    await eventually(lambda: operator.get(FTJ, name).get("status", {}).get("pytorchJob"))
    for suspend in (True, False):
        await operator.call(operator.clients.custom.patch_namespaced_custom_object, "speechtune.dev", "v1alpha1",
                            NS, "finetunejobs", name, {"spec": {"runPolicy": {"suspend": suspend}}})
        await eventually(lambda: operator.get(PJ, name)["spec"]["runPolicy"]["suspend"] is suspend)


async def test_a_finished_job_is_not_recreated(operator: Harness) -> None:
    # Succeeded before the operator (re)started and its PyTorchJob was deleted by its TTL.
    body = ftj_crd.stored("speechbrain-atc0", namespace=NS, uid="uid-6")
    body["status"] = {"phase": "Succeeded", "pytorchJob": body["metadata"]["name"]}
    body["metadata"]["resourceVersion"] = "1"
    await operator.call(operator.clients.custom.create_namespaced_custom_object, "speechtune.dev", "v1alpha1",
                        NS, "finetunejobs", body)
    await eventually(lambda: operator.reconciled() >= 1)  # the creation handler ran, and made nothing
    await asyncio.sleep(0.5)
    assert operator.objects(PJ) == []


async def test_a_spec_too_large_for_the_pod_fails_the_job_with_the_reason(operator: Harness) -> None:
    body = ftj_crd.stored("speechbrain-atc0", namespace=NS, uid="uid-8")
    body["spec"]["training"]["overrides"] = {"note": "x" * 300_000}
    body["metadata"]["resourceVersion"] = "1"
    await operator.call(operator.clients.custom.create_namespaced_custom_object, "speechtune.dev", "v1alpha1",
                        NS, "finetunejobs", body)
    name = body["metadata"]["name"]
    status = await eventually(lambda: operator.get(FTJ, name).get("status", {}).get("phase") == "Failed" and
                              operator.get(FTJ, name)["status"])
    assert status["message"].startswith("spec: the job file is 294 KiB; at most 240 KiB fit")
    # kmock's watch may replay the creation: the handler may run twice before the status.
    events = await eventually(lambda: [e for e in operator.events() if e.get("reason") == "InvalidSpec"])
    assert all(e["type"] == "Warning" and e["message"] == status["message"] for e in events)
    assert operator.objects(PJ) == []


@contextlib.contextmanager
def trainer_endpoint(job: str, port: int) -> Iterator[int]:
    registry = prometheus_client.CollectorRegistry()
    labels = {"finetunejob": job, "namespace": NS, "engine": "speechbrain-ctc"}
    for name, value in (("speechtune_step", 40), ("speechtune_max_steps", 200), ("speechtune_val_wer_ratio", 0.25)):
        prometheus_client.Gauge(name, name, list(labels), registry=registry).labels(**labels).set(value)
    server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        thread.join()


def running_master_pod(job: str, metrics_port: int) -> dict[str, Any]:
    """As the training-operator makes it and kwok runs it: rank 0's labels, an IP (the
    operator's test setting swaps that IP for 127.0.0.1) and the port named metrics."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{job}-master-0", "namespace": NS, "labels": {
                "training.kubeflow.org/job-name": job, "training.kubeflow.org/replica-type": "master",
                "training.kubeflow.org/replica-index": "0"}},
            "spec": {"containers": [{"name": "pytorch", "image": "x", "ports": [
                {"name": "metrics", "containerPort": metrics_port}]}]},
            "status": {"phase": "Running", "podIP": "10.244.0.9"}}


async def test_running_job_progress_is_scraped_from_its_master_pod_only(operator: Harness, tmp_path: Any) -> None:
    name = "sb-conformer-atc0-lora"
    secret = tmp_path / "token"
    secret.write_text("eyJ-service-account-token-not-for-users")
    with trainer_endpoint(name, operator.config.trainer_metrics_port) as port:
        # The annotation that once chose the scrape URL is ignored, file:// or not.
        await operator.create_job(uid="uid-7", annotations={"speechtune.dev/metrics-url": f"file://{secret}"})
        await eventually(lambda: operator.objects(PJ))
        await operator.call(kubernetes.client.CoreV1Api(operator.clients.custom.api_client).create_namespaced_pod, NS, running_master_pod(name, port))
        await set_pj_conditions(operator, name, ("Created", "True"), ("Running", "True"))
        status = await eventually(lambda: "progress" in operator.get(FTJ, name).get("status", {}) and
                                  operator.get(FTJ, name)["status"])
    assert status["progress"] == {"step": 40, "maxSteps": 200, "summary": "20% (40/200)"}
    assert status["metrics"] == {"wer": 0.25}
    assert "service-account-token" not in str(operator.events()) + str(operator.get(FTJ, name))


async def test_a_failing_handler_posts_our_words_not_the_users_data(operator: Harness) -> None:
    # kmock does not enforce the CRD schema: a value the builder chokes on stands for any
    # exception whose text quotes what the user wrote (before: kopf's Event carried it).
    secret = "eyJ-user-data-in-an-exception-4242"
    body = ftj_crd.stored("speechbrain-atc0", namespace=NS, uid="uid-8")
    body["metadata"]["resourceVersion"] = "1"
    body["spec"]["resources"]["nodes"] = secret
    await operator.call(operator.clients.custom.create_namespaced_custom_object, "speechtune.dev", "v1alpha1",
                        NS, "finetunejobs", body)
    failed = await eventually(lambda: [e for e in operator.events() if "creating the children failed" in e["message"]])
    assert "ValueError; will retry" in failed[0]["message"]
    assert secret not in str(operator.events())


async def test_trainjob_backend_makes_one_owned_trainjob_and_mirrors_its_conditions(trainjob_operator: Harness) -> None:
    h = trainjob_operator
    body = await h.create_job(uid="uid-tj")
    name = body["metadata"]["name"]
    [tj] = await eventually(lambda: h.objects(TJ))
    assert tj["metadata"]["ownerReferences"][0]["uid"] == "uid-tj"
    assert tj["spec"]["runtimeRef"]["name"] == "speechtune-speechbrain-ctc"
    assert not h.objects(PJ)
    await h.call(h.clients.custom.patch_namespaced_custom_object_status, "trainer.kubeflow.org", "v1alpha1", NS,
                 "trainjobs", name, {"status": {"jobsStatus": [{"name": "node", "ready": 1, "active": 1}]}})
    await eventually(lambda: h.get(FTJ, name).get("status", {}).get("phase") == "Running")
    assert h.get(FTJ, name)["status"]["trainJob"] == name
    await h.call(h.clients.custom.patch_namespaced_custom_object_status, "trainer.kubeflow.org", "v1alpha1", NS,
                 "trainjobs", name, {"status": {"conditions": [
                     {"type": "Complete", "status": "True", "reason": "AllJobsCompleted", "message": "jobset completed",
                      "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    await eventually(lambda: h.get(FTJ, name).get("status", {}).get("phase") == "Succeeded")
    await eventually(lambda: {"TrainJobCreated", "TrainingRunning", "TrainingSucceeded"}
                     <= {event["reason"] for event in h.events()})


async def test_trainjob_backend_refuses_what_it_cannot_carry_once_by_name(trainjob_operator: Harness) -> None:
    h = trainjob_operator
    body = ftj_crd.stored("speechbrain-atc0", namespace=NS)
    body["metadata"].update(resourceVersion="1", uid="uid-prio")
    body["spec"]["resources"]["priorityClassName"] = "high"
    await h.call(h.clients.custom.create_namespaced_custom_object, "speechtune.dev", "v1alpha1", NS, "finetunejobs", body)
    status = await eventually(lambda: h.get(FTJ, body["metadata"]["name"]).get("status", {}).get("phase") == "Failed"
                              and h.get(FTJ, body["metadata"]["name"])["status"])
    assert "spec.resources.priorityClassName" in status["message"]
    assert not h.objects(TJ)
    await eventually(lambda: any(e["reason"] == "UnsupportedByBackend" for e in h.events()))


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("image", "docker.io/someone/trainer:latest", "ImageNotAllowed"),
    ("priorityClassName", "system-node-critical", "PriorityClassNotAllowed"),
])
async def test_a_refused_job_fails_without_children(operator: Harness, field: str, value: str, reason: str) -> None:
    body = ftj_crd.stored("speechbrain-atc0", namespace=NS, uid="uid-9")
    body["metadata"]["resourceVersion"] = "1"
    if field == "image":
        body["spec"]["image"] = value
    else:
        body["spec"]["resources"]["priorityClassName"] = value
    await operator.call(operator.clients.custom.create_namespaced_custom_object, "speechtune.dev", "v1alpha1",
                        NS, "finetunejobs", body)
    name = body["metadata"]["name"]
    status = await eventually(lambda: operator.get(FTJ, name).get("status", {}).get("phase") == "Failed" and
                              operator.get(FTJ, name)["status"])
    assert status["message"].startswith("spec.image: " if field == "image" else "spec.resources.priorityClassName: ")
    # One Event; kmock's watch may replay the creation before the Failed status is seen: two.
    event, *_ = await eventually(lambda: [e for e in operator.events() if e.get("reason") == reason])
    assert event["type"] == "Warning" and event["message"] == status["message"]
    await asyncio.sleep(0.5)  # the handler ran (its Event is out): nothing may follow it
    assert operator.objects(PJ) == []


NP = "networking.k8s.io/v1/networkpolicies"


async def test_each_job_is_fenced_before_its_pods_can_exist(fenced_operator: Harness) -> None:
    h = fenced_operator
    body = await h.create_job(uid="uid-np")
    name = body["metadata"]["name"]
    [policy] = await eventually(lambda: h.objects(NP))
    await eventually(lambda: h.objects(PJ))
    [owner] = policy["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("FinetuneJob", name, "uid-np")
    assert policy["metadata"]["name"] == f"{name}-trainers"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"speechtune.dev/finetunejob": name}}
    posts = [r.resource.plural for r in h.server["post"] if r.resource is not None
             and r.resource.plural in ("networkpolicies", "pytorchjobs")]
    assert posts[0] == "networkpolicies"  # the PyTorchJob (and so its pods) only after the fence
    await asyncio.sleep(0.5)
    assert len(h.objects(NP)) == 1  # a replayed creation finds it (409) instead of making a second


async def set_job_condition(h: Harness, name: str, kind: str, reason: str = "", message: str = "") -> None:
    condition = {"type": kind, "status": "True", "reason": reason or kind, "message": message,
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
    await h.call(h.clients.custom.patch_namespaced_custom_object_status, "batch", "v1", NS, "jobs", name,
                 {"status": {"conditions": [condition]}})


async def test_a_hub_model_is_fetched_by_an_owned_job_before_the_pytorchjob(operator: Harness) -> None:
    body = await operator.create_job("mms-banglish-lora", uid="uid-init")
    name = body["metadata"]["name"]
    [job] = await eventually(lambda: operator.objects(JOBS))
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("FinetuneJob", "uid-init", True)
    assert job["metadata"]["name"] == f"{name}-model"
    status = await eventually(lambda: operator.get(FTJ, name)["status"])
    assert (status["phase"], status["initializerJob"]) == ("Initializing", f"{name}-model")
    assert "facebook/mms-1b-all" in status["message"]
    # One Event; kmock's watch may replay the creation before the status is seen: two.
    initializing = [e for e in await eventually(operator.events) if e.get("reason") == "ModelInitializing"]
    assert 1 <= len(initializing) <= 2
    await asyncio.sleep(0.5)
    assert operator.objects(PJ) == []  # no trainer pod before the model is on the volume

    await set_job_condition(operator, f"{name}-model", "Complete")
    [pj] = await eventually(lambda: operator.objects(PJ))
    env = {e["name"]: e.get("value") for e in
           pj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and "HF_TOKEN" not in env
    assert len(operator.objects(JOBS)) == 1


async def test_a_failed_initializer_fails_the_job_with_its_reason(operator: Harness) -> None:
    body = await operator.create_job("mms-banglish-lora", uid="uid-init-fail")
    name = body["metadata"]["name"]
    await eventually(lambda: operator.get(FTJ, name)["status"]["phase"] == "Initializing")
    await set_job_condition(operator, f"{name}-model", "Failed", "BackoffLimitExceeded",
                            "Job has reached the specified backoff limit")
    status = await eventually(lambda: (s := operator.get(FTJ, name)["status"])["phase"] == "Failed" and s)
    assert status["message"] == (f"model initializer Job {name}-model failed: BackoffLimitExceeded: "
                                 "Job has reached the specified backoff limit")
    # The Event is posted after the status write, asynchronously: wait for it, don't sample once.
    await eventually(lambda: any(e.get("reason") == "ModelInitializationFailed" for e in operator.events()))
    await asyncio.sleep(0.5)
    assert operator.objects(PJ) == []


async def test_a_job_without_a_hub_model_makes_no_initializer(operator: Harness) -> None:
    await operator.create_job(uid="uid-no-init")  # speechbrain-atc0: from scratch
    await eventually(lambda: operator.objects(PJ))
    assert operator.objects(JOBS) == []
