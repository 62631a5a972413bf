"""Bring the local control plane up and down; the state lives in `<repo>/.cluster/`.

Start order matters: etcd, then kube-apiserver (everything else talks to it), then the
controllers, the fake nodes, the PyTorchJob CRD and the training-operator. `state.json` is
written as each process starts, so `down` can clean up even after a failed `up`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from localcluster import build, pki, processes, versions

REPO = Path(__file__).resolve().parents[3]
MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"
# In cluster, the training-operator's webhook certificate is a Secret volume. Its webhook
# server reads it from $TMPDIR/k8s-webhook-server/serving-certs (we point TMPDIR into
# .cluster/), while its cert rotator only checks that a file exists at this fixed path.
ROTATOR_CERT_CHECK = Path("/tmp/k8s-webhook-server/serving-certs/tls.crt")
# Start order; `down` stops in reverse.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "training-operator",
)
STARTUP_TIMEOUT_S = 300.0  # generous: two busy cores may be shared with training runs


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one cluster keeps its files."""

    root: Path  # <repo>/.cluster

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def users(self) -> Path:
        return self.root / "users"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def webhook_cert_dir(self) -> Path:
        return self.tmp / "k8s-webhook-server" / "serving-certs"

    def component_kubeconfig(self, identity: pki.ClientIdentity) -> Path:
        return self.pki / f"{identity.name}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def default_layout() -> Layout:
    """`<repo>/.cluster`, or $SPEECHTUNE_CLUSTER_DIR (a second, independent cluster)."""
    override = os.environ.get("SPEECHTUNE_CLUSTER_DIR")
    return Layout(root=Path(override).resolve() if override else REPO / ".cluster")


# ---------------------------------------------------------------- state


