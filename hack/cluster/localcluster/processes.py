"""Start, find and stop the control plane's processes; probe their health endpoints."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Sequence


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> int:
    """Start a detached process (own session, so a Ctrl-C in the caller's terminal does
    not take the cluster down with it) that logs to `log`; return its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    # Popen returns while the child may still be inside execve: /proc/PID/cmdline can then be
    # empty or the parent's for a moment, and is_running() would call a healthy child dead
    # (seen on 3 of 6 starts here). Wait until the new program is visible, or the child ended.
    deadline = time.monotonic() + 10
    while process.poll() is None and not is_running(process.pid, argv[0]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return process.pid


def is_running(pid: int, executable: str) -> bool:
    """True if `pid` is alive (not a zombie) and still runs `executable`: pids are reused,
    and a stale state file must never make us signal someone else's process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and bool(cmdline) and cmdline[0].decode(errors="replace") == executable


def reap(pid: int) -> None:
    """Collect the exit status if the process is our child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(pid: int, executable: str, *, grace_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; returns once the process is gone."""
    if not is_running(pid, executable):
        reap(pid)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        reap(pid)
        if not is_running(pid, executable):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    while is_running(pid, executable):
        reap(pid)
        time.sleep(0.05)


def http_ok(url: str, *, context: ssl.SSLContext | None = None, timeout_s: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def client_tls(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    return context


def self_signed_tls() -> ssl.SSLContext:
    """For the loopback /healthz of kube-controller-manager and kube-scheduler, which serve
    a certificate they generated themselves at start; nothing secret travels over it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class NotReady(RuntimeError):
    pass


def wait_until(
    what: str,
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
    log: Path | None = None,
    pid: int | None = None,
) -> None:
    """Poll `ready` until it holds; fail early, with the log's tail, if the process died."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        if ready():
            return
        if not alive():
            raise NotReady(f"{what} exited while starting{_exit_status(pid)}{_log_tail(log)}")
        if time.monotonic() > deadline:
            raise NotReady(f"{what} not ready after {timeout_s:.0f}s{_log_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def _exit_status(pid: int | None) -> str:
    """' (exit code N)' or ' (killed by SIGX)' for a child that ended; '' when unknown."""
    if pid is None:
        return ""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return " (not our child: exit status unknown)"
    if done == 0:
        return " (still running, but no longer the expected executable)"
    if os.WIFSIGNALED(status):
        return f" (killed by {signal.Signals(os.WTERMSIG(status)).name})"
    return f" (exit code {os.waitstatus_to_exitcode(status)})"


def _log_tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log}:\n" + "\n".join(tail)
