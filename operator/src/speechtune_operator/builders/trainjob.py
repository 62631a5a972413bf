"""The Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1) that runs one FinetuneJob.

It references the engine's ClusterTrainingRuntime (`speechtune-<engine>`, shipped by the
chart: the JobSet with one replicated Job `node`, torch ML policy, the pod settings that
are the same for every job) and carries the rest of the shared trainer pod
(podtemplate.py): image, command, env, node count, resources and processes per node in
`spec.trainer`; volumes, mounts, security contexts, node selector, tolerations and labels
in a runtime patch, the only per-job pod fields a TrainJob accepts (v2.2.0 PodSpecPatch).
A pod field it cannot carry is refused with the field's name, never dropped.
"""

from __future__ import annotations

from typing import Any, Mapping

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import podtemplate, pytorchjob

# Trainer v2's torch plugin injects only PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK,
# PET_MASTER_ADDR and PET_MASTER_PORT (no WORLD_SIZE/RANK/MASTER_ADDR as the v1 operator
# does), which only torchrun reads: any job of more than one process goes through it.
TRAINER = podtemplate.TrainerContainer(name="node", torchrun_from_nodes=2)
PATCH_MANAGER = "speechtune.dev/operator"

# Pod fields the ClusterTrainingRuntime sets, the same for every job (the chart renders them
# from the operator's settings); a TrainJob cannot change them per job.
# A job whose pod differs there is refused, except the token of spec.pod.serviceAccountName,
# which the patch carries as the very volume the kubelet would mount (_token_volume).
RUNTIME_POD_FIELDS = {"automountServiceAccountToken": False, "enableServiceLinks": False}
TOKEN_VOLUME = "kube-api-access-speechtune"
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
RUNTIME_CONTAINER_FIELDS = frozenset({"imagePullPolicy", "ports"})
# Pod fields a runtime patch carries (trainer.kubeflow.org/v1alpha1 PodSpecPatch).
PATCHED_POD_FIELDS = frozenset({"volumes", "securityContext", "nodeSelector", "affinity",
                                "tolerations", "schedulingGates", "imagePullSecrets",
                                "serviceAccountName"})
# Where the user wrote a pod field the trainjob backend cannot carry.
_USER_FIELD = {"priorityClassName": "spec.resources.priorityClassName",
               "topologySpreadConstraints": "spec.pod.topologySpreadConstraints",
               "runtimeClassName": "spec.pod.runtimeClassName",
               "schedulerName": "spec.pod.schedulerName",
               "envFrom": "spec.pod.envFrom"}
# runPolicy fields the ClusterTrainingRuntime fixes at these values (the CRD's defaults).
RUNTIME_RUN_POLICY = {"backoffLimit": 3, "cleanPodPolicy": "None"}


def build_trainjob(body: Mapping[str, Any], settings: settings_mod.Settings) -> dict[str, Any]:
    meta, spec = body["metadata"], body["spec"]
    _check_run_policy(spec.get("runPolicy", {}))
    template = podtemplate.pod_template(body, settings, TRAINER)
    pod = template["spec"]
    [container] = pod["containers"]
    if pod.get("automountServiceAccountToken"):
        pod, container = _token_volume(pod, container)
    _check_carried(pod, container)
    gpus = podtemplate.gpus_of(body)
    trainjob_spec: dict[str, Any] = {
        "runtimeRef": {"name": names.training_runtime_name(spec["engine"]),
                       "apiGroup": names.TRAINJOB_GROUP, "kind": "ClusterTrainingRuntime"},
        "trainer": {
            "image": container["image"],
            "command": container["command"],
            "env": container["env"],
            "numNodes": podtemplate.nodes_of(body),
            # Explicit: the torch plugin's "auto" counts CPUs when a pod has no GPU.
            "numProcPerNode": max(gpus, 1),
            "resourcesPerNode": container["resources"],
        },
        "runtimePatches": [{
            "manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                "name": "node",
                "template": {"spec": {"template": {
                    "metadata": {key: dict(value) for key, value in template["metadata"].items()},
                    "spec": _pod_patch(pod, container),
                }}},
            }]}}},
        }],
        # Queued: suspended until Kueue (v0.17 integrates trainer.kubeflow.org/trainjob) admits it.
        "suspend": bool(spec.get("runPolicy", {}).get("suspend", False))
        or bool(spec.get("runPolicy", {}).get("queueName")),
    }
    deadline = spec.get("runPolicy", {}).get("activeDeadlineSeconds")
    if deadline:
        trainjob_spec["activeDeadlineSeconds"] = int(deadline)
    return {
        "apiVersion": names.TRAINJOB.api_version,
        "kind": names.TRAINJOB.kind,
        "metadata": {
            "name": names.trainjob_name(meta["name"]),
            "namespace": meta["namespace"],
            # Kueue's TrainJob integration reads the same queue label as for PyTorchJobs.
            "labels": pytorchjob.child_labels(body),
            **pytorchjob.child_annotations(body),
        },
        "spec": trainjob_spec,
    }


def _token_volume(pod: Mapping[str, Any], container: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """automountServiceAccountToken: true as an explicit projected volume at the standard
    path (what the kubelet mounts itself), since the runtime fixes automount to false."""
    volume = {"name": TOKEN_VOLUME, "projected": {"defaultMode": 0o444, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                     "fieldPath": "metadata.namespace"}}]}},
    ]}}
    pod = {**pod, "automountServiceAccountToken": False, "volumes": [*pod.get("volumes", []), volume]}
    mount = {"name": TOKEN_VOLUME, "mountPath": TOKEN_PATH, "readOnly": True}
    container = {**container, "volumeMounts": [*container.get("volumeMounts", []), mount]}
    return pod, container


def _pod_patch(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    patch = {key: value for key, value in pod.items() if key in PATCHED_POD_FIELDS}
    patch["containers"] = [{"name": TRAINER.name, "volumeMounts": container["volumeMounts"],
                            "securityContext": container["securityContext"]}]
    return patch


def _check_carried(pod: Mapping[str, Any], container: Mapping[str, Any]) -> None:
    for key in pod:
        fixed = key in RUNTIME_POD_FIELDS and pod[key] == RUNTIME_POD_FIELDS[key]
        if key not in PATCHED_POD_FIELDS | {"containers"} and not fixed:
            raise podtemplate.Unsupported(f"{_USER_FIELD.get(key, 'pod field ' + key)}: the trainjob backend cannot "
                              "set it per job (a TrainJob's runtime patch has no such field); "
                              "use the pytorchjob backend")
    carried = {"name", "image", "command", "env", "resources", "volumeMounts", "securityContext"}
    for key in container:
        if key not in carried | RUNTIME_CONTAINER_FIELDS:
            raise podtemplate.Unsupported(f"{_USER_FIELD.get(key, 'container field ' + key)}: the trainjob backend "
                                          "cannot set it per job")


def _check_run_policy(policy: Mapping[str, Any]) -> None:
    for key, fixed in RUNTIME_RUN_POLICY.items():
        if key in policy and policy[key] != fixed:
            raise podtemplate.Unsupported(f"spec.runPolicy.{key}: the trainjob backend uses the "
                              f"ClusterTrainingRuntime's {key} ({fixed}); got {policy[key]!r}")
    for key in ("ttlSecondsAfterFinished", "schedulingPolicy"):
        if key in policy:
            raise podtemplate.Unsupported(f"spec.runPolicy.{key}: not supported by the trainjob backend")
