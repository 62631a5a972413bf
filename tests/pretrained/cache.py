"""Pretrained fixtures that take CPU minutes to train are built once per machine.

A fixture lives under ~/.cache/speechtune/fixtures (or $SPEECHTUNE_FIXTURE_CACHE) in a
folder named by a hash of its builder's code, the versions that shape its weights and the
espeak-ng that spoke its data: any change rebuilds it, nothing else does. A file lock keeps
two test sessions from building it at once; it is built aside and renamed, so a killed
build is never mistaken for a finished one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator, Sequence

VERSIONED = ("torch", "transformers", "numpy")


def root() -> Path:
    return Path(os.environ.get("SPEECHTUNE_FIXTURE_CACHE", Path.home() / ".cache" / "speechtune" / "fixtures"))


def key(sources: Sequence[Path], extra: str = "") -> str:
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.read_bytes())
    for package in VERSIONED:
        digest.update(f"{package}=={importlib.metadata.version(package)}".encode())
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=False).stdout
    digest.update(espeak.encode() + extra.encode())
    return digest.hexdigest()[:16]


def cached(name: str, *, sources: Sequence[Path], extra: str, build: Callable[[Path], object]) -> Path:
    """The folder `build` fills, built now only when no finished one has this key."""
    base = root()
    base.mkdir(parents=True, exist_ok=True)
    target = base / f"{name}-{key(sources, extra)}"
    with _locked(base / f"{name}.lock"):
        if not target.is_dir():
            partial = base / f"{target.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            build(partial)
            os.replace(partial, target)
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
