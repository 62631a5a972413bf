"""Kubeflow Trainer v2 and JobSet, out of cluster (the trainjob backend): their CRDs, their
configuration files and their webhooks.

Both are controller-runtime managers with a webhook server. Their own certificate
management needs an in-cluster Service; it is switched off, and their webhook servers read
the cluster's loopback webhook certificate (the one the training-operator uses, valid for
127.0.0.1) from the folder controller-runtime reads by default. Their webhook
configurations come from each module's manifests, pointed at 127.0.0.1:<port>, so
TrainJobs, ClusterTrainingRuntimes, JobSets and JobSet pods are defaulted and validated by
their own code, as in a real cluster.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import yaml

from localcluster import processes, versions
from localcluster.kube import kubectl
from localcluster.layout import Layout

COMPONENTS = ("jobset", "trainer")  # start order: Trainer watches JobSets
CRD_TIMEOUT_S = 300.0


def config_path(layout: Layout, name: str) -> Path:
    return layout.root / f"{name}-config.yaml"


def jobset_config(layout: Layout, ports: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "webhook": {"port": ports["jobset-webhook"], "host": "127.0.0.1", "certDir": str(layout.webhook_cert_dir)},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['jobset-health']}"},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
    }


def trainer_config(ports: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "config.trainer.kubeflow.org/v1alpha1",
        "kind": "Configuration",
        # Its webhook server reads $TMPDIR/k8s-webhook-server/serving-certs (commandlines).
        "webhook": {"port": ports["trainer-webhook"], "host": "127.0.0.1"},
        "metrics": {"bindAddress": f"127.0.0.1:{ports['trainer-metrics']}", "secureServing": False},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['trainer-health']}"},
        "leaderElection": {"leaderElect": False},
        "certManagement": {"enable": False},
    }


def write_configs(layout: Layout, ports: dict[str, int]) -> None:
    config_path(layout, "jobset").write_text(yaml.safe_dump(jobset_config(layout, ports)))
    config_path(layout, "trainer").write_text(yaml.safe_dump(trainer_config(ports)))


def install_crds(bins: versions.Binaries, layout: Layout) -> None:
    names = []
    for component in versions.TRAINJOB_COMPONENTS:
        for name in component.crd_names():
            # Server-side apply: these CRDs are too large for kubectl's last-applied annotation.
            kubectl(bins, layout.kubeconfig, "apply", "--server-side", "--force-conflicts",
                    "-f", str(bins.crd_path(name)))
            names.append(yaml.safe_load(bins.crd_path(name).read_text())["metadata"]["name"])

    def established() -> bool:
        out = kubectl(bins, layout.kubeconfig, "get", "crd", *names, "-o",
                      "jsonpath={.items[*].status.conditions[?(@.type=='Established')].status}", check=False).stdout
        return out.split() == ["True"] * len(names)

    processes.wait_until("the Trainer v2 and JobSet CRDs to be established", established, timeout_s=CRD_TIMEOUT_S)


def webhook_configurations(layout: Layout, manifests: str, port: int, prefix: str) -> list[dict[str, Any]]:
    """The module's webhook configurations (kubebuilder's manifests.yaml), each webhook
    called at 127.0.0.1:<port><its path> with our CA."""
    ca = base64.b64encode((layout.pki / "webhook-ca.crt").read_bytes()).decode()
    out = []
    for doc in yaml.safe_load_all(manifests):
        if not doc:
            continue
        config = copy.deepcopy(doc)
        config["metadata"] = {"name": f"{prefix}-{doc['metadata']['name']}"}
        for webhook in config["webhooks"]:
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca}
            webhook["timeoutSeconds"] = 10
            if any("pods" in rule.get("resources", ()) for rule in webhook["rules"]):
                # As JobSet's kustomize patches (config/components/webhook/patches): only
                # JobSet's pods, or every pod in the cluster would depend on its webhook.
                webhook["objectSelector"] = {"matchExpressions": [
                    {"key": "jobset.sigs.k8s.io/jobset-name", "operator": "Exists"}]}
        out.append(config)
    return out


def register_webhooks(bins: versions.Binaries, layout: Layout, ports: dict[str, int]) -> None:
    configs = []
    for component, port_name in ((versions.JOBSET_COMPONENT, "jobset-webhook"),
                                 (versions.TRAINER_COMPONENT, "trainer-webhook")):
        manifests = (bins.folder(component) / "webhooks.yaml").read_text()
        configs += webhook_configurations(layout, manifests, ports[port_name], component.name)
    kubectl(bins, layout.kubeconfig, "apply", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": configs}))
