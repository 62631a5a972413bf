"""Operator latency and memory on the real local control plane (`make bench`).

Latency: from the moment a FinetuneJob's create call returns to the moment a watch on
PyTorchJobs sees its child, with 1, 100 and 500 FinetuneJobs created at once (16 client
threads). The jobs are created suspended, so no pods: this measures the operator, not the
scheduler or kwok. Memory: the operator's resident set with 500 FinetuneJobs reconciled.
Uses SPEECHTUNE_KUBECONFIG when set, else brings the local control plane up.
"""

from __future__ import annotations

import concurrent.futures
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "operator"))
sys.path.insert(0, str(REPO / "hack" / "cluster"))

import kubernetes  # noqa: E402
import yaml  # noqa: E402

import ftj_cluster  # noqa: E402

SIZES = (1, 100, 500)
CLIENT_THREADS = 16


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
    """Records when each PyTorchJob is first seen in a namespace."""

    def __init__(self, custom: kubernetes.client.CustomObjectsApi, namespace: str) -> None:
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(custom, namespace), daemon=True)
        self._thread.start()

    def _run(self, custom: kubernetes.client.CustomObjectsApi, namespace: str) -> None:
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(custom.list_namespaced_custom_object, "kubeflow.org", "v1", namespace,
                                          "pytorchjobs", timeout_seconds=5):
                    self.seen.setdefault(event["object"]["metadata"]["name"], time.monotonic())
                    if self._stop.is_set():
                        break
            except Exception:  # noqa: BLE001 - a broken watch is simply restarted
                time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()


def create_all(custom: kubernetes.client.CustomObjectsApi, namespace: str, names: list[str]) -> dict[str, float]:
    created: dict[str, float] = {}

    def create(name: str) -> None:
        body = ftj_cluster.tiny_job(name)
        body["spec"]["runPolicy"] = {"suspend": True}
        custom.create_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace,
                                               ftj_cluster.PLURAL, body)
        created[name] = time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(create, names))
    return created


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run_round(custom: Any, namespace: str, size: int, operator: ftj_cluster.OperatorProcess) -> dict[str, float]:
    watch = ChildWatch(custom, namespace)
    cpu_before = operator.cpu_seconds()
    names = [f"bench-{size}-{i:04d}" for i in range(size)]
    started = time.monotonic()
    created = create_all(custom, namespace, names)
    creating = time.monotonic() - started
    ftj_cluster.wait_for(lambda: all(name in watch.seen for name in names), timeout=600, interval=0.2,
                         what=f"{size} PyTorchJobs")
    watch.stop()
    latencies = [watch.seen[name] - created[name] for name in names]
    return {"jobs": size, "create_s": creating, "p50": statistics.median(latencies),
            "p99": percentile(latencies, 0.99), "max": max(latencies),
            "cpu_ms_per_job": 1000 * (operator.cpu_seconds() - cpu_before) / size}


def delete_all(custom: Any, namespace: str) -> None:
    custom.delete_collection_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace,
                                                      ftj_cluster.PLURAL)
    ftj_cluster.wait_for(lambda: not custom.list_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "pytorchjobs", limit=1)["items"], timeout=600, interval=1,
        what="garbage collection of the previous round")


def main() -> None:
    config, env = kubeconfig()
    core, custom = ftj_cluster.api_clients(config)
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
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    log = Path(tempfile.mkdtemp(prefix="bench-operator-")) / "operator.log"
    rows = []
    rss_mb = float("nan")
    try:
        # At the log level it is deployed with: debug logging of whole bodies costs CPU and memory.
        with ftj_cluster.running_operator(kubeconfig=config, namespace=namespace, log=log,
                                          verbose=False) as operator:
            for size in SIZES:
                rows.append(run_round(custom, namespace, size, operator))
                if size == max(SIZES):
                    time.sleep(2)  # let status writes settle before reading memory
                    rss_mb = operator.rss_bytes() / 2**20
                delete_all(custom, namespace)
    finally:
        core.delete_namespace(namespace)
    # The operator's CPU per job is the number to compare across machines; latencies on a
    # shared 2-core box mostly measure the apiserver, etcd and the PyTorchJob webhook.
    print(f"{'jobs at once':>12} {'create (s)':>10} {'p50 (s)':>8} {'p99 (s)':>8} {'max (s)':>8} {'op CPU/job (ms)':>15}")
    for row in rows:
        print(f"{row['jobs']:>12} {row['create_s']:>10.2f} {row['p50']:>8.3f} {row['p99']:>8.3f} {row['max']:>8.3f}"
              f" {row['cpu_ms_per_job']:>15.1f}")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"operator RSS with {max(SIZES)} FinetuneJobs: {rss_mb:.0f} MiB  (log: {log})")


if __name__ == "__main__":
    main()
