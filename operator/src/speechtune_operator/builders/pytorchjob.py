"""The Kubeflow PyTorchJob (kubeflow.org/v1) that runs one FinetuneJob.

One Master, plus nodes-1 Workers; container `pytorch` (the training-operator finds it by
that name) running `speechtune train --job /etc/speechtune/job.yaml`, through torchrun when
a pod has several GPUs.
"""

from __future__ import annotations

from typing import Any, Mapping

from speechtune_operator import settings as settings_mod
from speechtune_operator import names

TRAIN_COMMAND = ["speechtune", "train", "--job", f"{names.JOB_FILE_DIR}/{names.JOB_FILE_NAME}"]
# Lightning's KubeflowEnvironment pins local_rank to 0, so several GPUs per pod need one
# process per GPU from torchrun. torchrun reads --nnodes, --nproc-per-node, --node-rank,
# --master-addr and --master-port from the PET_* variables the training-operator injects
# (nprocPerNode below becomes PET_NPROC_PER_NODE). --no-python: `speechtune` is an executable.
TORCHRUN_PREFIX = ["torchrun", "--no-python"]
# The training-operator derives MASTER_PORT from the container port of this name; setting
# it here keeps the job valid without the operator's defaulting webhook.
RENDEZVOUS_PORT_NAME = "pytorchjob-port"
RENDEZVOUS_PORT = 23456
RESTART_POLICY = "ExitCode"  # exit 1 fails the job; 130/137/143 (preemption, OOM kill) restart it


def build_pytorchjob(body: Mapping[str, Any], settings: settings_mod.Settings) -> dict[str, Any]:
    meta, spec = body["metadata"], body["spec"]
    resources = spec.get("resources", {})
    nodes = int(resources.get("nodes", 1))
    gpus = int(resources.get("gpusPerNode", 0))
    replica_specs: dict[str, Any] = {
        "Master": {"replicas": 1, "restartPolicy": RESTART_POLICY,
                   "template": _pod_template(body, settings)},
    }
    if nodes > 1:
        replica_specs["Worker"] = {"replicas": nodes - 1, "restartPolicy": RESTART_POLICY,
                                   "template": _pod_template(body, settings)}
    labels = names.child_labels(body)
    queue = spec.get("runPolicy", {}).get("queueName")
    if queue:
        labels[names.LABEL_KUEUE_QUEUE] = queue
    return {
        "apiVersion": f"{names.PYTORCHJOB_GROUP}/{names.PYTORCHJOB_VERSION}",
        "kind": "PyTorchJob",
        "metadata": {
            "name": names.pytorchjob_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": labels,
        },
        "spec": {
            "runPolicy": run_policy(spec.get("runPolicy", {})),
            "nprocPerNode": str(max(gpus, 1)),  # a string in the API: auto|cpu|gpu|N
            "pytorchReplicaSpecs": replica_specs,
        },
    }


def run_policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cleanPodPolicy": policy.get("cleanPodPolicy", "None"),
        "suspend": bool(policy.get("suspend", False)),
    }
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        if key in policy:
            out[key] = policy[key]
    if "schedulingPolicy" in policy:
        out["schedulingPolicy"] = dict(policy["schedulingPolicy"])
    return out


