"""The Kubeflow PyTorchJob (kubeflow.org/v1) that runs one FinetuneJob.

One Master, plus nodes-1 Workers, each the shared trainer pod (podtemplate.py) with its
container named `pytorch` (the training-operator finds it by that name).
"""

from __future__ import annotations

from typing import Any, Mapping

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import podtemplate, queueing

# The training-operator derives MASTER_PORT from the container port of this name; setting
# it here keeps the job valid without the operator's defaulting webhook.
RENDEZVOUS_PORT_NAME = "pytorchjob-port"
RENDEZVOUS_PORT = 23456
# The training-operator also sets MASTER_ADDR/WORLD_SIZE/RANK, which Lightning reads in a
# pod with one process: torchrun is needed only for several GPUs per pod (nprocPerNode
# below becomes PET_NPROC_PER_NODE).
TRAINER = podtemplate.TrainerContainer(
    name="pytorch", torchrun_from_nodes=10**9, ports=((RENDEZVOUS_PORT_NAME, RENDEZVOUS_PORT),))
RESTART_POLICY = "ExitCode"  # exit 1 fails the job; 130/137/143 (preemption, OOM kill) restart it


def build_pytorchjob(body: Mapping[str, Any], settings: settings_mod.Settings) -> dict[str, Any]:
    meta, spec = body["metadata"], body["spec"]
    nodes, gpus = podtemplate.nodes_of(body), podtemplate.gpus_of(body)
    replica_specs: dict[str, Any] = {
        "Master": {"replicas": 1, "restartPolicy": RESTART_POLICY, "template": _template(body, settings)},
    }
    if nodes > 1:
        replica_specs["Worker"] = {"replicas": nodes - 1, "restartPolicy": RESTART_POLICY,
                                   "template": _template(body, settings)}
    return {
        "apiVersion": f"{names.PYTORCHJOB_GROUP}/{names.PYTORCHJOB_VERSION}",
        "kind": "PyTorchJob",
        "metadata": {
            "name": names.pytorchjob_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": child_labels(body),
            **child_annotations(body),
        },
        "spec": {
            "runPolicy": run_policy(spec.get("runPolicy", {})),
            "nprocPerNode": str(max(gpus, 1)),  # a string in the API: auto|cpu|gpu|N
            "pytorchReplicaSpecs": replica_specs,
        },
    }


def _template(body: Mapping[str, Any], settings: settings_mod.Settings) -> dict[str, Any]:
    template = podtemplate.pod_template(body, settings, TRAINER)
    # The operator's default PriorityClass when the job names none (with the trainjob
    # backend the chart's ClusterTrainingRuntime carries it instead).
    if settings.default_priority_class and "priorityClassName" not in template["spec"]:
        template["spec"]["priorityClassName"] = settings.default_priority_class
    return template


def child_labels(body: Mapping[str, Any]) -> dict[str, str]:
    """The child's own labels: ours, plus Kueue's queue label when the job names a queue."""
    labels = names.child_labels(body)
    queue = body["spec"].get("runPolicy", {}).get("queueName")
    if queue:
        labels[names.LABEL_KUEUE_QUEUE] = queue
    return labels


def child_annotations(body: Mapping[str, Any]) -> dict[str, Any]:
    """{"annotations": ...} for a queued child (the user's suspend switch), else {}."""
    policy = body["spec"].get("runPolicy", {})
    if not policy.get("queueName"):
        return {}
    return {"annotations": queueing.suspend_annotations(bool(policy.get("suspend")))}


def run_policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cleanPodPolicy": policy.get("cleanPodPolicy", "None"),
        # A queued job starts suspended: Kueue unsuspends it once its Workload is admitted
        # (Kueue's webhook would suspend it too; this way it never starts pods unqueued).
        "suspend": bool(policy.get("suspend", False)) or bool(policy.get("queueName")),
    }
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        if key in policy:
            out[key] = policy[key]
    if "schedulingPolicy" in policy:
        out["schedulingPolicy"] = dict(policy["schedulingPolicy"])
    return out
