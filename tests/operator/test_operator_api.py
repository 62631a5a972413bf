"""The FinetuneJob API on the real apiserver: every shipped example is accepted; invalid
jobs are refused by the schema or its CEL rules, the message naming the field; fields that
must not change after creation cannot."""

from __future__ import annotations

import copy
import json
from typing import Any, Callable

import kubernetes
import pytest

import ftj_cluster

pytestmark = pytest.mark.cluster

Edit = Callable[[dict[str, Any]], None]


def job(edit: Edit, *, base: str = "speechbrain-atc0") -> dict[str, Any]:
    body = ftj_cluster.example(base)
    edit(body)
    return body


def refusal(custom: kubernetes.client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> str:
    try:
        custom.create_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace,
                                               ftj_cluster.PLURAL, body, dry_run="All")
    except kubernetes.client.ApiException as error:
        assert error.status == 422, error.body
        return str(json.loads(error.body)["message"])
    raise AssertionError(f"accepted: {body}")


def set_path(path: str, value: Any) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = body
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return edit


def drop(path: str) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = body
        for key in parents:
            node = node[key]
        del node[leaf]
    return edit


def both(*edits: Edit) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        for one in edits:
            one(body)
    return edit


# (edit, base example, field path the message must name, words it must contain)
INVALID: dict[str, tuple[Edit, str, str, str]] = {
    "unknown engine": (set_path("spec.engine", "whisper"), "speechbrain-atc0", "spec.engine", "Unsupported value"),
    "no data": (drop("spec.data"), "speechbrain-atc0", "spec.data", "Required value"),
    "no output": (drop("spec.output"), "speechbrain-atc0", "spec.output", "Required value"),
    "no validation manifest": (drop("spec.data.validation"), "speechbrain-atc0", "spec.data.validation", "Required"),
    "absolute manifest path": (set_path("spec.data.train", "/etc/passwd"), "speechbrain-atc0", "spec.data.train",
                               "relative"),
    "manifest escapes the volume": (set_path("spec.data.validation", "atc0/../../x.csv"), "speechbrain-atc0",
                                    "spec.data.validation", "'..'"),
    "neither maxSteps nor epochs": (drop("spec.training.epochs"), "speechbrain-atc0", "spec.training",
                                    "maxSteps or training.epochs"),
    "adapters outside hf-ctc": (set_path("spec.training.peft.method", "adapters"), "speechbrain-atc0",
                                "spec.training.peft.method", "hf-ctc"),
    "bf16 without GPUs": (both(set_path("spec.training.precision", "bf16"), set_path("spec.resources.gpusPerNode", 0)),
                          "speechbrain-atc0", "spec.training.precision", "needs GPUs"),
    "two nodes without GPUs": (both(set_path("spec.resources.nodes", 2), set_path("spec.resources.gpusPerNode", 0),
                                    set_path("spec.training.precision", "fp32")),
                               "speechbrain-atc0", "spec.resources.nodes", "needs GPUs"),
    "pretrained and path": (set_path("spec.model.pretrained", "facebook/mms-1b-all"), "speechbrain-atc0", "spec.model",
                            "at most one"),
    "init without a starting model": (both(drop("spec.model.pretrained"), drop("spec.model.volume"),
                                           set_path("spec.model.init", {"include": ["encoder."]})), "canary",
                                      "spec.model.init", "model.pretrained or model.path"),
    "relative model path without volume": (drop("spec.model.volume"), "speechbrain-atc0", "spec.model.path",
                                           "model.volume"),
    "mix outside nemo-canary": (set_path("spec.data.mix", [{"manifest": "x.json"}]), "mms-banglish-lora", "spec.data.mix",
                                "nemo-canary"),
    "zero learning rate": (set_path("spec.training.learningRate", 0), "speechbrain-atc0", "spec.training.learningRate",
                           "greater than 0"),
    "memory not a quantity": (set_path("spec.resources.memory", "lots"), "speechbrain-atc0", "spec.resources.memory",
                              "should match"),
    "too many GPUs per node": (set_path("spec.resources.gpusPerNode", 17), "speechbrain-atc0",
                               "spec.resources.gpusPerNode", "less than or equal to 16"),
    "target modules without lora": (set_path("spec.training.peft", {"method": "none", "targetModules": ["q_proj"]}),
                                    "speechbrain-atc0", "spec.training.peft.targetModules", "method lora"),
    "validation interval beyond maxSteps": (set_path("spec.training.valCheckInterval", 60000), "canary",
                                            "spec.training.valCheckInterval", "must not exceed"),
    "unknown pnc": (set_path("spec.data.pnc", "maybe"), "canary", "spec.data.pnc", "Unsupported value"),
    "name too long for pod names": (set_path("metadata.name", "x" * 49), "speechbrain-atc0", "metadata.name",
                                    "Too long"),
    "toleration Exists with a value": (set_path("spec.resources.tolerations", [{"key": "k", "operator": "Exists",
                                                                                "value": "v"}]),
                                       "speechbrain-atc0", "spec.resources.tolerations[0]", "must not set a value"),
    "literal secret in pod.env": (set_path("spec.pod.env", [{"name": "WANDB_API_KEY", "value": "k"}]),
                                  "speechbrain-atc0", "spec.pod.env[0].value", "valueFrom.secretKeyRef"),
    "operator's variable in pod.env": (set_path("spec.pod.env", [{"name": "SPEECHTUNE_RUN_ID", "value": "x"}]),
                                       "speechbrain-atc0", "spec.pod.env[0].name", "set by the operators"),
    "hostPath in pod.volumes": (set_path("spec.pod.volumes", [{"name": "h", "hostPath": {"path": "/"}}]),
                                "speechbrain-atc0", "spec.pod.volumes[0]", "exactly one of"),
    "mount over /data": (set_path("spec.pod", {"volumes": [{"name": "x", "emptyDir": {}}],
                                               "volumeMounts": [{"name": "x", "mountPath": "/data"}]}),
                         "speechbrain-atc0", "spec.pod.volumeMounts[0].mountPath", "operator's mounts"),
    "GPU in pod.extraResources": (set_path("spec.pod.extraResources", {"nvidia.com/gpu": 8}), "canary",
                                  "spec.pod.extraResources", "GPU resource"),
    "lower-case capability": (set_path("spec.pod.addCapabilities", ["sys_admin"]), "canary",
                              "spec.pod.addCapabilities[0]", "should match"),
}


