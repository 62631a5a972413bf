"""Where the operator scrapes (only its job's own rank-0 pod, as the API describes it) and
what a hostile endpoint's answer can reach: nothing of its text in logs or status."""

from __future__ import annotations

import contextlib
import copy
import logging
import socket
import threading
from typing import Any, Iterator

import prometheus_client
import pytest

from speechtune_operator import settings as settings_mod
from speechtune_operator.builders import metrics_target
from speechtune_operator.handlers import jobcache, scraping

JOB = "asr"
SECRET = "eyJhbGciOi-service-account-token-4242"


def master_pod(**changes: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "metadata": {"name": f"{JOB}-master-0", "namespace": "research", "labels": {
            "training.kubeflow.org/job-name": JOB, "training.kubeflow.org/replica-type": "master",
            "training.kubeflow.org/replica-index": "0"}},
        "spec": {"containers": [{"name": "pytorch", "ports": [
            {"name": "metrics", "containerPort": 9400}, {"name": "pytorchjob-port", "containerPort": 23456}]}]},
        "status": {"phase": "Running", "podIP": "10.244.0.7"},
    }
    for path, value in changes.items():
        node = pod
        *parents, leaf = path.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return pod


def target(pod: dict[str, Any], host_override: str = "") -> metrics_target.Target | None:
    return metrics_target.rank0_target(pod, container="pytorch", port=9400, host_override=host_override)


def test_the_master_pods_ip_and_the_operators_metrics_port() -> None:
    assert target(master_pod()) == metrics_target.Target("10.244.0.7", 9400)
    assert target(master_pod(status__podIP="fd00::7")) == metrics_target.Target("fd00::7", 9400)


def test_the_test_setting_replaces_only_the_host() -> None:
    assert target(master_pod(), host_override="127.0.0.1") == metrics_target.Target("127.0.0.1", 9400)
    assert target(master_pod(status__phase="Pending"), host_override="127.0.0.1") is None


def _other_container() -> list[dict[str, Any]]:
    return [{"name": "sidecar", "ports": [{"name": "metrics", "containerPort": 10250}]}]


@pytest.mark.parametrize("pod", [
    master_pod(status__phase="Pending"),
    master_pod(status__phase="Succeeded"),
    master_pod(status={"phase": "Running"}),
    master_pod(status__podIP="metadata.google.internal"),
    master_pod(status__podIP="http://169.254.169.254/latest"),
    master_pod(status__podIP="file:///var/run/secrets/kubernetes.io/serviceaccount/token"),
    master_pod(spec__hostNetwork=True),
    master_pod(spec__containers=_other_container()),
    master_pod(spec__containers=[{"name": "pytorch", "ports": [{"name": "http", "containerPort": 80}]}]),
    master_pod(spec__containers=[{"name": "pytorch", "ports": [{"name": "metrics", "containerPort": "9400"}]}]),
    master_pod(spec__containers=[{"name": "pytorch", "ports": [{"name": "metrics", "containerPort": True}]}]),
    master_pod(spec__containers=[{"name": "pytorch", "ports": [{"name": "metrics", "containerPort": 70000}]}]),
    master_pod(spec__containers=[{"name": "pytorch"}]),
    master_pod(spec__containers=[{"name": "pytorch", "ports": [{"name": "metrics", "containerPort": 10255}]}]),
], ids=["pending", "succeeded", "no-ip", "hostname-ip", "url-ip", "file-ip", "host-network", "port-on-a-sidecar", "no-metrics-port",
        "port-as-string", "port-as-bool", "port-out-of-range", "no-ports",
        "port-not-the-operators"])
def test_pods_that_are_not_scraped(pod: dict[str, Any]) -> None:
    assert target(pod) is None


