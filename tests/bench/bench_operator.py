"""Operator bursts against the control plane's own floor, side by side in one run (`make bench`).

For a burst of 100 and of 500 jobs (16 client threads, all suspended, so no pods: this
measures the operator and the API, not the scheduler or kwok):
- floor: the same PyTorchJobs the operator would build, created directly by the client in a
  namespace the operator does not watch;
- operator: FinetuneJobs created by the client; the operator makes their PyTorchJobs.
Both are timed from the first create call to the last PyTorchJob a watch sees, so the ratio
is what the operator costs on top of the apiserver, etcd and the training-operator's
validating webhook. API writes per job are the apiserver's own request counters (POST, PUT,
PATCH on FinetuneJobs, PyTorchJobs, ConfigMaps, Events) of the operator round minus those of
the floor round, which has the same training-operator writes. Memory: the operator's
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
from speechtune_operator.builders import pytorchjob  # noqa: E402

SIZES = (100, 500)
CLIENT_THREADS = 16
PJ = ("kubeflow.org", "v1")
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY"})
WRITE_RESOURCES = frozenset({"finetunejobs", "pytorchjobs", "configmaps", "events"})


def kubeconfig() -> tuple[Path, dict[str, str]]:
    external = os.environ.get("SPEECHTUNE_KUBECONFIG")
    if external:
        return Path(external), {**os.environ, "KUBECONFIG": external}
    from localcluster import build, cluster  # noqa: PLC0415  (hack/ is not a package)

    layout = cluster.default_layout()
    bins = build.ensure_binaries()
    cluster.ensure_up(layout, started_by="bench_operator")
    return layout.kubeconfig, cluster.kubectl_env(layout, bins)


class ChildWatch:
    """When each object (PyTorchJobs unless told) of a namespace is first seen, and its latest body."""

    def __init__(self, custom: kubernetes.client.CustomObjectsApi, namespace: str,
                 resource: tuple[str, str, str] = (*PJ, "pytorchjobs")) -> None:
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


def floor_pytorchjob(name: str, namespace: str) -> dict[str, Any]:
    """The PyTorchJob the operator makes for the bench's FinetuneJob, as the operator builds it."""
    body = suspended_body(name, namespace)
    body["metadata"]["uid"] = str(uuid.uuid4())
    return pytorchjob.build_pytorchjob(body, operator_settings.Settings())


def api_writes(core: kubernetes.client.CoreV1Api) -> collections.Counter[str]:
    """The apiserver's write counters for the resources a job touches, by resource and verb."""
    response = core.api_client.call_api("/metrics", "GET", auth_settings=["BearerToken"],
                                         _preload_content=False)[0]
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


def suspended(pj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Suspended" and c.get("status") == "True"
               for c in (pj.get("status") or {}).get("conditions") or [])


def settle(check: Callable[[], bool], what: str) -> None:
    ftj_cluster.wait_for(check, timeout=600, interval=0.5, what=what)
    time.sleep(3)  # late Events and status writes land in this round's counters


def floor_round(core: Any, custom: Any, namespace: str, size: int) -> dict[str, Any]:
    names = [f"floor-{size}-{i:04d}" for i in range(size)]
    watch = ChildWatch(custom, namespace)
    before = api_writes(core)
    started, _ = burst(lambda name: custom.create_namespaced_custom_object(
        *PJ, namespace, "pytorchjobs", floor_pytorchjob(name, namespace)), names)
    ftj_cluster.wait_for(lambda: all(name in watch.seen for name in names), timeout=600, interval=0.1,
                         what=f"{size} PyTorchJobs")
    last = max(watch.seen[name] for name in names) - started
    median = statistics.median(watch.seen[name] - started for name in names)
    settle(lambda: all(suspended(watch.latest.get(name, {})) for name in names),
           f"{size} PyTorchJobs Suspended")
    watch.stop()
    return {"last": last, "median": median, "writes": api_writes(core) - before}


def finetunejobs_alone_round(custom: Any, namespace: str, size: int) -> dict[str, Any]:
    """The FinetuneJobs' own creation, where no operator watches: the other half of the
    operator path's work for the apiserver (schema, CEL rules, etcd)."""
    names = [f"alone-{size}-{i:04d}" for i in range(size)]
    watch = ChildWatch(custom, namespace, (ftj_cluster.GROUP, ftj_cluster.VERSION, ftj_cluster.PLURAL))
    started, _ = burst(lambda name: custom.create_namespaced_custom_object(
        ftj_cluster.GROUP, ftj_cluster.VERSION, namespace, ftj_cluster.PLURAL, suspended_body(name, namespace)),
        names)
    ftj_cluster.wait_for(lambda: all(name in watch.seen for name in names), timeout=600, interval=0.1,
                         what=f"{size} FinetuneJobs")
    watch.stop()
    return {"last": max(watch.seen[name] for name in names) - started}