def test_every_example_is_accepted(api: Any, namespace: str) -> None:
    _, custom = api
    for name in ftj_cluster.EXAMPLES:
        custom.create_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace, ftj_cluster.PLURAL,
                                               ftj_cluster.example(name), dry_run="All")


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_job_is_refused_naming_the_field(api: Any, namespace: str, case: str) -> None:
    edit, base, field, words = INVALID[case]
    message = refusal(api[1], namespace, job(edit, base=base))
    assert f"{field}:" in message or f"{field} " in message, message
    assert words in message, message


# Updates after creation: (edit, field path, words). Only runPolicy.suspend may change.
IMMUTABLE: dict[str, tuple[Edit, str, str]] = {
    "engine": (set_path("spec.engine", "hf-ctc"), "spec.engine", "immutable"),
    "data": (set_path("spec.data.train", "atc0/part2/train.csv"), "spec.data", "immutable"),
    "resources": (set_path("spec.resources.gpusPerNode", 2), "spec.resources", "immutable"),
    "training": (set_path("spec.training.epochs", 50), "spec.training", "immutable"),
    "output": (set_path("spec.output.saveTopK", 1), "spec.output", "immutable"),
    "model added": (set_path("spec.model", {"pretrained": "x/y"}), "spec.model", "immutable"),
    "backoff limit": (set_path("spec.runPolicy.backoffLimit", 9), "spec.runPolicy.backoffLimit", "only runPolicy.suspend"),
    "queue added": (set_path("spec.runPolicy.queueName", "q"), "spec.runPolicy", "only runPolicy.suspend"),
    "pod added": (set_path("spec.pod", {"labels": {"a": "b"}}), "spec.pod", "immutable"),
}


def test_immutable_fields_cannot_change_but_suspend_can(api: Any, namespace: str) -> None:
    _, custom = api
    created = custom.create_namespaced_custom_object(
        ftj_cluster.GROUP, ftj_cluster.VERSION, namespace, ftj_cluster.PLURAL,
        job(both(set_path("metadata.name", "immutable-check"), drop("spec.model"))))
    refusals = []
    for case, (edit, field, words) in sorted(IMMUTABLE.items()):
        changed = copy.deepcopy(created)
        edit(changed)
        try:
            custom.replace_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace,
                                                    ftj_cluster.PLURAL, "immutable-check", changed, dry_run="All")
        except kubernetes.client.ApiException as error:
            message = json.loads(error.body)["message"]
            assert field in message and words in message, (case, message)
            refusals.append(case)
    assert refusals == sorted(IMMUTABLE)
    suspended = copy.deepcopy(created)
    suspended["spec"]["runPolicy"]["suspend"] = True
    custom.replace_namespaced_custom_object(ftj_cluster.GROUP, ftj_cluster.VERSION, namespace, ftj_cluster.PLURAL,
                                            "immutable-check", suspended, dry_run="All")
