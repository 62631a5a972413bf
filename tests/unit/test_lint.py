"""The architecture and typing rules of STYLE.md, checked by their tools on every `make test`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_import_layers_hold() -> None:
    # operator never imports the trainers or torch; handlers -> builders -> client; pure builders.
    done = subprocess.run([str(BIN / "lint-imports"), "--config", ".importlinter"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_mypy_strict_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "operator/src", "trainers/src/speechtune"], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
