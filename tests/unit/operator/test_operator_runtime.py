"""kopf's persistence: the diff-base builds the same essence as kopf's without copying
managedFields, and reads what is handled from the child cache, writing nothing."""

from __future__ import annotations

import copy
from typing import Any, cast

import kopf

from speechtune_operator import persistence
from speechtune_operator.builders import backends
from speechtune_operator.handlers import jobcache


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
    lean = persistence.diffbase_storage(jobcache.ChildCache(backends.PYTORCHJOB.suspended))
    for extra in (None, ["status.phase"], ["metadata.generation"]):
        assert lean.build(body=kopf.Body(raw), extra_fields=extra) == \
            stock.build(body=kopf.Body(raw), extra_fields=extra)
    assert lean.build(body=kopf.Body(raw))["metadata"] == {"labels": {"team": "asr"}, "annotations": {"note": "kept"}}


def test_the_lean_diffbase_leaves_the_body_alone() -> None:
    raw = _body()
    before = copy.deepcopy(raw)
    essence = persistence.diffbase_storage(jobcache.ChildCache(backends.PYTORCHJOB.suspended)).build(body=kopf.Body(raw))
    essence["spec"]["engine"] = "changed"
    assert raw == before



def child(uid: str = "u", suspend: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": "a", "namespace": "n", "ownerReferences": [{"uid": uid}]},
            "spec": {"runPolicy": {"suspend": suspend}}}


def test_handled_is_what_the_child_shows_and_nothing_is_written() -> None:
    children = jobcache.ChildCache(backends.PYTORCHJOB.suspended)
    storage = persistence.diffbase_storage(children)
    body = kopf.Body(_body())
    assert storage.fetch(body=body) is None  # no child: kopf runs the creation handlers
    children.observe(child(uid="an earlier job's"))
    assert storage.fetch(body=body) is None  # a namesake's child is not this job's
    children.observe(child())
    assert storage.fetch(body=body) == storage.build(body=body)  # handled, nothing changed
    children.remember_suspend("n", "a", False)  # the job says suspend, its child runs: an update
    assert storage.fetch(body=body)["spec"]["runPolicy"]["suspend"] is False
    children.observe(child(), deleted=True)
    assert storage.fetch(body=body) is None
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch


def test_the_trainjob_switch_is_read_where_a_trainjob_has_it() -> None:
    trainjob = {"metadata": {"name": "a", "namespace": "n"}, "spec": {"suspend": True}}
    assert backends.TRAINJOB.suspended(trainjob) and not backends.PYTORCHJOB.suspended(trainjob)
    assert backends.PYTORCHJOB.suspended(child()) and not backends.TRAINJOB.suspended(child())
