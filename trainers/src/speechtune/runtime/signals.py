"""SIGTERM (pod preemption, `kubectl delete`, Ctrl-C's polite cousin) sets the run's stop
event; the engine saves a checkpoint at the next step boundary and returns."""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Iterator


@contextlib.contextmanager
def stop_on_sigterm(stop: threading.Event) -> Iterator[threading.Event]:
    """Installs the handler for the duration of the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
