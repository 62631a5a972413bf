"""Children first (the status hold while creations are in flight) and the diff-base that
copies only what can be in kopf's essence."""

from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

import kopf

import ftj_crd
from speechtune_operator import persistence
from speechtune_operator.handlers import holding, jobcache


def stock_essence(body: dict[str, Any]) -> dict[str, Any]:
    return dict(kopf.AnnotationsDiffBaseStorage(prefix=persistence.PREFIX, key="last-handled-configuration")
                .build(body=kopf.Body(body)))


def test_the_slim_essence_of_a_finetunejob_equals_kopfs_own() -> None:
    body = ftj_crd.stored("canary")
    body["metadata"].update(managedFields=[{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
                            labels={"team": "asr"}, annotations={"note": "x"}, resourceVersion="7")
    body["status"] = {"phase": "Running", "conditions": [{"type": "Running", "status": "True"}]}
    lean = persistence.LeanDiffBaseStorage(prefix=persistence.PREFIX, key="last-handled-configuration")
    assert dict(lean.build(body=kopf.Body(copy.deepcopy(body)))) == stock_essence(body)
    # An extra field outside the spec still comes through.
    extra = dict(lean.build(body=kopf.Body(body), extra_fields=["status.phase", "metadata.resourceVersion"]))
    assert extra["status"] == {"phase": "Running"} and extra["metadata"]["resourceVersion"] == "7"


def test_a_child_has_an_empty_essence_and_no_diff_base() -> None:
    child = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
             "metadata": {"name": "j", "namespace": "ns", "uid": "u"}, "spec": {"x": 1}}
    storage = persistence.ChildDiffBaseStorage(jobcache.ChildCache(lambda _: False))
    assert dict(storage.build(body=kopf.Body(child))) == {}


def test_the_gate_opens_when_the_last_creation_ends_from_another_thread() -> None:
    async def scenario() -> float:
        gate = holding.CreationGate(hold=10)
        gate.begin(("ns", "a"))
        gate.begin(("ns", "b"))
        gate.end(("ns", "a"))
        assert gate.pending() == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        threading.Timer(0.2, gate.end, args=(("ns", "b"),)).start()
        await gate.wait()
        return loop.time() - started

    waited = asyncio.run(scenario())
    assert 0.15 < waited < 5


def test_the_gate_never_holds_longer_than_its_limit() -> None:
    async def scenario() -> float:
        gate = holding.CreationGate(hold=0.3)
        gate.begin(("ns", "stuck"))  # a creation that keeps failing
        loop = asyncio.get_running_loop()
        started = loop.time()
        await gate.wait()
        return loop.time() - started

    assert 0.25 < asyncio.run(scenario()) < 5


def test_an_idle_gate_is_open() -> None:
    gate = holding.CreationGate(hold=60)
    gate.end(("ns", "never-begun"))
    asyncio.run(asyncio.wait_for(gate.wait(), timeout=1))


def test_ending_twice_is_harmless() -> None:
    gate = holding.CreationGate(hold=1)
    gate.begin("k")
    gate.end("k")
    gate.end("k")
    assert gate.pending() == 0
