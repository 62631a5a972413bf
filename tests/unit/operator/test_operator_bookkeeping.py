"""Names, the job cache behind status writes and the phase gauge, and the operator's metrics."""

from __future__ import annotations

import prometheus_client
import pytest

import ftj_crd
from speechtune_operator import names, telemetry
from speechtune_operator.handlers import jobcache


def test_children_are_named_after_the_job() -> None:
    assert names.pytorchjob_name("canary") == "canary"
    assert names.master_pod_name("canary") == "canary-master-0"


def test_owner_from_owner_reference_else_label() -> None:
    owned = {"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Other", "name": "x"},
                                              {"apiVersion": "speechtune.dev/v1alpha1", "kind": "FinetuneJob",
                                               "name": "a"}]}}
    labelled = {"metadata": {"labels": {names.LABEL_JOB: "b"}}}
    assert names.owner_name(owned) == "a"
    assert names.owner_name(labelled) == "b"
    assert names.owner_name({"metadata": {}}) is None


def test_cache_counts_phases_and_forgets_deleted_jobs() -> None:
    cache = jobcache.JobCache()
    first, second = ftj_crd.stored("canary"), ftj_crd.stored("mms-banglish-lora")
    second["status"] = {"phase": "Running"}
    cache.observe(first)
    cache.observe(second)
    assert cache.phase_counts()["Pending"] == 1 and cache.phase_counts()["Running"] == 1
    cache.observe(second, deleted=True)
    assert cache.phase_counts()["Running"] == 0
    assert cache.get("research", "mms-1b-banglish-lora") is None


def test_remembered_status_prevents_a_second_identical_write() -> None:
    cache = jobcache.JobCache()
    cache.observe(ftj_crd.stored("canary"))
    view = cache.get("research", "canary-1b-v2-atc")
    assert view is not None
    cache.remember_status(view, {"phase": "Running"})
    assert cache.get("research", "canary-1b-v2-atc").status == {"phase": "Running"}  # type: ignore[union-attr]


def sample(registry: prometheus_client.CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_reconcile_metrics_count_results_and_time() -> None:
    metrics = telemetry.Telemetry()
    with metrics.reconcile():
        pass
    with pytest.raises(RuntimeError), metrics.reconcile():
        raise RuntimeError("api down")
    assert sample(metrics.registry, "speechtune_operator_reconcile_total", result="success") == 1
    assert sample(metrics.registry, "speechtune_operator_reconcile_total", result="error") == 1
    assert sample(metrics.registry, "speechtune_operator_reconcile_duration_seconds_count") == 2


def test_phase_gauge_reads_the_cache_at_scrape_time() -> None:
    metrics, cache = telemetry.Telemetry(), jobcache.JobCache()
    metrics.count_phases(cache.phase_counts)
    assert sample(metrics.registry, "speechtune_finetunejobs", phase="Pending") == 0
    cache.observe(ftj_crd.stored("canary"))
    assert sample(metrics.registry, "speechtune_finetunejobs", phase="Pending") == 1


def test_two_operators_in_one_process_do_not_collide() -> None:
    # Metrics live on a registry per Telemetry, made at start-up, never at import.
    telemetry.Telemetry()
    telemetry.Telemetry()
