"""The command line of every control-plane process: pure functions of binaries, layout
and ports, so they can be read (and tested) without starting anything."""

from __future__ import annotations

import os
from pathlib import Path

from localcluster import pki, processes, versions
from localcluster.layout import Layout

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"


def argv(name: str, bins: versions.Binaries, layout: Layout, ports: dict[str, int]) -> list[str]:
    p, k = layout.pki, layout
    if name == "etcd":
        client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
        return [
            str(bins.path("etcd")),
            "--name=local",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            # A throwaway test store: fsync on a shared, busy disk only slows the apiserver.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]
    if name == "kube-apiserver":
        return [
            str(bins.path("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['kube-apiserver']}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # New nodes get a not-ready taint that only the node lifecycle controller lifts,
            # and that controller is off (see kube-controller-manager below).
            "--disable-admission-plugins=TaintNodesByCondition",
            # The `kubernetes` Service's endpoint would be 127.0.0.1, which Endpoints refuse.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]
    if name == "kube-controller-manager":
        kubeconfig = k.component_kubeconfig(pki.CONTROLLER_MANAGER)
        return [
            str(bins.path("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-controller-manager']}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # kwok nodes have no kubelet; the node lifecycle controller would taint them and
            # evict their pods whenever kwok's heartbeat lags on a busy machine.
            "--controllers=*,-node-lifecycle-controller",
            "--profiling=false",
        ]
    if name == "kube-scheduler":
        kubeconfig = k.component_kubeconfig(pki.SCHEDULER)
        return [
            str(bins.path("kube-scheduler")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-scheduler']}",
            "--leader-elect=false",
            "--profiling=false",
        ]
    if name == "kwok":
        return [
            str(bins.path("kwok")),
            f"--kubeconfig={layout.kubeconfig}",
            f"--config={MANIFESTS / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--cidr={POD_CIDR}",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{ports['kwok']}",
        ]
    if name == "training-operator":
        return [
            str(bins.path("training-operator")),
            f"--kubeconfig={layout.kubeconfig}",
            f"--metrics-bind-address=127.0.0.1:{ports['training-operator-metrics']}",
            f"--health-probe-bind-address=127.0.0.1:{ports['training-operator-health']}",
            # Its webhook server binds all interfaces (only the port is a flag); the
            # apiserver calls it at 127.0.0.1 (see register_webhook).
            f"--webhook-server-port={ports['training-operator-webhook']}",
            "--enable-scheme=pytorchjob",
            "--gang-scheduler-name=",
            "--leader-elect=false",
            "--zap-devel=false",
            "--zap-log-level=info",
        ]
    if name == "jobset":
        return [
            str(bins.path("jobset")),
            f"--kubeconfig={layout.kubeconfig}",
            # Webhook (127.0.0.1), health and no leader election: in the config file.
            f"--config={layout.root / 'jobset-config.yaml'}",
            "--metrics-bind-address=0",  # its metrics server would want in-cluster authn
            "--zap-log-level=info",
        ]
    if name == "trainer":
        return [
            str(bins.path("trainer-controller-manager")),
            f"--kubeconfig={layout.kubeconfig}",
            # Webhook (127.0.0.1), metrics, health and no leader election: in the config file.
            f"--config={layout.root / 'trainer-config.yaml'}",
            "--zap-log-level=info",
        ]
    if name == "kueue":
        return [
            str(bins.path("kueue")),
            f"--kubeconfig={layout.kubeconfig}",
            # Webhook (127.0.0.1), metrics, health, integrations: in the config file.
            f"--config={layout.root / 'kueue-config.yaml'}",
            "--zap-log-level=info",
        ]
    raise ValueError(f"unknown component {name!r}")


def env(name: str, layout: Layout) -> dict[str, str] | None:
    if name not in ("training-operator", "trainer"):
        return None
    variables = dict(os.environ)
    variables["KUBECONFIG"] = str(layout.kubeconfig)
    if name == "training-operator":
        variables["MY_POD_NAMESPACE"] = "kubeflow"  # where its cert rotator looks for the webhook Secret
    # Their webhook servers' certificate folder, $TMPDIR/k8s-webhook-server/serving-certs
    # (see training_operator.seed_webhook_cert).
    variables["TMPDIR"] = str(layout.tmp)
    return variables


PORT_NAMES = (
    "etcd",
    "etcd-peer",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "training-operator-metrics",
    "training-operator-health",
    "training-operator-webhook",
    "jobset-webhook",
    "jobset-health",
    "trainer-webhook",
    "trainer-health",
    "trainer-metrics",
    "kueue-webhook",
    "kueue-health",
    "kueue-metrics",
)


def pick_ports(taken: dict[str, int] | None = None) -> dict[str, int]:
    """A free loopback port for every name; `taken` (a running cluster's) are kept."""
    ports: dict[str, int] = dict(taken or {})
    for name in PORT_NAMES:
        while name not in ports:
            port = processes.free_port()
            if port not in ports.values():
                ports[name] = port
    return ports