def read_state(layout: Layout) -> dict[str, Any]:
    try:
        return dict(json.loads(layout.state.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_state(layout: Layout, state: dict[str, Any]) -> None:
    tmp = layout.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, layout.state)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Serialise up/down/restart across processes (several pytest sessions may share it)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with (layout.root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------- command lines


def component_argv(name: str, bins: versions.Binaries, layout: Layout, ports: dict[str, int]) -> list[str]:
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
    raise ValueError(f"unknown component {name!r}")


def component_env(name: str, layout: Layout) -> dict[str, str] | None:
    if name != "training-operator":
        return None
    env = dict(os.environ)
    env["KUBECONFIG"] = str(layout.kubeconfig)
    env["MY_POD_NAMESPACE"] = "kubeflow"  # where its cert rotator looks for the webhook Secret
    env["TMPDIR"] = str(layout.tmp)  # its webhook server's certificate folder (see seed_webhook_cert)
    return env


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
)


def pick_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(ports) < len(PORT_NAMES):
        port = processes.free_port()
        if port not in ports.values():
            ports[PORT_NAMES[len(ports)]] = port
    return ports


# ---------------------------------------------------------------- kubectl


def kubectl(
    bins: versions.Binaries,
    kubeconfig: Path,
    *args: str,
    input: str | None = None,
    check: bool = True,
    timeout_s: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(bins.path("kubectl")), f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


# ---------------------------------------------------------------- health


def apiserver_ready(layout: Layout, ports: dict[str, int]) -> bool:
    tls = processes.client_tls(layout.pki / "ca.crt", layout.pki / "admin.crt", layout.pki / "admin.key")
    return processes.http_ok(f"https://127.0.0.1:{ports['kube-apiserver']}/readyz", context=tls)


def health_url(name: str, ports: dict[str, int]) -> str | None:
    return {
        "etcd": f"http://127.0.0.1:{ports['etcd']}/health",
        "kube-controller-manager": f"https://127.0.0.1:{ports['kube-controller-manager']}/healthz",
        "kube-scheduler": f"https://127.0.0.1:{ports['kube-scheduler']}/healthz",
        "kwok": f"http://127.0.0.1:{ports['kwok']}/healthz",
        "training-operator": f"http://127.0.0.1:{ports['training-operator-health']}/readyz",
    }.get(name)


def component_ready(name: str, layout: Layout, ports: dict[str, int]) -> bool:
    if name == "kube-apiserver":
        return apiserver_ready(layout, ports)
    url = health_url(name, ports)
    assert url is not None
    context = processes.self_signed_tls() if url.startswith("https") else None
    return processes.http_ok(url, context=context)


def is_healthy(layout: Layout) -> bool:
    """Every recorded process alive and the apiserver ready: safe to reuse as it is."""
    state = read_state(layout)
    components = state.get("components", {})
    if state.get("bin_dir") != str(versions.binaries().dir) or set(components) != set(COMPONENTS):
        return False
    if not all(processes.is_running(c["pid"], c["argv"][0]) for c in components.values()):
        return False
    return apiserver_ready(layout, state["ports"])


# ---------------------------------------------------------------- up


def say(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


def launch(name: str, bins: versions.Binaries, layout: Layout, state: dict[str, Any]) -> None:
    argv = component_argv(name, bins, layout, state["ports"])
    env = component_env(name, layout)
    pid = processes.start(argv, layout.log(name), env)
    state["components"][name] = {"pid": pid, "argv": argv, "log": str(layout.log(name))}
    write_state(layout, state)


def wait_ready(name: str, layout: Layout, state: dict[str, Any]) -> None:
    entry = state["components"][name]
    processes.wait_until(
        name,
        lambda: component_ready(name, layout, state["ports"]),
        timeout_s=STARTUP_TIMEOUT_S,
        alive=lambda: processes.is_running(entry["pid"], entry["argv"][0]),
        log=layout.log(name),
    )


def write_kubeconfigs(layout: Layout, ports: dict[str, int]) -> None:
    server = f"https://127.0.0.1:{ports['kube-apiserver']}"
    pki.write_kubeconfig(layout.kubeconfig, layout.pki, pki.ADMIN, server)
    for identity in (pki.CONTROLLER_MANAGER, pki.SCHEDULER):
        pki.write_kubeconfig(layout.component_kubeconfig(identity), layout.pki, identity, server)


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
        timeout_s=STARTUP_TIMEOUT_S,
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
    secret = json.loads(
        kubectl(bins, layout.kubeconfig, "get", "secret", WEBHOOK_SECRET, "-n", "kubeflow", "-o", "json").stdout
    )
    if base64.b64decode(secret["data"]["tls.crt"]) != (layout.pki / "webhook.crt").read_bytes():
        raise RuntimeError(
            "the training-operator's cert rotator replaced our webhook certificate "
            f"(see {layout.log('training-operator')}); the apiserver could not call its webhook"
        )
    kubectl(bins, layout.kubeconfig, "apply", "-f", "-", input=json.dumps(webhook_configuration(layout, port)))


def wait_nodes_ready(bins: versions.Binaries, layout: Layout) -> None:
    kubectl(
        bins, layout.kubeconfig, "wait", "--for=condition=Ready", "--timeout=180s",
        "node", "kwok-gpu-0", "kwok-gpu-1", timeout_s=200,
    )


def default_service_account_exists(bins: versions.Binaries, layout: Layout) -> bool:
    # Pods are refused until their namespace's `default` ServiceAccount exists.
    return kubectl(bins, layout.kubeconfig, "get", "serviceaccount", "default", check=False).returncode == 0


def start_all(bins: versions.Binaries, layout: Layout, started_by: str) -> dict[str, Any]:
    state: dict[str, Any] = {
        "started_by": started_by,
        "bin_dir": str(bins.dir),
        "ports": pick_ports(),
        "components": {},
    }
    for folder in (layout.pki, layout.logs, layout.users):
        folder.mkdir(parents=True, exist_ok=True)
    for old_log in layout.logs.glob("*.log"):
        old_log.unlink()
    write_state(layout, state)
    pki.make_all(layout.pki)
    write_kubeconfigs(layout, state["ports"])

    launch("etcd", bins, layout, state)
    wait_ready("etcd", layout, state)
    launch("kube-apiserver", bins, layout, state)
    wait_ready("kube-apiserver", layout, state)
    say("kube-apiserver ready")
    launch("kube-controller-manager", bins, layout, state)
    launch("kube-scheduler", bins, layout, state)
    kubectl(bins, layout.kubeconfig, "create", "-f", str(MANIFESTS / "gpu-nodes.yaml"))
    launch("kwok", bins, layout, state)
    kubectl(bins, layout.kubeconfig, "create", "namespace", "kubeflow")
    seed_webhook_cert(bins, layout)
    install_crds(bins, layout)
    launch("training-operator", bins, layout, state)
    for name in ("kube-controller-manager", "kube-scheduler", "kwok", "training-operator"):
        wait_ready(name, layout, state)
    register_webhook(bins, layout, state["ports"]["training-operator-webhook"])
    wait_nodes_ready(bins, layout)
    processes.wait_until(
        "the default ServiceAccount", lambda: default_service_account_exists(bins, layout),
        timeout_s=STARTUP_TIMEOUT_S,
    )
    return state


def ensure_up(layout: Layout, *, started_by: str, user_pid: int | None = None) -> bool:
    """Bring the cluster up unless a healthy one is running. True if this call started it.
    `user_pid` registers a session that uses the cluster (see `release`)."""
    bins = build.ensure_binaries()
    with locked(layout):
        started = ensure_up_locked(bins, layout, started_by)
        if user_pid is not None:
            register_user(layout, user_pid)
        return started


def ensure_up_locked(bins: versions.Binaries, layout: Layout, started_by: str) -> bool:
    if is_healthy(layout):
        return False
    stop_all(layout)  # leftovers of a crashed or half-started cluster
    began = time.monotonic()
    try:
        start_all(bins, layout, started_by)
    except BaseException:
        say(f"start failed; logs in {layout.logs}")
        stop_all(layout)
        raise
    say(f"up in {time.monotonic() - began:.1f}s; KUBECONFIG={layout.kubeconfig}")
    return True


# ---------------------------------------------------------------- down


def stop_all(layout: Layout, *, keep_logs: bool = True) -> None:
    """Stop every recorded process and forget the cluster (etcd data, certificates)."""
    state = read_state(layout)
    components = state.get("components", {})
    for name in reversed(COMPONENTS):
        entry = components.get(name)
        if entry:
            processes.stop(entry["pid"], entry["argv"][0])
    for path in (layout.etcd_data, layout.pki, layout.users, layout.tmp):
        shutil.rmtree(path, ignore_errors=True)
    for path in (layout.kubeconfig, layout.state):
        path.unlink(missing_ok=True)
    if not keep_logs:
        shutil.rmtree(layout.logs, ignore_errors=True)


def down(layout: Layout) -> None:
    with locked(layout):
        stop_all(layout)


# ---------------------------------------------------------------- sharing between sessions


def register_user(layout: Layout, pid: int) -> None:
    layout.users.mkdir(parents=True, exist_ok=True)
    (layout.users / str(pid)).touch()


def release(layout: Layout, pid: int) -> bool:
    """Forget user `pid`; stop the cluster if a pytest session started it and no other live
    session still uses it (so one engineer's session never pulls the cluster from under
    another's). True if it was stopped."""
    with locked(layout):
        (layout.users / str(pid)).unlink(missing_ok=True)
        live = [p for p in layout.users.glob("*") if p.name.isdigit() and Path(f"/proc/{p.name}").exists()]
        if live or read_state(layout).get("started_by") != "pytest":
            return False
        stop_all(layout)
        return True


# ---------------------------------------------------------------- restart


def restart_apiserver(layout: Layout) -> None:
    """Stop kube-apiserver and start it again on the same port; return once it is ready."""
    with locked(layout):
        state = read_state(layout)
        entry = state["components"]["kube-apiserver"]
        processes.stop(entry["pid"], entry["argv"][0])
        pid = processes.start(entry["argv"], layout.log("kube-apiserver"))
        entry["pid"] = pid
        write_state(layout, state)
        processes.wait_until(
            "kube-apiserver (restarted)",
            lambda: apiserver_ready(layout, state["ports"]),
            timeout_s=STARTUP_TIMEOUT_S,
            alive=lambda: processes.is_running(pid, entry["argv"][0]),
            log=layout.log("kube-apiserver"),
        )


def path_with_bins(bins: versions.Binaries) -> str:
    return f"{bins.dir}{os.pathsep}{os.environ.get('PATH', '')}"


def kubectl_env(layout: Layout, bins: versions.Binaries) -> dict[str, str]:
    env = dict(os.environ)
    env["KUBECONFIG"] = str(layout.kubeconfig)
    env["PATH"] = path_with_bins(bins)
    return env


def describe(layout: Layout) -> Sequence[str]:
    state = read_state(layout)
    return [
        f"{name}: pid {entry['pid']}, log {entry['log']}"
        for name, entry in state.get("components", {}).items()
    ]
