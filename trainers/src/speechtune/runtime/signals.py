"""SIGTERM (pod preemption, `kubectl delete`) and SIGINT (Ctrl-C) set the run's stop event;
the engine saves a checkpoint at the next step boundary and returns, and the run exits
128 + the signal's number (143, 130) with metrics.json saying `stopped`. A second Ctrl-C
while the checkpoint is being written interrupts for real (KeyboardInterrupt)."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from types import FrameType
from typing import Iterator

STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclasses.dataclass
class Received:
    """The first stopping signal that arrived (None: none yet)."""

    signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "SIGTERM"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[Received]:
    """Installs the handlers for the duration of the block (main thread only)."""
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt  # asked twice: stop now, without the checkpoint
        if received.signum is None:
            received.signum = signum
        stop.set()

    previous = {signum: signal.signal(signum, handle) for signum in STOPPING_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def stop_on_sigterm(stop: threading.Event) -> Iterator[threading.Event]:
    """The older name: SIGTERM and SIGINT both stop (kept for callers outside the runtime)."""
    with stop_on_signals(stop):
        yield stop
