"""Operator bursts against the control plane's own floor, side by side in one run (`make bench`).

For a burst of 100 and of 500 jobs (16 client threads, all suspended, so no pods: this
measures the operator and the API, not the scheduler or kwok), per backend the cluster
serves (PyTorchJob; TrainJob where Trainer v2 and the chart's runtimes are installed):
- floor: the same children the operator would build, created directly by the client in a
  namespace the operator does not watch;
- FTJs alone: the FinetuneJobs created where no operator watches (no children);
- operator: FinetuneJobs created by the client; the operator makes their children.
Floor and operator are timed from the first create call to the last child a watch sees, so
the ratio is what the operator path costs on top of the apiserver, etcd and the child's
validating webhook. API writes per job are the apiserver's own request counters (POST, PUT,
PATCH on FinetuneJobs, children, NetworkPolicies, ConfigMaps, Events) of the operator round minus those of
the floor round, which has the same controller writes. Memory: the operator's
resident set after the 500 burst, and after a second 500 burst (the first one deleted).
Uses SPEECHTUNE_KUBECONFIG when set, else brings the local control plane up.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "operator"))
sys.path.insert(0, str(REPO / "hack" / "cluster"))

import kubernetes  # noqa: E402
import yaml  # noqa: E402
from prometheus_client import parser  # noqa: E402

import ftj_cluster  # noqa: E402
from speechtune_operator import settings as operator_settings  # noqa: E402
from speechtune_operator.builders import backends  # noqa: E402

# SPEECHTUNE_BENCH_SIZES=3 for a quick smoke run of the bench itself.
SIZES = tuple(int(n) for n in os.environ.get("SPEECHTUNE_BENCH_SIZES", "100,500").split(","))
CLIENT_THREADS = 16
FTJ = (ftj_cluster.GROUP, ftj_cluster.VERSION, ftj_cluster.PLURAL)
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY"})
WRITE_RESOURCES = frozenset({"finetunejobs", "pytorchjobs", "trainjobs", "configmaps", "events", "networkpolicies"})


def kubeconfig() -> tuple[Path, dict[str, str]]:
    external = os.environ.get("SPEECHTUNE_KUBECONFIG")
    if external:
        return Path(external), {**os.environ, "KUBECONFIG": external}
    from localcluster import build, cluster  # noqa: PLC0415  (hack/ is not a package)

    layout = cluster.default_layout()
    bins = build.ensure_binaries()
    # Both backends side by side: JobSet and Trainer v2 too, and the chart's runtimes.
    cluster.ensure_up(layout, started_by="bench_operator", backends=("pytorchjob", "trainjob"))
    env = cluster.kubectl_env(layout, bins)
    install_training_runtimes(bins.path("helm"), env)
    return layout.kubeconfig, env


def install_training_runtimes(helm: Path, env: dict[str, str]) -> None:
    """The chart's ClusterTrainingRuntimes (backend=trainjob), which the TrainJobs reference."""
    import subprocess  # noqa: PLC0415

    rendered = subprocess.run([str(helm), "template", "speechtune", str(REPO / "charts" / "speechtune"), "--set",
                               "backend=trainjob", "--show-only", "templates/trainingruntimes.yaml"],
                              capture_output=True, text=True, check=True).stdout
    subprocess.run(["kubectl", "apply", "-f", "-"], input=rendered, env=env, text=True, check=True,
                   stdout=subprocess.DEVNULL)


def resource(backend: backends.Backend) -> tuple[str, str, str]:
    return backend.child.group, backend.child.version, backend.child.plural


class ChildWatch:
    """When each object of a resource in a namespace is first seen, and its latest body."""

    def __init__(self, custom: kubernetes.client.CustomObjectsApi, namespace: str,
                 resource: tuple[str, str, str]) -> None:
        self.seen: dict[str, float] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(custom, namespace, resource), daemon=True)
        self._thread.start()
        time.sleep(1.0)  # the watch is open before the burst starts

    def _run(self, custom: kubernetes.client.CustomObjectsApi, namespace: str, resource: tuple[str, str, str]) -> None:
        group, version, plural = resource
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(custom.list_namespaced_custom_object, group, version, namespace,
                                          plural, timeout_seconds=600):
                    name = event["object"]["metadata"]["name"]
                    self.seen.setdefault(name, time.monotonic())
                    self.latest[name] = event["object"]
                    if self._stop.is_set():
                        break
            except Exception:  # noqa: BLE001 - a broken watch is simply restarted (it lists again)
                time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()


def burst(create: Callable[[str], None], names: list[str]) -> tuple[float, dict[str, float]]:
    """(when the burst started, when each create call returned), CLIENT_THREADS at once."""
    created: dict[str, float] = {}

    def one(name: str) -> None:
        create(name)
        created[name] = time.monotonic()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(one, names))
    return started, created


def suspended_body(name: str, namespace: str) -> dict[str, Any]:
    body = ftj_cluster.tiny_job(name)
    body["spec"]["runPolicy"] = {"suspend": True}
    body["metadata"]["namespace"] = namespace
    return body


