"""Pinned versions of every control-plane binary, and where their builds are cached."""

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

TRAINING_OPERATOR_MODULE = "github.com/kubeflow/training-operator"


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Paths of the binaries in one cache folder."""

    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name


# Every binary the control plane needs; the build groups them by Go module.
ALL_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
    "training-operator",
)


def stack_key() -> str:
    """One folder name per combination of pinned versions: bumping a pin builds afresh
    (and Go's build cache keeps that cheap), an old folder is never reused by mistake."""
    return (
        f"k8s-{KUBERNETES}_etcd-{ETCD}_kwok-{KWOK}_helm-{HELM}"
        f"_trainingop-{TRAINING_OPERATOR}"
    )


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "speechtune" / "bin"


def binaries() -> Binaries:
    return Binaries(dir=cache_root() / stack_key())
