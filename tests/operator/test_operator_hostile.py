"""What a user who may write FinetuneJobs can make the operator fetch, on the real control
plane: nothing but the job's own master pod's metrics. Annotations, labels and free-form spec
fields naming a file:// path or another endpoint are never read, and the secret they point
at never shows up in an Event, the status or the operator's log."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from pathlib import Path
from typing import Any, Iterator

import prometheus_client
import pytest
import yaml

import ftj_cluster
from ftj_cluster import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def namespace(backend_namespace: str) -> str:
    """The namespace the `operator` fixture watches, once per backend."""
    return backend_namespace

SECRET = "eyJhbGciOiJSUzI1NiJ9.operator-service-account-token.not-for-users"


@contextlib.contextmanager
def decoy() -> Iterator[tuple[int, list[str]]]:
    """An HTTP server a user would like the operator to read: records every request and
    answers with the secret (as a body no Prometheus parser accepts)."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(SECRET.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, hits
    finally:
        server.shutdown()
        thread.join()


@contextlib.contextmanager
def trainer_metrics(jobs: list[str], port: int) -> Iterator[None]:
    """The jobs' rank-0 endpoint, on the port the operator reads from their master pods."""
    registry = prometheus_client.CollectorRegistry()
    step = prometheus_client.Gauge("speechtune_step", "s", ["finetunejob"], registry=registry)
    max_steps = prometheus_client.Gauge("speechtune_max_steps", "s", ["finetunejob"], registry=registry)
    for job in jobs:
        step.labels(job).set(30)
        max_steps.labels(job).set(60)
    server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield
    finally:
        server.shutdown()
        thread.join()


def hostile_job(name: str, target: str, decoy_port: int) -> dict[str, Any]:
    body = ftj_cluster.tiny_job(name)
    body["metadata"]["annotations"] = {
        "speechtune.dev/metrics-url": target,
        "prometheus.io/scrape": "true", "prometheus.io/port": str(decoy_port), "prometheus.io/path": target,
    }
    body["metadata"]["labels"] = {"speechtune.dev/metrics-port": str(decoy_port)}
    # Free-form fields the operator passes to the trainer: never a target of its own.
    body["spec"]["training"]["overrides"] = {"metrics_url": target, "scrape_url": target}
    body["spec"]["model"] = {"pretrained": target}
    return body


def test_no_annotation_or_spec_field_chooses_what_the_operator_fetches(
        cluster: Any, api: Any, namespace: str, operator: ftj_cluster.OperatorProcess, tmp_path: Path) -> None:
    core, custom = api
    token = tmp_path / "token"
    token.write_text(SECRET)
    with decoy() as (decoy_port, hits):
        jobs = {"hostile-file": f"file://{token}",
                "hostile-http": f"http://127.0.0.1:{decoy_port}/metrics",
                "hostile-zero": "file:///dev/zero"}
        with trainer_metrics(list(jobs), operator.trainer_metrics_port):
            for name, target in jobs.items():
                cluster.kubectl("apply", "-n", namespace, "-f", "-",
                                input=yaml.safe_dump(hostile_job(name, target, decoy_port)))

            def progress(name: str) -> dict[str, Any]:
                status = custom.get_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace,
                                                             ftj_cluster.PLURAL, name).get("status") or {}
                return dict(status.get("progress") or {})

            for name in jobs:  # scraped from the master pod's port, the annotation ignored
                assert wait_for(lambda: progress(name), timeout=180, what=f"{name}'s progress")["step"] == 30
            assert operator.healthy()  # file:///dev/zero did not exhaust its memory
    assert hits == []
    events = core.list_namespaced_event(namespace).items
    statuses = [custom.get_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace,
                                                    ftj_cluster.PLURAL, name).get("status") for name in jobs]
    for where, text in (("events", str([(e.reason, e.message) for e in events])), ("status", str(statuses)),
                        ("operator log", operator.log.read_text())):
        assert SECRET not in text, f"the secret reached the {where}"
        assert "operator-service-account-token" not in text, f"part of the secret reached the {where}"
    for name in jobs:
        # Fenced by the operator (as the chart configures it): a policy naming the job itself,
        # not the label the user wrote on the FinetuneJob.
        policy = json.loads(cluster.kubectl("get", "networkpolicy", f"{name}-trainers", "-n", namespace,
                                            "-o", "json").stdout)
        assert policy["spec"]["podSelector"] == {"matchLabels": {"speechtune.dev/finetunejob": name}}
        assert policy["metadata"]["ownerReferences"][0]["name"] == name
        cluster.kubectl("delete", "-n", namespace, "finetunejob", name, "--wait=false")
