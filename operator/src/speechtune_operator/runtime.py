"""Process-level tuning of the operator's memory, applied once in `main` before kopf runs."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time
from typing import Any, Callable

logger = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc <malloc.h>


def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas (the same as MALLOC_ARENA_MAX in the environment).

    glibc gives each thread that allocates concurrently its own arena, up to 8 per core;
    with a pool of handler threads each one keeps its own partly used heap, all counted
    in the resident set. Must run before any thread
    starts (arenas already made stay). False where the C library is not glibc.
    """
    mallopt = getattr(_libc(), "mallopt", None)  # musl and others have none
    if mallopt is None:
        return False
    ok = bool(mallopt(_M_ARENA_MAX, arenas))
    if not ok:
        logger.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)
    return ok


def freeze_startup_heap() -> None:
    """Move everything alive after start-up (imported modules, the kubernetes client's
    model classes, kopf's registry) out of the cyclic collector's reach: a full collection
    then walks only the objects made while reconciling, which keeps it cheap under a burst."""
    gc.collect()
    gc.freeze()


class HeapTrimmer:
    """Hands the heap that a burst of reconciliations freed back to the OS, once the burst
    is over (`quiet` seconds without activity): glibc keeps freed memory for reuse, so
    without this the resident set stays at the burst's peak for good."""

    def __init__(self, last_activity: Callable[[], float], *, quiet: float = 1.0) -> None:
        self._last_activity = last_activity
        self._quiet = quiet
        self._trimmed_after = 0.0
        self._malloc_trim = getattr(_libc(), "malloc_trim", None)

    @property
    def available(self) -> bool:
        return self._malloc_trim is not None

    def start(self) -> bool:
        """A daemon thread that checks once per `quiet`; False (and no thread) without glibc."""
        if not self.available:
            return False
        threading.Thread(target=self._run, name="heap-trimmer", daemon=True).start()
        return True

    def check(self, now: float) -> bool:
        """Trim if there was activity since the last trim and none for `quiet` seconds."""
        last = self._last_activity()
        if last <= self._trimmed_after or now - last < self._quiet or self._malloc_trim is None:
            return False
        self._trimmed_after = last
        self._malloc_trim(0)
        return True

    def _run(self) -> None:
        while True:
            time.sleep(self._quiet)
            self.check(time.monotonic())
