"""The Kubeflow training-operator's cluster-side setup: its CRD and its webhook.

Out of cluster, its webhook certificate cannot be a mounted Secret: we seed the Secret that
its cert rotator manages with a certificate valid for 127.0.0.1 too, put the files where its
webhook server reads them, and register the webhook at its loopback port. PyTorchJobs are
then validated by the training-operator's own code, as in a real cluster.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

from localcluster import build, processes, versions
from localcluster.kube import kubectl
from localcluster.layout import Layout

# Its webhook server reads $TMPDIR/k8s-webhook-server/serving-certs (commandlines points
# TMPDIR into the cluster's folder); its cert rotator only checks that this file exists.
ROTATOR_CERT_CHECK = Path("/tmp/k8s-webhook-server/serving-certs/tls.crt")
CRD_TIMEOUT_S = 300.0


def install_crds(bins: versions.Binaries, layout: Layout) -> None:
    crd = build.crd_path(bins, "kubeflow.org_pytorchjobs.yaml")
    # Server-side apply: the CRD is too large for kubectl's last-applied annotation.
    kubectl(bins, layout.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
    # Not `kubectl wait`: it errors out while the new CRD has no status.conditions yet.
    processes.wait_until(
        "the PyTorchJob CRD to be established",
        lambda: kubectl(
            bins, layout.kubeconfig, "get", "crd", "pytorchjobs.kubeflow.org",
            "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}", check=False,
        ).stdout == "True",
        timeout_s=CRD_TIMEOUT_S,
    )


WEBHOOK_SECRET = "training-operator-webhook-cert"
WEBHOOK_CONFIGURATION = "validator.training-operator.kubeflow.org"  # the name it rotates


def seed_webhook_cert(bins: versions.Binaries, layout: Layout) -> None:
    """Give the training-operator's cert rotator our webhook certificate (it keeps a valid
    one) and put it where the webhook server reads it (a Secret volume in cluster)."""
    p = layout.pki
    kubectl(
        bins, layout.kubeconfig, "create", "secret", "generic", WEBHOOK_SECRET, "-n", "kubeflow",
        f"--from-file=ca.crt={p / 'webhook-ca.crt'}", f"--from-file=ca.key={p / 'webhook-ca.key'}",
        f"--from-file=tls.crt={p / 'webhook.crt'}", f"--from-file=tls.key={p / 'webhook.key'}",
    )
    layout.webhook_cert_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(p / "webhook.crt", layout.webhook_cert_dir / "tls.crt")
    shutil.copyfile(p / "webhook.key", layout.webhook_cert_dir / "tls.key")
    if not ROTATOR_CERT_CHECK.exists():  # shared by every cluster on this machine; never removed
        ROTATOR_CERT_CHECK.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p / "webhook.crt", ROTATOR_CERT_CHECK)


def webhook_configuration(layout: Layout, port: int) -> dict[str, Any]:
    """The training-operator's own PyTorchJob validation, called at its loopback port."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIGURATION},
        "webhooks": [
            {
                "name": "validator.pytorchjob.training-operator.kubeflow.org",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/validate-kubeflow-org-v1-pytorchjob",
                    "caBundle": base64.b64encode((layout.pki / "webhook-ca.crt").read_bytes()).decode(),
                },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "timeoutSeconds": 10,
                "rules": [
                    {
                        "apiGroups": ["kubeflow.org"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["pytorchjobs"],
                    }
                ],
            }
        ],
    }


def register_webhook(bins: versions.Binaries, layout: Layout, port: int) -> None:
    """Before the training-operator starts, so its cert rotator finds the configuration."""
    kubectl(bins, layout.kubeconfig, "apply", "-f", "-", input=json.dumps(webhook_configuration(layout, port)))


def check_webhook_cert_kept(bins: versions.Binaries, layout: Layout) -> None:
    """Once it runs: had the rotator found our certificate invalid, it would have made one
    without 127.0.0.1, and every PyTorchJob would be refused."""
    secret = json.loads(
        kubectl(bins, layout.kubeconfig, "get", "secret", WEBHOOK_SECRET, "-n", "kubeflow", "-o", "json").stdout
    )
    if base64.b64decode(secret["data"]["tls.crt"]) != (layout.pki / "webhook.crt").read_bytes():
        raise RuntimeError(
            "the training-operator's cert rotator replaced our webhook certificate "
            f"(see {layout.log('training-operator')}); the apiserver could not call its webhook"
        )
