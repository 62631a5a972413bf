"""Deterministic names and labels of a FinetuneJob's children.

Names derive only from the FinetuneJob's name, so a handler that runs twice (a restart, a
retry) finds the child it made the first time instead of making a second one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

GROUP = "speechtune.dev"
VERSION = "v1alpha1"
PLURAL = "finetunejobs"
KIND = "FinetuneJob"
API_VERSION = f"{GROUP}/{VERSION}"

PYTORCHJOB_GROUP = "kubeflow.org"
PYTORCHJOB_VERSION = "v1"
PYTORCHJOB_PLURAL = "pytorchjobs"
TRAINJOB_GROUP = "trainer.kubeflow.org"
TRAINJOB_VERSION = "v1alpha1"
TRAINJOB_PLURAL = "trainjobs"


@dataclasses.dataclass(frozen=True)
class ChildKind:
    """The API resource of the object that runs a FinetuneJob's pods (one per backend)."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


PYTORCHJOB = ChildKind(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL, "PyTorchJob")
TRAINJOB = ChildKind(TRAINJOB_GROUP, TRAINJOB_VERSION, TRAINJOB_PLURAL, "TrainJob")

LABEL_JOB = "speechtune.dev/finetunejob"
LABEL_ENGINE = "speechtune.dev/engine"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
# Kueue's admission unit, one per queued child (owner reference: the child).
WORKLOAD = ChildKind("kueue.x-k8s.io", "v1beta2", "workloads", "Workload")
# On a queued child: the user's runPolicy.suspend ("true"/"false"). Kueue owns the child's own
# suspend switch (it holds it until admission), so the user's intent is recorded here.
ANNOTATION_SUSPEND = "speechtune.dev/suspend"
# On the model initializer Job and its pod: what watches and selectors tell it apart by.
LABEL_COMPONENT = "speechtune.dev/component"
COMPONENT_INITIALIZER = "model-initializer"
MANAGER = "speechtune-operator"

JOB_FILE_DIR = "/etc/speechtune"
JOB_FILE_NAME = "job.yaml"
ANNOTATION_JOB_FILE = "speechtune.dev/job-file"  # on trainer pods: the job file, projected to JOB_FILE_DIR


def child_name(job_name: str) -> str:
    """The PyTorchJob's or TrainJob's name: the FinetuneJob's own, on either backend."""
    return job_name


def pytorchjob_name(job_name: str) -> str:
    # The same name as the FinetuneJob: pods become <name>-master-0, <name>-worker-N.
    return job_name


def trainjob_name(job_name: str) -> str:
    # The same name as the FinetuneJob: its JobSet too, pods become <name>-node-0-<rank>-<hash>.
    return job_name


def training_runtime_name(engine: str) -> str:
    """The ClusterTrainingRuntime the chart ships for an engine (trainjob backend)."""
    return f"speechtune-{engine}"


def initializer_job_name(job_name: str) -> str:
    # metadata.name is at most 48 characters: the Job's pods' job-name label stays under 63.
    return f"{job_name}-model"


def networkpolicy_name(job_name: str) -> str:
    return f"{job_name}-trainers"


def master_pod_name(job_name: str) -> str:
    # Named by the training-operator: <job>-<replica type, lower case>-<index>.
    return f"{pytorchjob_name(job_name)}-master-0"


def child_labels(body: Mapping[str, Any]) -> dict[str, str]:
    return {
        LABEL_JOB: body["metadata"]["name"],
        LABEL_ENGINE: body["spec"]["engine"],
        LABEL_MANAGED_BY: MANAGER,
    }


def object_ref(body: Mapping[str, Any]) -> dict[str, Any]:
    """The identity kopf.event() and ownerReferences need, from a (partial) body."""
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
    }


def owner_name(child: Mapping[str, Any]) -> str | None:
    """The FinetuneJob owning a child: its controller owner reference, else its label."""
    for ref in child.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(GROUP + "/"):
            return str(ref["name"])
    label = (child.get("metadata", {}).get("labels") or {}).get(LABEL_JOB)
    return str(label) if label else None
