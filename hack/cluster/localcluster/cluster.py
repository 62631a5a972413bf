"""Bring the local control plane up and down; the state lives in `<repo>/.cluster/`.

Start order matters: etcd, then kube-apiserver (everything else talks to it), then the
controllers, the fake nodes, the PyTorchJob CRD and the training-operator. The trainjob
backend's JobSet and Kubeflow Trainer v2 start only when asked for (`up --backend trainjob`,
or a test of that backend), next to the rest. `state.json` is written as each process
starts, so `down` can clean up even after a failed `up`.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from localcluster import build, commandlines, kueue, pki, processes, trainer_v2, training_operator, versions
from localcluster.kube import kubectl
from localcluster.layout import Layout, default_layout, locked, read_state, write_state

__all__ = ["Layout", "default_layout", "ensure_up", "down", "release", "restart_apiserver"]

# Start order; `down` stops in reverse.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "training-operator",
)
# The training-operator always runs; trainjob adds JobSet and Trainer v2, kueue adds Kueue.
BACKENDS = ("pytorchjob", "trainjob", "kueue")
TRAINJOB_COMPONENTS = trainer_v2.COMPONENTS
KUEUE_COMPONENTS = ("kueue",)
STARTUP_TIMEOUT_S = 300.0  # generous: two busy cores may be shared with training runs


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
        "jobset": f"http://127.0.0.1:{ports.get('jobset-health')}/readyz",
        "trainer": f"http://127.0.0.1:{ports.get('trainer-health')}/readyz",
        "kueue": f"http://127.0.0.1:{ports.get('kueue-health')}/readyz",
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
    if state.get("binaries") != versions.binaries().key or not set(COMPONENTS) <= set(components):
        return False
    if not all(processes.is_running(c["pid"], c["argv"][0]) for c in components.values()):
        return False
    return apiserver_ready(layout, state["ports"])


def trainjob_running(layout: Layout) -> bool:
    """JobSet and Trainer v2 started (by this build of them) and alive."""
    state = read_state(layout)
    components = state.get("components", {})
    return (state.get("trainjob_binaries") == versions.binaries(versions.TRAINJOB_COMPONENTS).key
            and all(name in components and processes.is_running(components[name]["pid"], components[name]["argv"][0])
                    for name in TRAINJOB_COMPONENTS))


def kueue_running(layout: Layout) -> bool:
    """Kueue started (by this build of it, with the TrainJob integration if Trainer v2 ran
    then) and alive."""
    state = read_state(layout)
    entry = state.get("components", {}).get("kueue")
    return (state.get("kueue_binaries") == versions.binaries(versions.KUEUE_COMPONENTS).key
            and state.get("kueue_trainjob") == trainjob_running(layout)
            and entry is not None and processes.is_running(entry["pid"], entry["argv"][0]))


# ---------------------------------------------------------------- up


def say(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


def launch(name: str, bins: versions.Binaries, layout: Layout, state: dict[str, Any]) -> None:
    argv = commandlines.argv(name, bins, layout, state["ports"])
    env = commandlines.env(name, layout)
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
        pid=entry["pid"],
    )


def write_kubeconfigs(layout: Layout, ports: dict[str, int]) -> None:
    server = f"https://127.0.0.1:{ports['kube-apiserver']}"
    pki.write_kubeconfig(layout.kubeconfig, layout.pki, pki.ADMIN, server)
    for identity in (pki.CONTROLLER_MANAGER, pki.SCHEDULER):
        pki.write_kubeconfig(layout.component_kubeconfig(identity), layout.pki, identity, server)


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
        "binaries": bins.key,
        "ports": commandlines.pick_ports(),
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
    kubectl(bins, layout.kubeconfig, "create", "-f", str(commandlines.MANIFESTS / "gpu-nodes.yaml"))
    launch("kwok", bins, layout, state)
    kubectl(bins, layout.kubeconfig, "create", "namespace", "kubeflow")
    training_operator.seed_webhook_cert(bins, layout)
    training_operator.install_crds(bins, layout)
    training_operator.register_webhook(bins, layout, state["ports"]["training-operator-webhook"])
    launch("training-operator", bins, layout, state)
    for name in ("kube-controller-manager", "kube-scheduler", "kwok", "training-operator"):
        wait_ready(name, layout, state)
    training_operator.check_webhook_cert_kept(bins, layout)
    wait_nodes_ready(bins, layout)
    processes.wait_until(
        "the default ServiceAccount", lambda: default_service_account_exists(bins, layout),
        timeout_s=STARTUP_TIMEOUT_S,
    )
    return state


def start_trainjob(layout: Layout) -> None:
    """Start JobSet and Kubeflow Trainer v2 next to a running cluster."""
    bins = versions.binaries(versions.BASE_COMPONENTS + versions.TRAINJOB_COMPONENTS)
    state = read_state(layout)
    for name in TRAINJOB_COMPONENTS:  # a dead one from an earlier start
        entry = state["components"].pop(name, None)
        if entry:
            processes.stop(entry["pid"], entry["argv"][0])
    state["ports"] = commandlines.pick_ports(state["ports"])
    state["trainjob_binaries"] = versions.binaries(versions.TRAINJOB_COMPONENTS).key
    write_state(layout, state)
    trainer_v2.write_configs(layout, state["ports"])
    trainer_v2.install_crds(bins, layout)
    trainer_v2.register_webhooks(bins, layout, state["ports"])
    for name in TRAINJOB_COMPONENTS:
        launch(name, bins, layout, state)
        wait_ready(name, layout, state)
    say("JobSet and Kubeflow Trainer v2 ready")


def start_kueue(layout: Layout) -> None:
    """Start Kueue next to a running cluster (its TrainJob integration too when Trainer v2 runs)."""
    bins = versions.binaries(versions.BASE_COMPONENTS + versions.KUEUE_COMPONENTS)
    state = read_state(layout)
    entry = state["components"].pop("kueue", None)  # a dead one, or one without TrainJobs
    if entry:
        processes.stop(entry["pid"], entry["argv"][0])
    trainjob = trainjob_running(layout)
    state["ports"] = commandlines.pick_ports(state["ports"])
    state["kueue_binaries"] = versions.binaries(versions.KUEUE_COMPONENTS).key
    state["kueue_trainjob"] = trainjob
    write_state(layout, state)
    kueue.prepare(bins, layout, state["ports"], trainjob=trainjob)
    launch("kueue", bins, layout, state)
    wait_ready("kueue", layout, state)
    say("Kueue ready")


def ensure_up(layout: Layout, *, started_by: str, user_pid: int | None = None,
              backends: Sequence[str] = ("pytorchjob",)) -> bool:
    """Bring the cluster up unless a healthy one is running, with the controllers of
    `backends`. True if this call started it. `user_pid` registers a session that uses the
    cluster (see `release`)."""
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown backend(s) {sorted(unknown)} (known: {', '.join(BACKENDS)})")
    trainjob, with_kueue = "trainjob" in backends, "kueue" in backends
    components = (versions.BASE_COMPONENTS + (versions.TRAINJOB_COMPONENTS if trainjob else ())
                  + (versions.KUEUE_COMPONENTS if with_kueue else ()))
    build.ensure_binaries(components=components)
    with locked(layout):
        started = ensure_up_locked(versions.binaries(), layout, started_by)
        if trainjob and not trainjob_running(layout):
            start_trainjob(layout)
        if with_kueue and not kueue_running(layout):
            start_kueue(layout)
        if user_pid is not None:
            register_user(layout, user_pid)
        return started


def ensure_up_locked(bins: versions.Binaries, layout: Layout, started_by: str) -> bool:
    if is_healthy(layout):
        return False
    stop_all(layout)  # leftovers of a crashed or half-started cluster
    began = time.monotonic()
    for attempt in (1, 2):
        try:
            start_all(bins, layout, started_by)
            break
        except processes.NotReady as error:
            # A component that dies while starting on a loaded 2-core CI machine (a port
            # taken between picking and binding it, say) gets one fresh try on new ports.
            say(f"start failed ({error}); logs in {layout.logs}")
            stop_all(layout)
            if attempt == 2:
                raise
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
    for name in reversed(COMPONENTS + TRAINJOB_COMPONENTS + KUEUE_COMPONENTS):
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
    return f"{bins.search_path}{os.pathsep}{os.environ.get('PATH', '')}"


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
