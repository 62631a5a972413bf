"""Waiting helpers shared by the tests that drive real processes (cluster, Prometheus)."""

from __future__ import annotations

import socket
import time
from typing import Any, Callable


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll until probe() returns something truthy and return it; generous timeouts, no
    timing assertions: a slow machine waits longer, it does not fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
