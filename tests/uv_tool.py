"""The uv binary `make setup` installed (hack/requirements-uv.txt pins it; hack/setup.sh puts it
in the cache folder keyed by its version), for tests that replay what setup and the images do."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def uv_binary() -> str:
    version = re.search(r"^uv==([\d.]+)", (ROOT / "hack" / "requirements-uv.txt").read_text(), re.M)
    assert version, "hack/requirements-uv.txt pins no uv version"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "speechtune" / f"uv-{version.group(1)}" / "bin" / "uv"
    if not path.is_file():
        pytest.skip(f"{path} missing: run make setup")
    return str(path)
