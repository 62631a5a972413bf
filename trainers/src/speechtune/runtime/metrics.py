"""Prometheus metrics of a training run (rank 0), names and labels as ARCHITECTURE.md
lists them. Everything lives in the run's own CollectorRegistry, created at start-up, so
nothing is registered at import time and tests can run several servers side by side."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Mapping

import prometheus_client
from prometheus_client import exposition

LABELS = ("finetunejob", "namespace", "engine")
POD_HOST = "0.0.0.0"  # in a pod: Prometheus scrapes the pod IP
LOCAL_HOST = "127.0.0.1"  # `speechtune run` on a shared machine: this machine only
DEFAULT_PORT = 9400
PORT_ENV = "SPEECHTUNE_METRICS_PORT"


class TrainingMetrics:
    """The trainer's gauges, counters and histogram, bound to one job's labels."""

    def __init__(self, *, job: str, namespace: str, engine: str) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        labels = {"finetunejob": job, "namespace": namespace, "engine": engine}

        def gauge(name: str, doc: str) -> Any:
            return prometheus_client.Gauge(name, doc, LABELS, registry=self.registry).labels(**labels)

        def counter(name: str, doc: str) -> Any:
            return prometheus_client.Counter(name, doc, LABELS, registry=self.registry).labels(**labels)

        self.train_loss = gauge("speechtune_train_loss", "Training loss of the latest optimizer step.")
        self.val_loss = gauge("speechtune_val_loss", "Loss of the latest validation.")
        self.val_wer = gauge("speechtune_val_wer_ratio", "Word error rate of the latest validation (0..1).")
        self.val_cer = gauge("speechtune_val_cer_ratio", "Character error rate of the latest validation (0..1).")
        self.val_bleu = gauge("speechtune_val_bleu_ratio",
                              "BLEU (0..1) of the latest validation's speech-translation rows.")
        # NaN until the first validation: a 0 would read as a perfect WER on the dashboards.
        for unvalidated in (self.val_loss, self.val_wer, self.val_cer, self.val_bleu):
            unvalidated.set(float("nan"))
        self.learning_rate = gauge("speechtune_learning_rate", "Learning rate of the latest step.")
        self.step = gauge("speechtune_step", "Optimizer steps done.")
        self.max_steps = gauge("speechtune_max_steps", "Optimizer steps the run will do.")
        self.epoch = gauge("speechtune_epoch", "Passes over the training data (fractional).")
        # prometheus_client appends _total to counters itself.
        self.audio_seconds = counter("speechtune_audio_seconds", "Seconds of audio trained on.")
        self.samples = counter("speechtune_samples", "Utterances trained on.")
        self.step_duration = prometheus_client.Histogram(
            "speechtune_step_duration_seconds", "Wall-clock seconds per optimizer step.", LABELS,
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, float("inf")),
        ).labels(**labels)
        self.padding_ratio = gauge("speechtune_padding_ratio", "Padded share of the latest batch (0..1).")
        self.gpu_memory = gauge("speechtune_gpu_memory_bytes", "Peak GPU memory allocated by this process.")
        # The operator copies the path into status.bestCheckpoint (a Prometheus value is a number).
        self.best_checkpoint = prometheus_client.Info(
            "speechtune_best_checkpoint", "Best checkpoint of the run, by the validation metric.", LABELS,
            registry=self.registry).labels(**labels)

    def render(self) -> str:
        return exposition.generate_latest(self.registry).decode()


def port_from_env(environ: Mapping[str, str] = os.environ) -> int:
    raw = environ.get(PORT_ENV, str(DEFAULT_PORT))
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{PORT_ENV}={raw!r}: expected a port number (0 picks a free one)") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{PORT_ENV}={raw!r}: out of range 0..65535")
    return port


class MetricsServer:
    """The /metrics HTTP endpoint, in a daemon thread; `url` is printed for people."""

    def __init__(self, metrics: TrainingMetrics, *, port: int, host: str = POD_HOST) -> None:
        self._server, self._thread = prometheus_client.start_http_server(
            port, addr=host, registry=metrics.registry)
        self.port = int(self._server.server_port)  # the one picked when port was 0

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/metrics"

    def stop(self, *, linger_s: float = 0.0) -> None:
        if linger_s > 0:
            time.sleep(linger_s)
        self._server.shutdown()
        self._server.server_close()
        if isinstance(self._thread, threading.Thread):
            self._thread.join(timeout=5)