def _pod_template(body: Mapping[str, Any], settings: settings_mod.Settings) -> dict[str, Any]:
    spec = body["spec"]
    resources = spec.get("resources", {})
    pod_spec: dict[str, Any] = {
        "containers": [_container(body, settings)],
        "volumes": _volumes(body),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.trainer_uid,
            "runAsGroup": settings.trainer_uid,
            "fsGroup": settings.trainer_uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The trainer talks to nothing in the cluster; no token in its filesystem.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    if resources.get("nodeSelector"):
        pod_spec["nodeSelector"] = dict(resources["nodeSelector"])
    if resources.get("tolerations"):
        pod_spec["tolerations"] = [dict(t) for t in resources["tolerations"]]
    if resources.get("priorityClassName"):
        pod_spec["priorityClassName"] = resources["priorityClassName"]
    return {
        "metadata": {
            "labels": names.child_labels(body),
            # Istio sidecars never exit, so a pod with one never completes.
            "annotations": {"sidecar.istio.io/inject": "false"},
        },
        "spec": pod_spec,
    }


def _container(body: Mapping[str, Any], settings: settings_mod.Settings) -> dict[str, Any]:
    spec = body["spec"]
    gpus = int(spec.get("resources", {}).get("gpusPerNode", 0))
    command = (TORCHRUN_PREFIX + TRAIN_COMMAND) if gpus > 1 else list(TRAIN_COMMAND)
    return {
        "name": "pytorch",
        "image": spec.get("image") or settings.image_for(spec["engine"]),
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "env": _env(body, settings),
        "ports": [
            {"name": "metrics", "containerPort": settings.trainer_metrics_port, "protocol": "TCP"},
            {"name": RENDEZVOUS_PORT_NAME, "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"},
        ],
        "resources": _resources(spec.get("resources", {})),
        "volumeMounts": _mounts(body),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _env(body: Mapping[str, Any], settings: settings_mod.Settings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        # Stable across pod restarts, so a restarted pod resumes the same run folder.
        {"name": "SPEECHTUNE_RUN_ID", "value": body["metadata"]["uid"]},
        {"name": "SPEECHTUNE_METRICS_PORT", "value": str(settings.trainer_metrics_port)},
        {"name": "HOME", "value": "/home/speechtune"},
    ]
    if "volume" in body["spec"].get("model", {}):
        # Model downloads land on the model volume and survive pod restarts.
        env += [{"name": "HF_HOME", "value": "/models/huggingface"},
                {"name": "NEMO_CACHE_DIR", "value": "/models/nemo"}]
    if settings.hf_token_secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": settings.hf_token_secret, "key": settings.hf_token_key, "optional": True}}})
    return env


def _resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": str(resources.get("cpu", "4")),
                               "memory": str(resources.get("memory", "16Gi"))}
    gpus = int(resources.get("gpusPerNode", 0))
    if gpus > 0:
        amounts[resources.get("gpuResource", "nvidia.com/gpu")] = str(gpus)
    # requests == limits: Guaranteed QoS, so a busy node does not evict a training pod first.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _mounts(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "job", "mountPath": names.JOB_FILE_DIR, "readOnly": True},
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "output", "mountPath": "/output"},
    ]
    if "volume" in body["spec"].get("model", {}):
        mounts.append({"name": "models", "mountPath": "/models"})
    mounts += [
        {"name": "dshm", "mountPath": "/dev/shm"},
        # The root filesystem is read-only: scratch and caches go to emptyDirs.
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "home", "mountPath": "/home/speechtune"},
    ]
    return mounts


def _volumes(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = body["spec"]
    volumes: list[dict[str, Any]] = [
        {"name": "job", "configMap": {"name": names.configmap_name(body["metadata"]["name"]),
                                      "items": [{"key": names.JOB_FILE_NAME,
                                                 "path": names.JOB_FILE_NAME}]}},
        {"name": "data", "persistentVolumeClaim": {
            "claimName": spec["data"]["volume"]["claimName"], "readOnly": True}},
        {"name": "output", "persistentVolumeClaim": {
            "claimName": spec["output"]["volume"]["claimName"]}},
    ]
    if "volume" in spec.get("model", {}):
        volumes.append({"name": "models", "persistentVolumeClaim": {
            "claimName": spec["model"]["volume"]["claimName"]}})
    shm = str(spec.get("resources", {}).get("shmSize", "2Gi"))
    volumes.extend([
        # Data-loader workers pass batches through /dev/shm; the default 64 MiB is far too small.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "home", "emptyDir": {}},
    ])
    return volumes
