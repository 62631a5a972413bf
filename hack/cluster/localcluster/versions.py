"""Pinned versions of every control-plane binary, and where their builds are cached.

One cache folder per component, named by that component's version
(`~/.cache/speechtune/bin/kubernetes-v1.35.4/`, `.../trainer-v2.2.0/`, ...): bumping or
adding one component builds only that component, never the ~25-minute Kubernetes build.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

KUBERNETES = "v1.35.4"  # kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
ETCD = "v3.5.35"  # Kubernetes >= 1.31 needs etcd >= 3.5.11; Debian bookworm ships 3.4.23
KWOK = "v0.8.0"
HELM = "v3.20.2"
# The Kubernetes minor version helm assumes without a cluster (`helm template`, `helm lint`):
# helm's release build derives it from its client-go (v0.35 for helm v3.20).
HELM_KUBE_MINOR = "35"
TRAINING_OPERATOR = "v1.9.4"  # Kubeflow training-operator v1 (PyTorchJob)
TRAINER = "v2.2.0"  # Kubeflow Trainer v2 (TrainJob, ClusterTrainingRuntime)
JOBSET = "v0.12.0"  # JobSet, which Trainer v2 runs a TrainJob's pods with
KUEUE = "v0.17.0"  # Kueue: quota, queueing and admission of PyTorchJobs

TRAINING_OPERATOR_MODULE = "github.com/kubeflow/training-operator"
TRAINER_MODULE = "github.com/kubeflow/trainer/v2"
JOBSET_MODULE = "sigs.k8s.io/jobset"
KUEUE_MODULE = "sigs.k8s.io/kueue"


@dataclasses.dataclass(frozen=True)
class Component:
    """Binaries built together from one Go module, cached in one folder per version."""

    name: str
    version: str
    binaries: tuple[str, ...]
    module: str = ""  # the Go module its manifests come from
    # Files of that module kept next to the binaries, so a warm start needs no Go: its CRDs
    # (cached as crds/<file name>) and its webhook configurations (cached as webhooks.yaml).
    crds: tuple[str, ...] = ()
    webhooks: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"

    def crd_names(self) -> tuple[str, ...]:
        return tuple(Path(path).name for path in self.crds)

    def cached_files(self) -> dict[str, str]:
        """Cached name (relative to its folder) -> path in the module."""
        files = {f"crds/{Path(path).name}": path for path in self.crds}
        if self.webhooks:
            files["webhooks.yaml"] = self.webhooks
        return files


KUBERNETES_COMPONENT = Component(
    "kubernetes", KUBERNETES, ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"))
ETCD_COMPONENT = Component("etcd", ETCD, ("etcd",))
KWOK_COMPONENT = Component("kwok", KWOK, ("kwok",))
HELM_COMPONENT = Component("helm", HELM, ("helm",))
TRAINING_OPERATOR_COMPONENT = Component(
    "training-operator", TRAINING_OPERATOR, ("training-operator",), module=TRAINING_OPERATOR_MODULE,
    crds=("manifests/base/crds/kubeflow.org_pytorchjobs.yaml",))  # only PyTorchJob is served
TRAINER_COMPONENT = Component(
    "trainer", TRAINER, ("trainer-controller-manager",), module=TRAINER_MODULE,
    crds=tuple(f"manifests/base/crds/trainer.kubeflow.org_{plural}.yaml"
               for plural in ("clustertrainingruntimes", "trainingruntimes", "trainjobs")),
    webhooks="manifests/base/webhook/manifests.yaml")
JOBSET_COMPONENT = Component(
    "jobset", JOBSET, ("jobset",), module=JOBSET_MODULE,
    crds=("config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml",),
    webhooks="config/components/webhook/manifests.yaml")

KUEUE_COMPONENT = Component(
    "kueue", KUEUE, ("kueue",), module=KUEUE_MODULE,
    crds=tuple(f"config/components/crd/bases/kueue.x-k8s.io_{plural}.yaml"
               for plural in ("admissionchecks", "clusterqueues", "cohorts", "localqueues",
                              "multikueueclusters", "multikueueconfigs", "provisioningrequestconfigs",
                              "resourceflavors", "topologies", "workloadpriorityclasses", "workloads")),
    webhooks="config/components/webhook/manifests.yaml")

# What every local cluster runs; the trainjob backend adds TRAINJOB_COMPONENTS, a cluster
# started with Kueue (`controlplane.py up --kueue`, the `kueue_cluster` test fixture) adds
# KUEUE_COMPONENTS.
BASE_COMPONENTS = (KUBERNETES_COMPONENT, ETCD_COMPONENT, KWOK_COMPONENT, HELM_COMPONENT,
                   TRAINING_OPERATOR_COMPONENT)
TRAINJOB_COMPONENTS = (TRAINER_COMPONENT, JOBSET_COMPONENT)
KUEUE_COMPONENTS = (KUEUE_COMPONENT,)
ALL_COMPONENTS = BASE_COMPONENTS + TRAINJOB_COMPONENTS + KUEUE_COMPONENTS


@dataclasses.dataclass(frozen=True)
class Binaries:
    """The cache folders of some components, and where each binary is."""

    root: Path
    components: tuple[Component, ...]

    def folder(self, component: Component) -> Path:
        return self.root / component.key

    def path(self, name: str) -> Path:
        for component in self.components:
            if name in component.binaries:
                return self.folder(component) / name
        raise KeyError(f"no component of {self.key} builds {name!r}")

    def crd_path(self, name: str) -> Path:
        for component in self.components:
            if name in component.crd_names():
                return self.folder(component) / "crds" / name
        raise KeyError(f"no component of {self.key} carries the CRD {name!r}")

    @property
    def dirs(self) -> tuple[Path, ...]:
        return tuple(self.folder(component) for component in self.components)

    @property
    def search_path(self) -> str:
        """The folders as a PATH prefix (kubectl, helm, ...)."""
        return os.pathsep.join(str(folder) for folder in self.dirs)

    @property
    def key(self) -> str:
        return "+".join(component.key for component in self.components)


def legacy_stack_key() -> str:
    """The single folder of every binary that earlier checkouts built (all versions in one
    name): its binaries are linked into the per-component folders instead of rebuilt."""
    return (
        f"k8s-{KUBERNETES}_etcd-{ETCD}_kwok-{KWOK}_helm-{HELM}"
        f"_trainingop-{TRAINING_OPERATOR}"
    )


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "speechtune" / "bin"


def binaries(components: tuple[Component, ...] = BASE_COMPONENTS) -> Binaries:
    return Binaries(root=cache_root(), components=components)
