"""uv.lock is the one source of every Python install: fresh against the pyproject files, the
torch build explicit, and the framework stacks it installs actually load.

`make setup` runs the same staleness check (hack/setup.sh) before `uv sync --frozen`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from uv_tool import uv_binary

ROOT = Path(__file__).resolve().parents[2]
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())
PACKAGES = {p["name"]: p for p in LOCK["package"]}


def test_the_lock_is_fresh_against_every_pyproject() -> None:
    # --offline: a fresh lock is confirmed from the lock alone; a stale one needs a resolution,
    # which fails here as it would in CI, where setup.sh says "run make lock".
    done = subprocess.run([uv_binary(), "lock", "--check", "--offline", "--python", sys.executable], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
    assert done.returncode == 0, f"uv.lock is stale: run `make lock`\n{done.stderr[-2000:]}"


def test_every_pin_in_the_pyprojects_is_exact_for_the_engine_stacks() -> None:
    """The engine frameworks are pinned exactly (==X.Y.Z): a new upstream release never
    changes what an engine image or a `make lock` resolves to without an edit here."""
    trainers = tomllib.loads((ROOT / "trainers" / "pyproject.toml").read_text())["project"]
    for extra, requirements in trainers["optional-dependencies"].items():
        for requirement in requirements:
            if requirement.startswith("speechtune["):
                continue
            assert re.fullmatch(r"[\w.\[\],-]+==[\d.]+", requirement), f"trainers extra {extra}: {requirement!r}"


def test_the_torch_build_is_explicit_and_torchaudio_matches_it() -> None:
    torch = PACKAGES["torch"]
    # PyPI's Linux torch 2.11 wheels are the CUDA 13.0 builds: NCCL and cuDNN come as wheels,
    # so the GPU images need no CUDA base image (pyproject.toml says so).
    assert torch["source"] == {"registry": "https://pypi.org/simple"}
    cuda_runtime = {d["name"] for d in torch["dependencies"]}
    assert {"nvidia-nccl-cu13", "nvidia-cudnn-cu13"} <= cuda_runtime, cuda_runtime
    assert all(w.get("hash", "").startswith("sha256:") for w in torch["wheels"])
    # torchaudio's native library is built against one torch release (2.11.1 with torch 2.11.0
    # fails with an undefined symbol): same release, exactly.
    assert PACKAGES["torchaudio"]["version"] == torch["version"]


def test_every_locked_artifact_has_a_hash() -> None:
    for package in LOCK["package"]:
        if "registry" not in package.get("source", {}):
            continue  # the workspace members themselves
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files, package["name"]
        assert all(f.get("hash", "").startswith("sha256:") for f in files), package["name"]


def test_setup_installs_the_lock_and_never_resolves() -> None:
    setup = (ROOT / "hack" / "setup.sh").read_text()
    assert re.search(r"uv\"? sync --frozen", setup, re.I)
    assert "pip install" not in setup.replace("--require-hashes --no-deps -r hack/requirements-uv.txt", "")
    assert "--require-hashes" in setup


def test_go_wrapper_modules_verify_their_checksums() -> None:
    """The control plane's Go builds read go.sum (committed) and may not edit go.mod."""
    for module in (ROOT / "hack" / "cluster" / "gomod").iterdir():
        assert (module / "go.sum").is_file(), f"{module}: no go.sum"
    build = (ROOT / "hack" / "cluster" / "localcluster" / "build.py").read_text()
    assert "-mod=readonly" in build
    assert "GONOSUMDB" not in build and "GONOSUMCHECK" not in build and "GOSUMDB" not in build


# Every stack loads in a fresh interpreter, as in an engine's pod: a native library that does not
# load with the locked torch (the torchaudio 2.11.1 case) fails here, not in a user's first run.
# One interpreter for all of them: torch is imported once (a NeMo import alone takes ~20 s).
STACKS = {
    "torch": "import torch; torch.ones(2) @ torch.ones(2)",
    "torchaudio": "import torchaudio, torchaudio._extension as e; assert e._IS_TORCHAUDIO_EXT_AVAILABLE; "
                  "import torch; torchaudio.functional.resample(torch.zeros(160), 16000, 8000)",
    "speechbrain": "import speechbrain, speechbrain.lobes.models.transformer.TransformerASR",
    "nemo": "import nemo.collections.asr as asr; asr.models.EncDecMultiTaskModel",
    "hf": "import transformers, peft; transformers.Wav2Vec2ForCTC; peft.LoraConfig",
    "lhotse+lightning": "import lhotse, lightning; lightning.Fabric",
}
PROBE = """
import sys, traceback
failed = []
for name, code in STACKS.items():
    try:
        exec(code, {})
    except BaseException:
        failed.append(name)
        print(f"--- {name} ---", file=sys.stderr)
        traceback.print_exc()
sys.exit(f"stacks that do not load: {', '.join(failed)}" if failed else 0)
"""


def test_every_engine_stack_imports_in_the_installed_environment() -> None:
    done = subprocess.run([sys.executable, "-c", f"STACKS = {STACKS!r}\n{PROBE}"], capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
