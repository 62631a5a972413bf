"""The operator's own Prometheus metrics, on a registry made at start-up (not at import)."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator, Mapping

import prometheus_client
from prometheus_client import core, registry

RESULT_SUCCESS, RESULT_ERROR = "success", "error"


class _PhaseCollector(registry.Collector):
    """speechtune_finetunejobs{phase}, counted at scrape time from the operator's view."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[core.Metric]:
        gauge = core.GaugeMetricFamily("speechtune_finetunejobs", "FinetuneJobs by phase.",
                                       labels=["phase"])
        for phase, count in sorted(self._counts().items()):
            gauge.add_metric([phase], count)
        yield gauge


class Telemetry:
    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.reconciles = prometheus_client.Counter(
            "speechtune_operator_reconcile", "Reconciliations (children, status mirror) by result.",
            ["result"], registry=self.registry)
        self.duration = prometheus_client.Histogram(
            "speechtune_operator_reconcile_duration_seconds", "Time one reconciliation took.",
            registry=self.registry, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        for result in (RESULT_SUCCESS, RESULT_ERROR):
            self.reconciles.labels(result)  # export zeros before the first reconciliation

    def count_phases(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.registry.register(_PhaseCollector(counts))

    @contextlib.contextmanager
    def reconcile(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.reconciles.labels(RESULT_ERROR).inc()
            raise
        else:
            self.reconciles.labels(RESULT_SUCCESS).inc()
        finally:
            self.duration.observe(time.perf_counter() - started)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        prometheus_client.start_http_server(port, addr=address, registry=self.registry)
