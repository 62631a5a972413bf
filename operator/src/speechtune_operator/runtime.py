"""Process-level tuning of the operator's memory, applied once in `main` before kopf runs."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from typing import Any

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
    in the resident set. Must run before any thread starts (arenas already made stay).
    False where the C library is not glibc.
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

