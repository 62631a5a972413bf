"""The trainer pods of a PyTorchJob."""

from __future__ import annotations

from typing import Any

from speechtune_operator.client import api

# Set by the training-operator on every pod of a job.
JOB_NAME_LABEL = "training.kubeflow.org/job-name"


def get(clients: api.Clients, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return clients.plain(clients.core.read_namespaced_pod(name, namespace))
    except Exception as error:
        if api.is_status(error, 404):
            return None
        raise


def of_job(clients: api.Clients, namespace: str, job_name: str) -> list[dict[str, Any]]:
    listed = clients.core.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={job_name}")
    return [clients.plain(pod) for pod in listed.items]
