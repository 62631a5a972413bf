"""kubectl, run against one cluster with our pinned binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

from localcluster import versions


def kubectl(
    bins: versions.Binaries,
    kubeconfig: Path,
    *args: str,
    input: str | None = None,
    check: bool = True,
    timeout_s: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(bins.path("kubectl")), f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result
