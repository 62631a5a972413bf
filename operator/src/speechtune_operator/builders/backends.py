"""The two backends a FinetuneJob can run on, as values: the handlers pick one at start-up
(setting `backend`) and use only what it holds, never branching on its name.

- pytorchjob: Kubeflow training-operator v1, a PyTorchJob (Master + Workers).
- trainjob: Kubeflow Trainer v2, a TrainJob on the engine's ClusterTrainingRuntime (a JobSet).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from speechtune_operator import settings as settings_mod
from speechtune_operator import names
from speechtune_operator.builders import phase, pytorchjob, trainjob, trainjob_status

Builder = Callable[[Mapping[str, Any], settings_mod.Settings], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    child: names.ChildKind
    build: Builder  # FinetuneJob -> child object (pure)
    read: phase.Reader  # child -> phase, message, conditions, times
    container: str  # the trainer container, whose terminated state explains a failure
    pods_label: str  # label on every pod of the child, valued with the child's name
    rank0_labels: Mapping[str, str]  # labels of the rank-0 pod, besides pods_label
    suspend_patch: Callable[[bool], dict[str, Any]]  # merge patch of the child's suspend
    suspended: Callable[[Mapping[str, Any]], bool]  # the child's suspend switch

    def user_suspended(self, child: Mapping[str, Any]) -> bool:
        """What the user asked (runPolicy.suspend): the child's own switch, except on a
        queued child, whose switch is Kueue's (its annotation holds the user's)."""
        meta = child.get("metadata") or {}
        if names.LABEL_KUEUE_QUEUE in (meta.get("labels") or {}):
            return (meta.get("annotations") or {}).get(names.ANNOTATION_SUSPEND) == "true"
        return self.suspended(child)

    def pods_selector(self, child_name: str) -> str:
        return f"{self.pods_label}={child_name}"

    def rank0_selector(self, child_name: str) -> str:
        return ",".join([self.pods_selector(child_name), *(f"{k}={v}" for k, v in self.rank0_labels.items())])

    def is_rank0(self, pod: Mapping[str, Any]) -> bool:
        labels = pod.get("metadata", {}).get("labels") or {}
        return all(labels.get(key) == value for key, value in self.rank0_labels.items())


PYTORCHJOB = Backend(
    name="pytorchjob",
    child=names.PYTORCHJOB,
    build=pytorchjob.build_pytorchjob,
    read=phase.read_pytorchjob,
    container=pytorchjob.TRAINER.name,
    # Set by the training-operator on every pod of a job.
    pods_label="training.kubeflow.org/job-name",
    rank0_labels={"training.kubeflow.org/replica-type": "master",
                  "training.kubeflow.org/replica-index": "0"},
    suspend_patch=lambda suspend: {"spec": {"runPolicy": {"suspend": suspend}}},
    suspended=lambda child: bool(child.get("spec", {}).get("runPolicy", {}).get("suspend")),
)

TRAINJOB = Backend(
    name="trainjob",
    child=names.TRAINJOB,
    build=trainjob.build_trainjob,
    read=trainjob_status.read_trainjob,
    container=trainjob.TRAINER.name,
    # Set by JobSet (its name is the TrainJob's) and by the Job controller on indexed pods.
    pods_label="jobset.sigs.k8s.io/jobset-name",
    rank0_labels={"jobset.sigs.k8s.io/replicatedjob-name": trainjob_status.TRAINER_JOB,
                  "batch.kubernetes.io/job-completion-index": "0"},
    suspend_patch=lambda suspend: {"spec": {"suspend": suspend}},
    suspended=lambda child: bool(child.get("spec", {}).get("suspend")),
)

BACKENDS = {backend.name: backend for backend in (PYTORCHJOB, TRAINJOB)}


def for_settings(settings: settings_mod.Settings) -> Backend:
    return BACKENDS[settings.backend]
