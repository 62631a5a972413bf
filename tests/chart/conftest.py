"""Fixtures of the chart tests: the helm binary, built with the local control plane's tools."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm from the control plane's binary cache (built from the Go module proxy when
    missing); PATH's helm only when the tests target an external cluster."""
    if os.environ.get("SPEECHTUNE_KUBECONFIG"):
        found = shutil.which("helm")
        if found is None:
            pytest.fail("SPEECHTUNE_KUBECONFIG is set but no helm is on PATH", pytrace=False)
        return Path(found)
    sys.path.insert(0, str(REPO / "hack" / "cluster"))
    from localcluster import build  # noqa: PLC0415  (hack/ is not a package on sys.path)

    try:
        return build.ensure_binaries().path("helm")
    except build.ToolchainMissing as error:
        # Never a skip: CI must say what is missing rather than pass without chart tests.
        pytest.fail(f"helm cannot be built: {error}", pytrace=False)