class FakeClients:
    """What handlers/scraping.py uses of api.Clients: a pod listing (GET of a core path)."""

    def __init__(self, pod: dict[str, Any] | None) -> None:
        self.pod = pod
        self.selectors: list[tuple[str, str]] = []

    def get(self, path: str, query: Any = ()) -> dict[str, Any]:
        namespace = path.removeprefix("/api/v1/namespaces/").removesuffix("/pods")
        self.selectors.append((namespace, dict(query)["labelSelector"]))
        if self.pod is None:
            raise RuntimeError(f"{SECRET} in an API error body")
        return {"items": [copy.deepcopy(self.pod)]}


@contextlib.contextmanager
def endpoint(body: bytes, hits: list[bytes] | None = None) -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    hits = [] if hits is None else hits

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    hits.append(conn.recv(4096))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


def run_scrape(pod: dict[str, Any] | None, annotations: dict[str, str] | None = None,
               port: int = 9400) -> tuple[dict[str, Any], FakeClients]:
    """The status fields a scrape would write, as {"status": ...}."""
    view = jobcache.JobView.of({"metadata": {"name": JOB, "namespace": "research", "uid": "u",
                                             "annotations": annotations or {}},
                                "spec": {}, "status": {"phase": "Running"}})
    clients = FakeClients(pod)
    config = settings_mod.Settings(test_scrape_host="127.0.0.1", scrape_timeout=1.0, scrape_max_bytes=64 * 1024,
                                   trainer_metrics_port=port)
    fields = scraping.scrape(view, settings=config, clients=clients)  # type: ignore[arg-type]
    return ({"status": fields} if fields else {}), clients


def exposition() -> bytes:
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Gauge("speechtune_step", "s", ["finetunejob"], registry=registry).labels(JOB).set(40)
    prometheus_client.Gauge("speechtune_max_steps", "s", ["finetunejob"], registry=registry).labels(JOB).set(200)
    return prometheus_client.generate_latest(registry)


def with_port(port: int) -> dict[str, Any]:
    return master_pod(spec__containers=[{"name": "pytorch", "ports": [{"name": "metrics", "containerPort": port}]}])


def test_progress_comes_from_the_master_pods_port() -> None:
    with endpoint(exposition()) as port:
        patch, clients = run_scrape(with_port(port), port=port)
    assert clients.selectors == [("research", "training.kubeflow.org/job-name=asr,"
                                       "training.kubeflow.org/replica-type=master,training.kubeflow.org/replica-index=0")]
    assert patch["status"]["progress"] == {"step": 40, "maxSteps": 200, "summary": "20% (40/200)"}


def test_an_annotation_does_not_move_the_scrape(tmp_path: Any) -> None:
    token = tmp_path / "token"
    token.write_text(SECRET)
    decoy_hits: list[bytes] = []
    with endpoint(SECRET.encode(), decoy_hits) as decoy, endpoint(exposition()) as port:
        for url in (f"file://{token}", f"http://127.0.0.1:{decoy}/metrics"):
            patch, _ = run_scrape(with_port(port), port=port, annotations={
                "speechtune.dev/metrics-url": url, "prometheus.io/port": str(decoy)})
            assert patch["status"]["progress"]["step"] == 40
    assert decoy_hits == []


@pytest.mark.parametrize("body", [
    SECRET.encode(),
    b"# HELP x " + SECRET.encode() + b"\nx{a=\"" + SECRET.encode() + b"\n",
    b"speechtune_step " + SECRET.encode() + b"\n",
    b"\xff\xfe" + SECRET.encode(),
    b"speechtune_step{finetunejob=\"asr\"} 1e999999\n",
], ids=["plain-text", "broken-label", "non-numeric-value", "not-utf8", "overflow"])
def test_a_non_metrics_body_leaves_no_trace(body: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with endpoint(body) as port:
        patch, _ = run_scrape(with_port(port), port=port)
    assert SECRET not in str(dict(patch))
    assert SECRET not in caplog.text
    assert all(SECRET not in str(record.exc_info) for record in caplog.records)


def test_an_api_error_is_logged_without_its_body(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    patch, _ = run_scrape(None)
    assert not patch and SECRET not in caplog.text and "RuntimeError" in caplog.text
