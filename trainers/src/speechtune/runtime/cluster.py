"""`speechtune status|watch NAME`: read a FinetuneJob's status from the cluster."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, cast

GROUP, VERSION, PLURAL = "speechtune.dev", "v1alpha1", "finetunejobs"
DONE_PHASES = ("Succeeded", "Failed")


class ClusterError(RuntimeError):
    """The job could not be read: no kubeconfig, no such job, API errors."""


def get_job(name: str, *, namespace: str, kubeconfig: str | None = None) -> Mapping[str, Any]:
    from kubernetes import client, config  # only the cluster commands need it

    try:
        config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as error:
        raise ClusterError(f"kubeconfig {kubeconfig or '~/.kube/config'}: {error}") from None
    api = client.CustomObjectsApi()
    try:
        job = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except client.ApiException as error:
        if error.status == 404:
            raise ClusterError(f"finetunejob {namespace}/{name} not found") from None
        raise ClusterError(f"finetunejob {namespace}/{name}: {error.status} {error.reason}") from None
    return cast(Mapping[str, Any], job)


def format_status(job: Mapping[str, Any]) -> str:
    """One line: name, engine, phase, progress, WER, message."""
    status = job.get("status") or {}
    progress = status.get("progress") or {}
    metrics = status.get("metrics") or {}
    parts = [job["metadata"]["name"], str((job.get("spec") or {}).get("engine", "?")),
             str(status.get("phase", "Pending"))]
    if progress.get("step") is not None:
        parts.append(f"step {progress['step']}/{progress.get('maxSteps', '?')}")
    if progress.get("etaSeconds") is not None:
        parts.append(f"ETA {int(progress['etaSeconds'])}s")
    for key in ("trainLoss", "wer"):
        if metrics.get(key) is not None:
            parts.append(f"{key} {metrics[key]:.4f}")
    if status.get("message"):
        parts.append(f"- {status['message']}")
    return "  ".join(parts)


def watch(fetch: Callable[[], Mapping[str, Any]], *, show: Callable[[str], None], interval: float = 5.0,
          timeout: float | None = None) -> Mapping[str, Any]:
    """Shows each change of the status line until the job succeeds or fails."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    while True:
        job = fetch()
        line = format_status(job)
        if line != last:
            show(line)
            last = line
        if (job.get("status") or {}).get("phase") in DONE_PHASES:
            return job
        if deadline is not None and time.monotonic() > deadline:
            return job
        time.sleep(interval)