def operator_round(core: Any, custom: Any, namespace: str, size: int, operator: ftj_cluster.OperatorProcess,
                   tag: str = "") -> dict[str, Any]:
    names = [f"bench-{size}{tag}-{i:04d}" for i in range(size)]
    watch = ChildWatch(custom, namespace)
    before = api_writes(core)
    cpu_before = operator.cpu_seconds()
    started, _ = burst(lambda name: custom.create_namespaced_custom_object(
        ftj_cluster.GROUP, ftj_cluster.VERSION, namespace, ftj_cluster.PLURAL, suspended_body(name, namespace)),
        names)
    ftj_cluster.wait_for(lambda: all(name in watch.seen for name in names), timeout=600, interval=0.1,
                         what=f"{size} PyTorchJobs")
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


def delete_all(custom: Any, namespace: str) -> None:
    custom.delete_collection_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace,
                                                      ftj_cluster.PLURAL)
    custom.delete_collection_namespaced_custom_object(*PJ, namespace, "pytorchjobs")
    ftj_cluster.wait_for(lambda: not custom.list_namespaced_custom_object(*PJ, namespace, "pytorchjobs",
                                                                          limit=1)["items"]
                         and not custom.list_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION,
                                                                      namespace, ftj_cluster.PLURAL, limit=1)["items"],
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


def main() -> None:
    config, _ = kubeconfig()
    core, custom = ftj_cluster.api_clients(config)
    install_crd(core)
    suffix = uuid.uuid4().hex[:6]
    watched, unwatched = f"bench-{suffix}", f"bench-floor-{suffix}"
    for namespace in (watched, unwatched):
        core.create_namespace({"metadata": {"name": namespace}})
    log = Path(tempfile.mkdtemp(prefix="bench-operator-")) / "operator.log"
    rows: list[dict[str, Any]] = []
    rss: list[float] = []
    try:
        # At the log level it is deployed with: debug logging of whole bodies costs CPU and memory.
        with ftj_cluster.running_operator(kubeconfig=config, namespace=watched, log=log,
                                          verbose=False) as operator:
            rss.append(operator.rss_bytes() / 2**20)
            for size in SIZES:
                floor = floor_round(core, custom, unwatched, size)
                delete_all(custom, unwatched)
                alone = finetunejobs_alone_round(custom, unwatched, size)
                delete_all(custom, unwatched)
                op = operator_round(core, custom, watched, size, operator)
                delete_all(custom, watched)
                rows.append({"size": size, "floor": floor, "alone": alone, "op": op})
            rss.append(rows[-1]["op"]["rss_mib"])
            again = operator_round(core, custom, watched, max(SIZES), operator, tag="b")
            rss.append(again["rss_mib"])
            delete_all(custom, watched)
    finally:
        for namespace in (watched, unwatched):
            core.delete_namespace(namespace)
    # floor: PyTorchJobs created directly; FTJs alone: FinetuneJobs created where no operator
    # watches (no children). The operator path does both kinds of create.
    print(f"{'jobs at once':>12} {'floor last (s)':>14} {'operator last (s)':>17} {'ratio':>6}"
          f" {'FTJs alone (s)':>14} {'floor p50 (s)':>13} {'op p50 (s)':>10} {'op CPU/job (ms)':>15}"
          f" {'op writes/job':>13}")
    for row in rows:
        floor, op, size = row["floor"], row["op"], row["size"]
        writes = sum(op["writes"].values()) - sum(floor["writes"].values())
        print(f"{size:>12} {floor['last']:>14.2f} {op['last']:>17.2f} {op['last'] / floor['last']:>6.2f}"
              f" {row['alone']['last']:>14.2f} {floor['median']:>13.2f} {op['median']:>10.2f}"
              f" {op['cpu_ms_per_job']:>15.1f} {writes / size:>13.2f}")
    for row in rows:
        size = row["size"]
        print(f"writes per job, burst of {size}: operator round: {per_job(row['op']['writes'], size)}")
        print(f"{'':>26}floor round:    {per_job(row['floor']['writes'], size)}")
    print(f"operator RSS: {rss[0]:.0f} MiB at start, {rss[1]:.0f} MiB after a burst of {max(SIZES)},"
          f" {rss[2]:.0f} MiB after a second burst of {max(SIZES)} (the first deleted)")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs  (log: {log})")


if __name__ == "__main__":
    main()