def floor_child(backend: backends.Backend, name: str, namespace: str) -> dict[str, Any]:
    """The child the operator makes for the bench's FinetuneJob, as the operator builds it."""
    body = suspended_body(name, namespace)
    body["metadata"]["uid"] = str(uuid.uuid4())
    return backend.build(body, operator_settings.Settings(backend=backend.name))


def api_writes(core: kubernetes.client.CoreV1Api) -> collections.Counter[str]:
    """The apiserver's write counters for the resources a job touches, by resource and verb."""
    client = core.api_client
    method, url, headers, body, post = client.param_serialize(
        method="GET", resource_path="/metrics", auth_settings=["BearerToken"])
    response = client.call_api(method, url, header_params=headers, body=body, post_params=post)
    response.read()
    counts: collections.Counter[str] = collections.Counter()
    for family in parser.text_string_to_metric_families(response.data.decode()):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (sample.name.endswith("_total") and labels.get("verb") in WRITE_VERBS
                    and labels.get("resource") in WRITE_RESOURCES):
                sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
                counts[f"{labels['verb']} {labels['resource']}{sub}"] += int(sample.value)
    return counts


def suspended(backend: backends.Backend, child: dict[str, Any]) -> bool:
    return bool(child) and backend.read(child).phase == "Suspended"


def settle(check: Callable[[], bool], what: str) -> None:
    ftj_cluster.wait_for(check, timeout=600, interval=0.5, what=what)
    time.sleep(3)  # late Events and status writes land in this round's counters


def floor_round(core: Any, custom: Any, backend: backends.Backend, namespace: str, size: int) -> dict[str, Any]:
    names = [f"floor-{size}-{i:04d}" for i in range(size)]
    group, version, plural = resource(backend)
    watch = ChildWatch(custom, namespace, resource(backend))
    before = api_writes(core)
    started, _ = burst(lambda name: custom.create_namespaced_custom_object(
        group, version, namespace, plural, floor_child(backend, name, namespace)), names)
    ftj_cluster.wait_for(lambda: all(name in watch.seen for name in names), timeout=600, interval=0.1,
                         what=f"{size} {plural}")
    last = max(watch.seen[name] for name in names) - started
    median = statistics.median(watch.seen[name] - started for name in names)
    settle(lambda: all(suspended(backend, watch.latest.get(name, {})) for name in names),
           f"{size} {plural} Suspended")
    watch.stop()
    return {"last": last, "median": median, "writes": api_writes(core) - before}


def finetunejobs_alone_round(custom: Any, namespace: str, size: int) -> dict[str, Any]:
    """The FinetuneJobs' own creation, where no operator watches: the other half of the
    operator path's work for the apiserver (schema, CEL rules, etcd)."""
    names = [f"alone-{size}-{i:04d}" for i in range(size)]
    watch = ChildWatch(custom, namespace, FTJ)
    started, _ = burst(lambda name: custom.create_namespaced_custom_object(
        ftj_cluster.GROUP, ftj_cluster.VERSION, namespace, ftj_cluster.PLURAL, suspended_body(name, namespace)),
        names)
    ftj_cluster.wait_for(lambda: all(name in watch.seen for name in names), timeout=600, interval=0.1,
                         what=f"{size} FinetuneJobs")
    watch.stop()
    return {"last": max(watch.seen[name] for name in names) - started}


def operator_round(core: Any, custom: Any, backend: backends.Backend, namespace: str, size: int,
                   operator: ftj_cluster.OperatorProcess, tag: str = "") -> dict[str, Any]:
    names = [f"bench-{size}{tag}-{i:04d}" for i in range(size)]
    watch = ChildWatch(custom, namespace, resource(backend))
    before = api_writes(core)
    cpu_before = operator.cpu_seconds()
    started, _ = burst(lambda name: custom.create_namespaced_custom_object(
        ftj_cluster.GROUP, ftj_cluster.VERSION, namespace, ftj_cluster.PLURAL, suspended_body(name, namespace)),
        names)
    ftj_cluster.wait_for(lambda: all(name in watch.seen for name in names), timeout=600, interval=0.1,
                         what=f"{size} {backend.child.plural}")
    last = max(watch.seen[name] for name in names) - started
    median = statistics.median(watch.seen[name] - started for name in names)
    watch.stop()

    def all_suspended() -> bool:
        jobs = custom.list_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace,
                                                    ftj_cluster.PLURAL)["items"]
        return len(jobs) == size and all((j.get("status") or {}).get("phase") == "Suspended" for j in jobs)

    settle(all_suspended, f"{size} FinetuneJobs Suspended")
    return {"last": last, "median": median, "writes": api_writes(core) - before,
            "cpu_ms_per_job": 1000 * (operator.cpu_seconds() - cpu_before) / size,
            "rss_mib": operator.rss_bytes() / 2**20}


def delete_all(custom: Any, backend: backends.Backend, namespace: str) -> None:
    kinds = (FTJ, resource(backend))
    for group, version, plural in kinds:
        custom.delete_collection_namespaced_custom_object(group, version, namespace, plural)
    ftj_cluster.wait_for(lambda: not any(custom.list_namespaced_custom_object(*kind[:2], namespace, kind[2], limit=1)["items"]
                                         for kind in kinds),
                         timeout=600, interval=1, what="deletion of the previous round")


