"""Kueue, out of cluster (`up --backend kueue`, or a test that asks for it): its CRDs, its
configuration file, its webhooks on loopback.

Kueue's manager is a controller-runtime manager like Trainer v2's: its internal cert
management wants an in-cluster Service and is switched off; its webhook server reads the
cluster's loopback webhook certificate (valid for 127.0.0.1). Only the PyTorchJob
integration (and the TrainJob one when Trainer v2 runs) is enabled, and only the webhooks
of Kueue's own objects and of those integrations are registered: the others would put
every Job, Pod or Deployment of the cluster behind Kueue's webhook.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from localcluster import processes, trainer_v2, versions
from localcluster.kube import kubectl
from localcluster.layout import Layout

NAMESPACE = "kueue-system"
CRD_TIMEOUT_S = 300.0
PYTORCHJOB_FRAMEWORK = "kubeflow.org/pytorchjob"
TRAINJOB_FRAMEWORK = "trainer.kubeflow.org/trainjob"
# cmd/kueue reads its metrics server's certificate from this fixed path whenever internal
# cert management is off (no flag or setting moves it); the manager exits without it. Any
# certificate does: the metrics server listens on 127.0.0.1 and nothing here scrapes it.
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")
# The CRDs Kueue's kustomization serves through its conversion webhook (v1beta1 <-> v1beta2).
CONVERTED_CRDS = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")


def config_path(layout: Layout) -> Path:
    return layout.root / "kueue-config.yaml"


def config(layout: Layout, ports: dict[str, int], *, trainjob: bool) -> dict[str, Any]:
    frameworks = [PYTORCHJOB_FRAMEWORK] + ([TRAINJOB_FRAMEWORK] if trainjob else [])
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "webhook": {"port": ports["kueue-webhook"], "host": "127.0.0.1", "certDir": str(layout.webhook_cert_dir)},
        "metrics": {"bindAddress": f"127.0.0.1:{ports['kueue-metrics']}"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['kueue-health']}"},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        # Only jobs that name a LocalQueue (kueue.x-k8s.io/queue-name) are Kueue's.
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": frameworks},
        # The visibility API server would bind 0.0.0.0:8082 and wants an APIService.
        "featureGates": {"VisibilityOnDemand": False},
    }


def write_config(layout: Layout, ports: dict[str, int], *, trainjob: bool) -> None:
    config_path(layout).write_text(yaml.safe_dump(config(layout, ports, trainjob=trainjob)))


def seed_metrics_cert(layout: Layout) -> None:
    if (METRICS_CERT_DIR / "tls.crt").is_file() and (METRICS_CERT_DIR / "tls.key").is_file():
        return  # shared by every cluster on this machine; never removed
    try:
        METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("tls.crt", "tls.key"):
            shutil.copyfile(layout.webhook_cert_dir / name, METRICS_CERT_DIR / name)
    except OSError as error:
        raise RuntimeError(
            f"{METRICS_CERT_DIR}: {error.strerror}. Kueue reads its metrics certificate there; "
            f"create it once as root: install -D {layout.webhook_cert_dir}/tls.crt {METRICS_CERT_DIR}/tls.crt "
            f"&& install -D -m 600 {layout.webhook_cert_dir}/tls.key {METRICS_CERT_DIR}/tls.key") from error


def crd_with_conversion(crd: dict[str, Any], *, port: int, ca: str) -> dict[str, Any]:
    """Kueue's conversion webhook patch (config/components/crd/patches), called at loopback."""
    if crd["spec"]["names"]["plural"] in CONVERTED_CRDS:
        crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
            "clientConfig": {"url": f"https://127.0.0.1:{port}/convert", "caBundle": ca},
            "conversionReviewVersions": ["v1"]}}
    return crd


def install_crds(bins: versions.Binaries, layout: Layout, ports: dict[str, int]) -> None:
    ca = base64.b64encode((layout.pki / "webhook-ca.crt").read_bytes()).decode()
    crds = [crd_with_conversion(yaml.safe_load(bins.crd_path(name).read_text()), port=ports["kueue-webhook"], ca=ca)
            for name in versions.KUEUE_COMPONENT.crd_names()]
    # Server-side apply: these CRDs are too large for kubectl's last-applied annotation.
    kubectl(bins, layout.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": crds}))
    names = [crd["metadata"]["name"] for crd in crds]

    def established() -> bool:
        out = kubectl(bins, layout.kubeconfig, "get", "crd", *names, "-o",
                      "jsonpath={.items[*].status.conditions[?(@.type=='Established')].status}", check=False).stdout
        return out.split() == ["True"] * len(names)

    processes.wait_until("the Kueue CRDs to be established", established, timeout_s=CRD_TIMEOUT_S)


def wanted_webhook(path: str, *, trainjob: bool) -> bool:
    return "kueue-x-k8s-io" in path or "pytorchjob" in path or (trainjob and "trainjob" in path)


def register_webhooks(bins: versions.Binaries, layout: Layout, ports: dict[str, int], *, trainjob: bool) -> None:
    manifests = (bins.folder(versions.KUEUE_COMPONENT) / "webhooks.yaml").read_text()
    configs = trainer_v2.webhook_configurations(layout, manifests, ports["kueue-webhook"], "kueue")
    for item in configs:
        item["webhooks"] = [webhook for webhook in item["webhooks"]
                            if wanted_webhook(webhook["clientConfig"]["url"], trainjob=trainjob)]
    kubectl(bins, layout.kubeconfig, "apply", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": configs}))


def prepare(bins: versions.Binaries, layout: Layout, ports: dict[str, int], *, trainjob: bool) -> None:
    """Everything before the manager starts: namespace, certificate, config, CRDs, webhooks."""
    kubectl(bins, layout.kubeconfig, "create", "namespace", NAMESPACE, check=False)
    seed_metrics_cert(layout)
    write_config(layout, ports, trainjob=trainjob)
    install_crds(bins, layout, ports)
    register_webhooks(bins, layout, ports, trainjob=trainjob)
