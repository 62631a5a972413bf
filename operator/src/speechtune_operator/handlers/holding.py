"""Children first, status after: status writes and Events wait while creations are in flight.

Under a burst the apiserver is the bottleneck, and every status patch or Event written while
children are still to be made delays them. So the status mirror of a child holds its writes
while any FinetuneJob the operator has seen still waits for its child, up to `hold` seconds
(a job whose creation keeps failing must not freeze everyone's status).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Hashable


class CreationGate:
    """The FinetuneJobs seen without a child yet; open when there are none."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self._lock = threading.Lock()
        self._pending: set[Hashable] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open: asyncio.Event | None = None

    def begin(self, key: Hashable) -> None:
        """A job that waits for its child (from the event loop's thread)."""
        with self._lock:
            self._pending.add(key)
        self._refresh()

    def end(self, key: Hashable) -> None:
        """Its child exists, or it will get none (from any thread)."""
        with self._lock:
            if key not in self._pending:
                return
            self._pending.discard(key)
            empty = not self._pending
        if empty and self._loop is not None:
            self._loop.call_soon_threadsafe(self._refresh)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    async def wait(self) -> None:
        """Until no creation is in flight, or `hold` seconds."""
        opened = self._event()
        if opened.is_set():
            return
        try:
            await asyncio.wait_for(opened.wait(), timeout=self.hold)
        except TimeoutError:
            pass

    def _event(self) -> asyncio.Event:
        if self._open is None:
            self._loop = asyncio.get_running_loop()
            self._open = asyncio.Event()
            self._refresh()
        return self._open

    def _refresh(self) -> None:
        if self._open is None:
            return
        with self._lock:
            empty = not self._pending
        if empty:
            self._open.set()
        else:
            self._open.clear()
