"""The model initializer: a CPU-only batch/v1 Job that downloads a FinetuneJob's hub model
(spec.model.pretrained) once into its model volume, before any trainer pod exists.

After Kubeflow Trainer v2's model initializer: the download happens once, on a cheap pod,
instead of in every rank of every GPU pod at once; the trainer pods then run with
HF_HUB_OFFLINE=1 and read the cache. The Job runs the trainer image's own
`speechtune model fetch` (trainers/src/speechtune/runtime/hub.py), so it writes exactly the
cache layout the engine reads, and a second job with the same model finds it complete.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import admission, jobfile, podsettings, podtemplate

CONTAINER = "fetch"
TERMINATION_LOG = "/dev/termination-log"
FETCH_COMMAND = ["speechtune", "model", "fetch", "--job", f"{names.JOB_FILE_DIR}/{names.JOB_FILE_NAME}",
                 "--model-dir", "/models", "--termination-log", TERMINATION_LOG]
EXIT_PERMANENT = 1  # runtime/hub.py: the spec or the hub said no; retrying cannot help
BACKOFF_LIMIT = 2  # other exits (75: network, hub down, a cut download) retry, resuming
# spec.pod settings the download needs too: the registry's pull secret, a proxy or a
# replaced HF_TOKEN/HF_HOME in env, a cloud identity. Not the GPU job's scheduling or
# devices (affinity, extra resources, capabilities) nor its extra volumes.
POD_SETTINGS = ("labels", "annotations", "env", "envFrom", "imagePullSecrets", "serviceAccountName")


@dataclasses.dataclass(frozen=True)
class JobState:
    """What a Job's status says: finished or not, and why it failed."""

    succeeded: bool = False
    failed: bool = False
    reason: str = ""


def needed(body: Mapping[str, Any], settings: settings_mod.Settings) -> bool:
    """A hub model with a model volume to keep it in (the trainer pods then run offline)."""
    return podtemplate.model_prefetched(body, settings)


def build_job(body: Mapping[str, Any], settings: settings_mod.Settings) -> dict[str, Any]:
    """Raises jobfile.JobFileTooLarge and podsettings.PodSettingsRefused like the trainer pods."""
    meta = body["metadata"]
    labels = {**names.child_labels(body), names.LABEL_COMPONENT: names.COMPONENT_INITIALIZER}
    template = _template(body, settings, labels)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": names.initializer_job_name(meta["name"]), "namespace": meta["namespace"],
                     "labels": labels},
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
                "containerName": CONTAINER, "operator": "In", "values": [EXIT_PERMANENT]}}]},
            "template": template,
        },
    }


def _template(body: Mapping[str, Any], settings: settings_mod.Settings, labels: Mapping[str, str]) -> dict[str, Any]:
    model_claim = body["spec"]["model"]["volume"]["claimName"]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # podFailurePolicy needs it; the Job makes a new pod per retry
        "containers": [_container(body, settings)],
        "volumes": [
            jobfile.volume(),
            {"name": "models", "persistentVolumeClaim": {"claimName": model_claim}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "home", "emptyDir": {}},
        ],
        # The same restricted pod as the trainers': the files it writes belong to that user.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.trainer_uid,
            "runAsGroup": settings.trainer_uid,
            "fsGroup": settings.trainer_uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    template = {
        "metadata": {
            "labels": dict(labels),
            "annotations": {"sidecar.istio.io/inject": "false",
                            names.ANNOTATION_JOB_FILE: jobfile.job_file(body)},
        },
        "spec": pod_spec,
    }
    pod = body["spec"].get("pod") or {}
    return podsettings.apply_pod_settings(template, {k: pod[k] for k in POD_SETTINGS if k in pod},
                                          settings, CONTAINER)


def _container(body: Mapping[str, Any], settings: settings_mod.Settings) -> dict[str, Any]:
    amounts = {"cpu": settings.initializer_cpu, "memory": settings.initializer_memory}
    image = podtemplate.image(body, settings)
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/home/speechtune"},
        *podtemplate.cache_env(),
        # The operator's setting, never the FinetuneJob's (the CRD refuses it in spec.pod.env,
        # and a variable set here wins over one from spec.pod.envFrom).
        {"name": "HF_ENDPOINT", "value": settings.hf_endpoint},
    ]
    if settings.hf_token_secret and admission.image_allowed(image, settings):
        env.append(podtemplate.hf_token_env(settings))
    return {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(FETCH_COMMAND),
        "env": env,
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},  # no GPU
        "volumeMounts": [
            {"name": "job", "mountPath": names.JOB_FILE_DIR, "readOnly": True},
            {"name": "models", "mountPath": "/models"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "home", "mountPath": "/home/speechtune"},
        ],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def state_of(job: Mapping[str, Any]) -> JobState:
    """From the Job's conditions (Complete / Failed, set by the Job controller)."""
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return JobState(succeeded=True)
        if condition.get("type") == "Failed":
            reason = str(condition.get("reason") or "Failed")
            message = str(condition.get("message") or "").strip()
            return JobState(failed=True, reason=f"{reason}: {message}" if message else reason)
    return JobState()


def failure_message(job_name: str, state: JobState, pod_failure: str | None) -> str:
    """One line: the Job's reason and, when a pod says more (its termination message: the
    fetch command's own line), that too."""
    detail = f"; {pod_failure}" if pod_failure else ""
    return " ".join(f"model initializer Job {job_name} failed: {state.reason}{detail}".split())
