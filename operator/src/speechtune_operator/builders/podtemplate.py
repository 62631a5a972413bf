"""The trainer pod every backend runs: one pure function of a FinetuneJob and the settings.

Each backend's child builder (pytorchjob.py, trainjob.py) wraps this template in its own
object; only what its controller expects of the trainer container differs (the
container's name, when to launch through torchrun, a rendezvous port), given as a
`TrainerContainer`. Per-job pod settings belong here, so both backends get them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import admission, jobfile, podsettings

TRAIN_COMMAND = ["speechtune", "train", "--job", f"{names.JOB_FILE_DIR}/{names.JOB_FILE_NAME}"]
# Lightning's KubeflowEnvironment pins local_rank to 0, so several GPUs per pod need one
# process per GPU from torchrun. torchrun reads --nnodes, --nproc-per-node, --node-rank,
# --master-addr and --master-port from the PET_* variables both Kubeflow controllers inject.
# --no-python: `speechtune` is an executable.
TORCHRUN_PREFIX = ["torchrun", "--no-python"]


class Unsupported(ValueError):
    """A FinetuneJob asks for something its cluster's backend cannot do; the message names
    the field. Raised by a child builder, reported once as the FinetuneJob's failure."""


@dataclasses.dataclass(frozen=True)
class TrainerContainer:
    """What one backend's controller expects of the trainer container."""

    name: str  # the controller finds the trainer container by this name
    torchrun_from_nodes: int  # launch through torchrun from this many nodes on (or >1 GPU)
    ports: tuple[tuple[str, int], ...] = ()  # extra (name, port) the controller reads


def nodes_of(body: Mapping[str, Any]) -> int:
    return int(body["spec"].get("resources", {}).get("nodes", 1))


def gpus_of(body: Mapping[str, Any]) -> int:
    return int(body["spec"].get("resources", {}).get("gpusPerNode", 0))


def command(body: Mapping[str, Any], trainer: TrainerContainer) -> list[str]:
    torchrun = gpus_of(body) > 1 or nodes_of(body) >= trainer.torchrun_from_nodes
    return (TORCHRUN_PREFIX + TRAIN_COMMAND) if torchrun else list(TRAIN_COMMAND)


def pod_template(body: Mapping[str, Any], settings: settings_mod.Settings,
                 trainer: TrainerContainer) -> dict[str, Any]:
    """Raises jobfile.JobFileTooLarge for a spec whose job file cannot travel in the pod."""
    spec = body["spec"]
    resources = spec.get("resources", {})
    pod_spec: dict[str, Any] = {
        "containers": [_container(body, settings, trainer)],
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
    template = {
        "metadata": {
            "labels": names.child_labels(body),
            "annotations": {
                # Istio sidecars never exit, so a pod with one never completes.
                "sidecar.istio.io/inject": "false",
                # The job file, written to JOB_FILE_DIR by the "job" downwardAPI volume.
                names.ANNOTATION_JOB_FILE: jobfile.job_file(body),
            },
        },
        "spec": pod_spec,
    }
    return podsettings.apply_pod_settings(template, spec.get("pod") or {}, settings, trainer.name)


def _container(body: Mapping[str, Any], settings: settings_mod.Settings,
               trainer: TrainerContainer) -> dict[str, Any]:
    spec = body["spec"]
    ports = [{"name": "metrics", "containerPort": settings.trainer_metrics_port, "protocol": "TCP"}]
    ports += [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in trainer.ports]
    return {
        "name": trainer.name,
        "image": image(body, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": command(body, trainer),
        "env": _env(body, settings),
        "ports": ports,
        "resources": _resources(spec.get("resources", {})),
        "volumeMounts": _mounts(body),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def image(body: Mapping[str, Any], settings: settings_mod.Settings) -> str:
    return str(body["spec"].get("image") or settings.image_for(body["spec"]["engine"]))


def _env(body: Mapping[str, Any], settings: settings_mod.Settings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        # Stable across pod restarts, so a restarted pod resumes the same run folder.
        {"name": "SPEECHTUNE_RUN_ID", "value": body["metadata"]["uid"]},
        {"name": "SPEECHTUNE_METRICS_PORT", "value": str(settings.trainer_metrics_port)},
        {"name": "HOME", "value": "/home/speechtune"},
    ]
    model = body["spec"].get("model", {})
    if "volume" in model:
        env += cache_env()
    if model_prefetched(body, settings):
        # The model initializer Job put the model on the volume: GPU pods never download,
        # and need no token.
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
        return env
    if model.get("pretrained"):  # the hub is the operator's setting (a FinetuneJob cannot choose it)
        env.append({"name": "HF_ENDPOINT", "value": settings.hf_endpoint})
    # Only an allowed image gets the token (admission.py): with refuse_unlisted_images off,
    # any other image runs, but without the cluster's credentials.
    if settings.hf_token_secret and admission.image_allowed(image(body, settings), settings):
        env.append(hf_token_env(settings))
    return env


def model_prefetched(body: Mapping[str, Any], settings: settings_mod.Settings) -> bool:
    """Whether the model initializer (builders/initializer.py) downloads the job's model
    before its trainer pods exist: a hub model, a model volume to keep it in, and no
    spec.model.path (which wins over pretrained in every engine)."""
    model = body["spec"].get("model") or {}
    return bool(settings.model_initializer and model.get("pretrained") and "volume" in model
                and not model.get("path"))


def cache_env() -> list[dict[str, Any]]:
    """Hub caches on the model volume: downloads land there and survive pod restarts; the
    model initializer fills exactly these."""
    return [{"name": "HF_HOME", "value": "/models/huggingface"},
            {"name": "NEMO_CACHE_DIR", "value": "/models/nemo"}]


def hf_token_env(settings: settings_mod.Settings) -> dict[str, Any]:
    return {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": settings.hf_token_secret, "key": settings.hf_token_key, "optional": True}}}


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
        jobfile.volume(),
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
