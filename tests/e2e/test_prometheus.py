"""A real Prometheus scrapes a real training run and the operator; the dashboards' queries work.

Debian's `prometheus` runs on loopback with a one-second scrape interval and scrapes
  * `speechtune run` of the demo job (a few steps on synthetic speech), and
  * the operator, running out of cluster against the local control plane with one
    FinetuneJob to reconcile.
Every PromQL expression of every panel of the shipped Grafana dashboards, variables
substituted the way Grafana would, is evaluated through Prometheus' HTTP API and must
return data; `promtool check metrics` must pass on both endpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from polling import free_port, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.training]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "charts" / "speechtune" / "dashboards"
VENV_BIN = ROOT / ".venv" / "bin"
DEMO_JOB = ROOT / "examples" / "demo.yaml"
SCRAPE_INTERVAL_S = 1
# $__rate_interval as Grafana would compute it for a 1 s scrape interval and short range:
# at least four scrape intervals; generous so a slow machine still has two samples.
RATE_INTERVAL = "30s"
# The run is not sized in steps (a quiet machine finishes 60 steps between two scrapes, a
# busy one takes minutes): it trains until Prometheus holds several scrapes of steps in
# progress and a validation, then gets SIGTERM, as a preempted pod would.
TRAIN_STEPS = 100_000
ENOUGH_SCRAPED = ("changes(speechtune_step[30s]) >= 3", "speechtune_val_wer_ratio >= 0")
# The demo job, shrunk so the whole run takes seconds on a busy CPU: a smaller Conformer,
# a few utterances per batch, and validations during the run (not only at its end), so
# Prometheus scrapes the validation metrics while the trainer still serves them.
SHRINK = {"valCheckInterval": 10, "batchDuration": 8, "warmupSteps": 2}
SHRINK_MODEL = {"num_layers": 2, "d_model": 64, "nhead": 2, "d_ffn": 128}


def http_get(url: str, timeout: float = 10) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return None


@dataclasses.dataclass(frozen=True)
class Prometheus:
    url: str

    def api(self, path: str, **params: str) -> Any:
        text = http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=30)
        assert text is not None, f"Prometheus did not answer {path} {params}"
        answer = json.loads(text)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        data = self.api("query", query=expr, time=f"{at:.3f}")
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        return list(data["result"])

    def series(self, match: str, start: float, end: float) -> list[dict[str, str]]:
        return list(self.api("series", **{"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"}))

    def last_sample_time(self, expr: str, start: float, end: float) -> float | None:
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")
        times = [float(t) for series in data["result"] for t, _ in series["values"]]
        return max(times) if times else None


def prometheus_config(targets: dict[str, str]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                   "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                           for job, target in targets.items()],
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prometheus-e2e")


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("prometheus", "trainer", "operator", "operator-health")}


@pytest.fixture(scope="module")
def prometheus(workdir: Path, ports: dict[str, int]) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary, "Debian's `prometheus` is missing (make setup installs it)"
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config({
        "speechtune-trainer": f"127.0.0.1:{ports['trainer']}",
        "speechtune-operator": f"127.0.0.1:{ports['operator']}",
    })))
    check = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True,
                           timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    url = f"http://127.0.0.1:{ports['prometheus']}"
    log = workdir / "prometheus.log"
    with log.open("w") as sink:
        process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                    f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                                    "--storage.tsdb.retention.time=1h"],
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for("Prometheus ready", lambda: process.poll() is not None or http_get(f"{url}/-/ready"), timeout=120)
        assert process.poll() is None, log.read_text()[-3000:]
        yield Prometheus(url)
    finally:
        process.terminate()
        process.wait(timeout=60)


@dataclasses.dataclass(frozen=True)
class OperatorRun:
    metrics_url: str
    namespace: str
    job: str


@pytest.fixture(scope="module")
def operator(cluster: Any, workdir: Path, ports: dict[str, int], prometheus: Prometheus) -> Iterator[OperatorRun]:
    """The operator on one namespace, with one FinetuneJob so every operator series exists."""
    namespace, job = f"st-prom-{uuid.uuid4().hex[:6]}", "scraped"
    # This module must not depend on another one having installed the API first.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "finetunejob.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/finetunejobs.speechtune.dev", "--timeout=60s")
    cluster.kubectl("create", "namespace", namespace)
    env = {k: v for k, v in cluster.env.items() if not k.startswith("KUBERNETES_")}
    env["SPEECHTUNE_OPERATOR_METRICS_PORT"] = str(ports["operator"])
    log = workdir / "operator.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(VENV_BIN / "speechtune-operator"), f"--namespace={namespace}",
             f"--liveness=http://127.0.0.1:{ports['operator-health']}/healthz"],
            env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        health = f"http://127.0.0.1:{ports['operator-health']}/healthz"
        wait_for("operator ready", lambda: process.poll() is not None or http_get(health), timeout=180)
        assert process.poll() is None, log.read_text()[-3000:]
        body = yaml.safe_load(DEMO_JOB.read_text())
        body["metadata"] = {"name": job, "namespace": namespace}
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        wait_for("the operator to count the FinetuneJob", lambda: "speechtune_finetunejobs{" in (
            http_get(f"http://127.0.0.1:{ports['operator']}/metrics") or ""), timeout=120)
        yield OperatorRun(f"http://127.0.0.1:{ports['operator']}/metrics", namespace, job)
    finally:
        # While the operator still runs, so it removes its finalizer and the namespace can go.
        cluster.kubectl("delete", "finetunejob", job, "-n", namespace, "--ignore-not-found", "--timeout=60s",
                        check=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    metrics_text: str  # the trainer's /metrics, fetched while it trained
    started: float
    last_sample: float  # last time Prometheus holds trainer samples for


def small_demo_job(path: Path) -> Path:
    job = yaml.safe_load(DEMO_JOB.read_text())
    job["spec"]["training"].update(SHRINK)
    job["spec"]["training"]["overrides"].update(SHRINK_MODEL)
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture(scope="module")
def training(workdir: Path, ports: dict[str, int], prometheus: Prometheus) -> TrainingRun:
    data, runs = workdir / "data", workdir / "runs"
    runs.mkdir()
    job = small_demo_job(workdir / "demo.yaml")
    synth = subprocess.run([str(VENV_BIN / "speechtune"), "data", "synth", str(data), "--n", "16", "--seed", "0"],
                           capture_output=True, text=True, timeout=300, check=False)
    assert synth.returncode == 0, synth.stdout + synth.stderr
    env = dict(os.environ, SPEECHTUNE_METRICS_PORT=str(ports["trainer"]))
    started = time.time()
    log = workdir / "train.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(VENV_BIN / "speechtune"), "run", str(job), "--volume", f"demo-data={data}",
             "--volume", f"demo-runs={runs}", "--max-steps", str(TRAIN_STEPS)],
            env=env, stdout=sink, stderr=subprocess.STDOUT)
    metrics_url = f"http://127.0.0.1:{ports['trainer']}/metrics"
    metrics_text = ""
    try:
        while process.poll() is None:
            metrics_text = http_get(metrics_url, timeout=5) or metrics_text
            if all(prometheus.query(expr, time.time()) for expr in ENOUGH_SCRAPED):
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=300)
                break
            time.sleep(0.5)
            assert time.time() - started < 600, "Prometheus saw no steps and validation in 10 minutes"
    finally:
        if process.poll() is None:
            process.kill()
    # 143: stopped by our SIGTERM after a checkpoint, the retryable exit of a preempted run.
    assert process.returncode == 143, log.read_text()[-4000:]
    assert metrics_text, f"never read {metrics_url} while training:\n{log.read_text()[-3000:]}"
    last = prometheus.last_sample_time('speechtune_step', started - 5, time.time() + 1)
    assert last is not None, "Prometheus never scraped the trainer"
    return TrainingRun(metrics_text, started, last)


def dashboard(name: str) -> dict[str, Any]:
    return dict(json.loads((DASHBOARDS / name).read_text()))


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel, rows' nested panels included."""
    found: list[tuple[str, str]] = []
    for panel in board["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found.extend((inner["title"], target["expr"]) for target in inner.get("targets", []))
    return found


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variable interpolation for the forms the dashboards use ($x, ${x})."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"unknown dashboard variable ${name} in {expr}"
        return variables[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def regex_of(values: set[str]) -> str:
    return "|".join(re.escape(v) for v in sorted(values))


def label_values(prometheus: Prometheus, query: str, start: float, end: float) -> set[str]:
    """Grafana's label_values(selector, label) through /api/v1/series."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert match, f"not a label_values() query: {query}"
    return {s[match.group(2)] for s in prometheus.series(match.group(1), start, end) if match.group(2) in s}


def test_training_dashboard_queries_all_return_data(prometheus: Prometheus, training: TrainingRun) -> None:
    board = dashboard("training.json")
    at = training.last_sample
    variables = {"__rate_interval": RATE_INTERVAL}
    # Resolve the query variables in order, as Grafana does (finetunejob depends on namespace).
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        values = label_values(prometheus, substitute(query, variables), training.started - 5, at + 1)
        assert values, f"variable {variable['name']}: {query} found nothing"
        variables[variable["name"]] = regex_of(values)
    empty = []
    for title, expr in panel_queries(board):
        result = prometheus.query(substitute(expr, variables), at)
        if not result:
            empty.append(f"{title}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_training_values_are_plausible(prometheus: Prometheus, training: TrainingRun) -> None:
    at = training.last_sample

    def scalar(expr: str) -> float:
        (sample,) = prometheus.query(expr, at)
        return float(sample["value"][1])

    # Stopped by SIGTERM after the first validation (step valCheckInterval), long before the end.
    assert SHRINK["valCheckInterval"] <= scalar("max(speechtune_step)") < TRAIN_STEPS
    assert scalar("max(speechtune_max_steps)") == pytest.approx(TRAIN_STEPS)
    # Set by a validation (the gauges are NaN before): an untrained model's error rate is > 0.
    assert 0 < scalar("max(speechtune_val_wer_ratio)") <= 1.5
    assert 0 < scalar("max(speechtune_val_cer_ratio)") <= 1.5
    assert scalar("max(speechtune_val_loss)") > 0
    assert math.isfinite(scalar("max(speechtune_train_loss)"))
    assert scalar("sum(speechtune_audio_seconds_total)") > 0


def test_operator_dashboard_queries_all_return_data(prometheus: Prometheus, operator: OperatorRun) -> None:
    board = dashboard("operator.json")
    variables = {"__rate_interval": RATE_INTERVAL}
    # Two scrapes after the job was counted, so rate() has two samples of every series.
    wait_for("two operator scrapes", lambda: prometheus.query(
        f"count_over_time(speechtune_finetunejobs[{RATE_INTERVAL}]) >= 2", time.time()), timeout=120)
    at = time.time()
    empty = [f"{title}: {expr}" for title, expr in panel_queries(board)
             if not prometheus.query(substitute(expr, variables), at)]
    assert not empty, "panels without data:\n" + "\n".join(empty)


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                          timeout=60, check=False)


def test_promtool_accepts_the_trainer_metrics(training: TrainingRun) -> None:
    done = promtool_check(training.metrics_text)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_operator_metrics(operator: OperatorRun) -> None:
    text = http_get(operator.metrics_url)
    assert text and "speechtune_operator_reconcile_total" in text
    done = promtool_check(text)
    assert done.returncode == 0, done.stdout + done.stderr
