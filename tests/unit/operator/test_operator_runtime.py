"""The operator's process tuning: the lean diff-base and the heap trimmer."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from speechtune_operator import persistence, runtime


def _body() -> dict[str, Any]:
    return {"apiVersion": "speechtune.dev/v1alpha1", "kind": "FinetuneJob",
            "metadata": {"name": "a", "namespace": "n", "uid": "u", "generation": 2, "labels": {"team": "asr"},
                         "annotations": {"speechtune.dev/last-handled-configuration": '{"spec": {}}',
                                         "note": "kept"},
                         "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:engine": {}}}}]},
            "spec": {"engine": "hf-ctc", "runPolicy": {"suspend": True}},
            "status": {"phase": "Suspended"}}


def test_the_lean_diffbase_builds_the_same_essence_as_kopfs() -> None:
    raw = _body()
    stock = kopf.AnnotationsDiffBaseStorage(prefix=persistence.PREFIX, key="last-handled-configuration")
    lean = persistence.diffbase_storage()
    for extra in (None, ["status.phase"], ["metadata.generation"]):
        assert lean.build(body=kopf.Body(raw), extra_fields=extra) == \
            stock.build(body=kopf.Body(raw), extra_fields=extra)
    assert lean.build(body=kopf.Body(raw))["metadata"] == {"labels": {"team": "asr"}, "annotations": {"note": "kept"}}


def test_the_lean_diffbase_leaves_the_body_alone() -> None:
    raw = _body()
    before = copy.deepcopy(raw)
    essence = persistence.diffbase_storage().build(body=kopf.Body(raw))
    essence["spec"]["engine"] = "changed"
    assert raw == before


def test_the_heap_is_trimmed_once_per_quiet_spell() -> None:
    last = [0.0]
    trimmer = runtime.HeapTrimmer(lambda: last[0], quiet=1.0)
    if not trimmer.available:
        pytest.skip("no glibc malloc_trim here")
    assert not trimmer.check(now=100.0)  # nothing happened yet
    last[0] = 100.0
    assert not trimmer.check(now=100.5)  # still busy
    assert trimmer.check(now=101.5)
    assert not trimmer.check(now=103.0)  # nothing new since
    last[0] = 104.0
    assert trimmer.check(now=106.0)
