"""`speechtune status|watch` read a FinetuneJob from the real local control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]


def speechtune(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "speechtune.cli", *args, "--kubeconfig", str(cluster.kubeconfig)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **cluster.env})


def test_status_and_watch_show_the_jobs_status(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds" / "finetunejob.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/finetunejobs.speechtune.dev", "--timeout=120s")
    namespace = f"st-status-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    try:
        job = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
        job["spec"].setdefault("runPolicy", {})["suspend"] = True  # nothing to schedule if an operator runs
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))
        status = {"status": {"phase": "Succeeded", "progress": {"step": 1000, "maxSteps": 1000},
                             "metrics": {"wer": 0.2, "trainLoss": 0.19}, "message": "done"}}
        cluster.kubectl("patch", "finetunejob", "demo", "-n", namespace, "--subresource=status", "--type=merge",
                        "-p", json.dumps(status))

        shown = speechtune(cluster, "status", "demo", "-n", namespace)
        assert shown.returncode == 0, shown.stderr
        line = shown.stdout.strip()
        assert line.startswith("demo  speechbrain-ctc  ")
        assert "step 1000/1000" in line and "wer 0.2000" in line

        watched = speechtune(cluster, "watch", "demo", "-n", namespace)
        assert watched.returncode == 0, watched.stderr  # Succeeded ends the watch with 0
        missing = speechtune(cluster, "status", "nosuchjob", "-n", namespace)
        assert missing.returncode != 0 and "finetunejob" in missing.stderr and "not found" in missing.stderr
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
