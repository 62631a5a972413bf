"""The lean diff-base: the same essence as kopf's, built without copying managedFields."""

from __future__ import annotations

import copy
from typing import Any, cast

import kopf

from speechtune_operator import persistence


def _body() -> kopf.RawBody:
    return cast(kopf.RawBody, {"apiVersion": "speechtune.dev/v1alpha1", "kind": "FinetuneJob",
            "metadata": {"name": "a", "namespace": "n", "uid": "u", "generation": 2, "labels": {"team": "asr"},
                         "annotations": {"speechtune.dev/last-handled-configuration": '{"spec": {}}',
                                         "note": "kept"},
                         "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:engine": {}}}}]},
            "spec": {"engine": "hf-ctc", "runPolicy": {"suspend": True}},
            "status": {"phase": "Suspended"}})


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