def install_crd(core: Any) -> None:
    crd = yaml.safe_load(ftj_cluster.CRD.read_text())
    extensions = kubernetes.client.ApiextensionsV1Api(core.api_client)
    try:
        extensions.create_custom_resource_definition(crd)
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise
        existing = extensions.read_custom_resource_definition(crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = existing.metadata.resource_version
        extensions.replace_custom_resource_definition(crd["metadata"]["name"], crd)


def per_job(writes: collections.Counter[str], size: int) -> str:
    return " ".join(f"{key}={value / size:.2f}" for key, value in sorted(writes.items()) if value)


def served_backends(core: Any) -> list[backends.Backend]:
    """PyTorchJob always (the local control plane runs the training-operator); TrainJob where
    the cluster has Trainer v2 and the runtime the bench's speechbrain-ctc jobs reference."""
    served = [backends.PYTORCHJOB]
    custom = kubernetes.client.CustomObjectsApi(core.api_client)
    try:
        custom.get_cluster_custom_object(backends.TRAINJOB.child.group, backends.TRAINJOB.child.version,
                                         "clustertrainingruntimes", "speechtune-speechbrain-ctc")
        served.append(backends.TRAINJOB)
    except kubernetes.client.ApiException as error:
        if error.status != 404:
            raise
    return served


def run_backend(core: Any, custom: Any, config: Path, backend: backends.Backend) -> dict[str, Any]:
    """Every round of one backend, with one operator process watching its own namespace."""
    suffix = uuid.uuid4().hex[:6]
    watched, unwatched = f"bench-{suffix}", f"bench-floor-{suffix}"
    for namespace in (watched, unwatched):
        core.create_namespace({"metadata": {"name": namespace}})
    log = Path(tempfile.mkdtemp(prefix="bench-operator-")) / "operator.log"
    rows: list[dict[str, Any]] = []
    rss: list[float] = []
    try:
        # At the log level it is deployed with: debug logging of whole bodies costs CPU and memory.
        with ftj_cluster.running_operator(kubeconfig=config, namespace=watched, log=log, verbose=False,
                                          extra_env={"SPEECHTUNE_BACKEND": backend.name}) as operator:
            rss.append(operator.rss_bytes() / 2**20)
            for size in SIZES:
                floor = floor_round(core, custom, backend, unwatched, size)
                delete_all(custom, backend, unwatched)
                alone = finetunejobs_alone_round(custom, unwatched, size)
                delete_all(custom, backend, unwatched)
                op = operator_round(core, custom, backend, watched, size, operator)
                delete_all(custom, backend, watched)
                rows.append({"size": size, "floor": floor, "alone": alone, "op": op})
            rss.append(rows[-1]["op"]["rss_mib"])
            again = operator_round(core, custom, backend, watched, max(SIZES), operator, tag="b")
            rss.append(again["rss_mib"])
            delete_all(custom, backend, watched)
    finally:
        for namespace in (watched, unwatched):
            core.delete_namespace(namespace)
    return {"backend": backend, "rows": rows, "rss": rss, "log": log}


def main() -> None:
    config, _ = kubeconfig()
    core, custom = ftj_cluster.api_clients(config)
    install_crd(core)
    results = [run_backend(core, custom, config, backend) for backend in served_backends(core)]
    # floor: children created directly; FTJs alone: FinetuneJobs created where no operator
    # watches (no children). The operator path does both kinds of create.
    print(f"{'backend':>10} {'jobs at once':>12} {'floor last (s)':>14} {'operator last (s)':>17} {'ratio':>6}"
          f" {'FTJs alone (s)':>14} {'floor p50 (s)':>13} {'op p50 (s)':>10} {'op CPU/job (ms)':>15}"
          f" {'op writes/job':>13}")
    for result in results:
        for row in result["rows"]:
            floor, op, size = row["floor"], row["op"], row["size"]
            writes = sum(op["writes"].values()) - sum(floor["writes"].values())
            print(f"{result['backend'].name:>10} {size:>12} {floor['last']:>14.2f} {op['last']:>17.2f}"
                  f" {op['last'] / floor['last']:>6.2f} {row['alone']['last']:>14.2f} {floor['median']:>13.2f}"
                  f" {op['median']:>10.2f} {op['cpu_ms_per_job']:>15.1f} {writes / size:>13.2f}")
    for result in results:
        name, rss = result["backend"].name, result["rss"]
        for row in result["rows"]:
            size = row["size"]
            print(f"{name}: writes per job, burst of {size}: operator round: {per_job(row['op']['writes'], size)}")
            print(f"{name}: writes per job, burst of {size}: floor round:    {per_job(row['floor']['writes'], size)}")
        print(f"{name}: operator RSS {rss[0]:.0f} MiB at start, {rss[1]:.0f} MiB after a burst of {max(SIZES)},"
              f" {rss[2]:.0f} MiB after a second burst of {max(SIZES)} (the first deleted)  (log: {result['log']})")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
