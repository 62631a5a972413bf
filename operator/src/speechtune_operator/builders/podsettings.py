"""`spec.pod`: a job's own settings laid over the trainer pod template the operator builds.

After Kubeflow Trainer's pod template overrides: one pure function taking the finished
shared pod template (podtemplate.py), so every backend's child gets the same overrides. The CRD schema and CEL rules already refused what a job may not set (literal
secrets, the operator's own env names, volumes and mounts); the one rule the CRD cannot
know, the capability allow-list, lives in the operator's settings and is checked here.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from speechtune_operator import settings as settings_mod

# Variables the operator sets by default that a job may replace with its own (e.g. its
# own HF token secret, another cache folder on the model volume).
REPLACEABLE_ENV = frozenset({"HF_TOKEN", "HF_HOME", "NEMO_CACHE_DIR"})


class PodSettingsRefused(ValueError):
    """A spec.pod the operator will not run (whatever the backend); the message names the field."""


def check_pod_settings(pod: Mapping[str, Any], settings: settings_mod.Settings) -> None:
    """Raises PodSettingsRefused for what the CRD cannot refuse by itself."""
    allowed = set(settings.allowed_capabilities)
    refused = [cap for cap in pod.get("addCapabilities") or () if cap not in allowed]
    if refused:
        raise PodSettingsRefused(
            f"spec.pod.addCapabilities: {', '.join(refused)} not in the operator's allow-list "
            f"({', '.join(sorted(allowed)) or 'empty'})")


def apply_pod_settings(template: Mapping[str, Any], pod: Mapping[str, Any],
                       settings: settings_mod.Settings, container_name: str) -> dict[str, Any]:
    """A copy of `template` (metadata + spec of a pod) with `spec.pod` applied to the pod
    and to its trainer container; the operator's own values win where the CRD let a name
    through twice (labels), a job's replace the defaults in REPLACEABLE_ENV."""
    check_pod_settings(pod, settings)
    out = copy.deepcopy(dict(template))
    if not pod:
        return out
    meta = out.setdefault("metadata", {})
    meta["labels"] = {**pod.get("labels", {}), **meta.get("labels", {})}
    meta["annotations"] = {**pod.get("annotations", {}), **meta.get("annotations", {})}
    spec = out["spec"]
    container = next(c for c in spec["containers"] if c["name"] == container_name)
    _apply_env(container, pod)
    if pod.get("imagePullSecrets"):
        spec["imagePullSecrets"] = [{"name": s["name"]} for s in pod["imagePullSecrets"]]
    if pod.get("serviceAccountName"):
        # The pod talks to a cloud API as this account (IRSA, Workload Identity): the
        # token is mounted for it, and only then.
        spec["serviceAccountName"] = pod["serviceAccountName"]
        spec["automountServiceAccountToken"] = True
    if pod.get("volumes"):
        spec["volumes"] = spec.get("volumes", []) + copy.deepcopy(list(pod["volumes"]))
    if pod.get("volumeMounts"):
        container["volumeMounts"] = container.get("volumeMounts", []) + copy.deepcopy(list(pod["volumeMounts"]))
    for key in ("affinity", "topologySpreadConstraints", "runtimeClassName", "schedulerName"):
        if pod.get(key):
            spec[key] = copy.deepcopy(pod[key])
    if pod.get("extraResources"):
        for kind in ("requests", "limits"):
            amounts = container.setdefault("resources", {}).setdefault(kind, {})
            amounts.update({name: str(value) for name, value in pod["extraResources"].items()})
    if pod.get("addCapabilities"):
        capabilities = container.setdefault("securityContext", {}).setdefault("capabilities", {})
        capabilities["add"] = list(pod["addCapabilities"])
    return out


def _apply_env(container: dict[str, Any], pod: Mapping[str, Any]) -> None:
    extra = [copy.deepcopy(dict(item)) for item in pod.get("env") or ()]
    if extra:
        mine = {item["name"] for item in extra}
        kept = [item for item in container.get("env", [])
                if not (item["name"] in REPLACEABLE_ENV and item["name"] in mine)]
        container["env"] = kept + extra
    if pod.get("envFrom"):
        container["envFrom"] = copy.deepcopy(list(pod["envFrom"]))
