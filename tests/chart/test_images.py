"""The Dockerfiles under images/ follow the image policy, checked without a Docker engine.

Policy: every base image pinned by tag or digest (never `latest`), a numeric non-root USER,
the right ENTRYPOINT, the project's own package installed from the build context (the repo
root) with the engine's extra, and a per-Dockerfile .dockerignore that lets those sources in.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from uv_tool import uv_binary

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"

# image folder -> (entry point, source folder installed, pip extra or None)
EXPECTED = {
    "operator": ("speechtune-operator", "operator", None),
    "nemo": ("speechtune", "trainers", "nemo"),
    "speechbrain": ("speechtune", "trainers", "speechbrain"),
    "hf": ("speechtune", "trainers", "hf"),
}
# chart engine name -> image folder that builds its trainer image
ENGINE_IMAGES = {"nemo-canary": "nemo", "speechbrain-ctc": "speechbrain", "hf-ctc": "hf"}


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        keyword, _, args = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = []
    assert not pending, f"{path}: dangling line continuation at line {start}"
    return instructions


def resolve_args(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def base_images(instructions: list[Instruction]) -> list[tuple[str, int]]:
    """External base images (FROM of a previous stage's alias excluded), ARG defaults applied."""
    global_args: dict[str, str] = {}
    stages: set[str] = set()
    bases = []
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.args and not stages:
            name, _, default = ins.args.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        elif ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            image = resolve_args(words[0], global_args)
            if len(words) == 3 and words[1].lower() == "as":
                stages.add(words[2])
            if image not in stages:
                bases.append((image, ins.line))
    return bases


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last_from = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    return instructions[last_from:]


def is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return re.search(r"@sha256:[0-9a-f]{64}$", image) is not None
    name, _, tag = image.rpartition(":")
    # A colon inside the registry host (host:port/...) is not a tag.
    if not name or "/" in tag:
        return False
    return tag != "latest" and re.fullmatch(r"[\w][\w.-]{0,127}", tag) is not None


def dockerfiles() -> list[Path]:
    return sorted(IMAGES.glob("*/Dockerfile"))


def test_every_image_is_expected_and_present() -> None:
    assert {p.parent.name for p in dockerfiles()} == set(EXPECTED)


@pytest.mark.parametrize("image", sorted(EXPECTED))
def test_bases_are_pinned(image: str) -> None:
    path = IMAGES / image / "Dockerfile"
    bases = base_images(parse_dockerfile(path))
    assert bases, f"{path}: no FROM"
    for base, line in bases:
        assert "$" not in base, f"{path}:{line}: FROM {base} uses an ARG without a default"
        assert is_pinned(base), f"{path}:{line}: base image {base!r} must be pinned by tag or digest, never latest"


@pytest.mark.parametrize("image", sorted(EXPECTED))
def test_runs_as_numeric_non_root_user(image: str) -> None:
    path = IMAGES / image / "Dockerfile"
    users = [ins for ins in final_stage(parse_dockerfile(path)) if ins.keyword == "USER"]
    assert users, f"{path}: the final stage sets no USER (it would run as root)"
    user = users[-1].args.split(":")[0]
    # Numeric, so the kubelet can enforce runAsNonRoot without resolving names.
    assert user.isdigit() and int(user) != 0, f"{path}:{users[-1].line}: USER {users[-1].args} must be a non-zero uid"


@pytest.mark.parametrize("image", sorted(EXPECTED))
def test_entrypoint(image: str) -> None:
    path = IMAGES / image / "Dockerfile"
    entrypoints = [ins for ins in final_stage(parse_dockerfile(path)) if ins.keyword == "ENTRYPOINT"]
    assert entrypoints, f"{path}: no ENTRYPOINT"
    # Exec form, so signals (SIGTERM on pod deletion) reach the program, not a shell.
    assert json.loads(entrypoints[-1].args) == [EXPECTED[image][0]], f"{path}:{entrypoints[-1].line}"


def copies(instructions: list[Instruction]) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not from a stage)."""
    out = []
    for ins in instructions:
        if ins.keyword == "COPY" and not ins.args.startswith("--from"):
            words = ins.args.split()
            out.append((words[:-1], words[-1]))
    return out


def uv_sync(instructions: list[Instruction]) -> Instruction:
    (sync,) = [ins for ins in instructions if ins.keyword == "RUN" and "uv sync" in ins.args]
    return sync


@pytest.mark.parametrize("image", sorted(EXPECTED))
def test_installs_its_slice_of_the_lock(image: str) -> None:
    """The image installs its own package from uv.lock, frozen: the versions the tests ran."""
    path = IMAGES / image / "Dockerfile"
    _, source, extra = EXPECTED[image]
    instructions = parse_dockerfile(path)
    copied = {src.rstrip("/") for sources, _ in copies(instructions) for src in sources}
    for needed in ("pyproject.toml", "uv.lock", source, "crds"):
        assert needed in copied, f"{path}: does not COPY {needed} from the build context"
    sync = uv_sync(instructions)
    words = sync.args.split()
    for flag in ("--frozen", "--no-dev", "--no-editable"):
        assert flag in words, f"{path}:{sync.line}: `uv sync` without {flag}"
    package = tomllib.loads((ROOT / source / "pyproject.toml").read_text())["project"]["name"]
    assert words[words.index("--package") + 1] == package, f"{path}:{sync.line}"
    if extra:
        assert words[words.index("--extra") + 1] == extra, f"{path}:{sync.line}"
        extras = tomllib.loads((ROOT / "trainers" / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        assert extra in extras, f"{path}: trainers/pyproject.toml has no extra {extra!r}"
    # uv inside the image is the version make setup uses (hack/requirements-uv.txt).
    pinned = re.search(r"^uv==([\d.]+)", (ROOT / "hack" / "requirements-uv.txt").read_text(), re.M)
    assert pinned and f"ghcr.io/astral-sh/uv:{pinned.group(1)}" in [b for b, _ in base_images(instructions)]


def ignored(patterns: list[str], path: str) -> bool:
    """Docker's .dockerignore semantics, enough for our files: last matching pattern wins."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern == "**" or fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            result = not negate
    return result


@pytest.mark.parametrize("image", sorted(EXPECTED))
def test_dockerignore_lets_the_sources_in_and_keeps_the_venv_out(image: str) -> None:
    path = IMAGES / image / "Dockerfile.dockerignore"
    patterns = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for sources, _ in copies(parse_dockerfile(IMAGES / image / "Dockerfile")):
        for source in (src.rstrip("/") for src in sources):
            probe = {"crds": "crds/finetunejob.yaml", "operator": "operator/pyproject.toml",
                     "trainers": "trainers/pyproject.toml"}.get(source, source)
            assert not ignored(patterns, probe), f"{path}: excludes {source}, which the Dockerfile copies"
    for junk in (".venv/bin/python", ".git/HEAD", ".cluster/kubeconfig"):
        assert ignored(patterns, junk), f"{path}: sends {junk} to the build"


def test_chart_engine_images_are_the_ones_built_here() -> None:
    values = yaml.safe_load((ROOT / "charts" / "speechtune" / "values.yaml").read_text())
    assert set(values["engines"]) == set(ENGINE_IMAGES)
    for engine, folder in ENGINE_IMAGES.items():
        repository = values["engines"][engine]["image"].rsplit(":", 1)[0]
        assert repository.endswith(f"/speechtune-{folder}"), f"values.yaml engines.{engine}.image"
    assert values["operator"]["image"]["repository"].endswith("/speechtune-operator")


def test_make_images_says_clearly_that_it_needs_docker(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER": str(tmp_path / "no-docker")}
    done = subprocess.run([str(ROOT / "hack" / "build-images.sh")], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode != 0
    assert "Docker engine" in done.stderr


def install_like_the_image(image: str, tmp_path: Path) -> Path:
    """The image's install step without Docker: lay out what the Dockerfile COPYs, then run its
    `uv sync` offline (from the uv cache `make setup` filled) into a fresh environment."""
    instructions = parse_dockerfile(IMAGES / image / "Dockerfile")
    context = tmp_path / "context"
    for sources, dst in copies(instructions):
        for src in sources:
            target = context / dst.lstrip("/")
            target = target / Path(src).name if dst.endswith("/") and (ROOT / src).is_file() else target
            if (ROOT / src).is_dir():
                # Symlinks stay links, as COPY keeps them: the trainer's CRD link must resolve there.
                shutil.copytree(ROOT / src, target, symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / src, target)
    workdir = next(ins.args for ins in instructions if ins.keyword == "WORKDIR")
    env_dir = tmp_path / "env"
    args = uv_sync(instructions).args.split()[1:]  # after `uv`
    done = subprocess.run([uv_binary(), *args, "--offline", "--python", sys.executable],
                          cwd=context / workdir.lstrip("/"), capture_output=True, text=True, timeout=600,
                          check=False, env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(env_dir),
                                            "UV_PYTHON_DOWNLOADS": "never", "UV_LINK_MODE": "hardlink"})
    assert done.returncode == 0, done.stdout + done.stderr
    return env_dir


# One trainer image stands for the three: they copy the same sources and differ only in the
# extra, which test_installs_its_slice_of_the_lock checks.
@pytest.mark.parametrize("image", ["operator", "speechbrain"])
def test_the_image_install_step_gives_the_entry_point_and_locked_versions(image: str, tmp_path: Path) -> None:
    env_dir = install_like_the_image(image, tmp_path)
    assert (env_dir / "bin" / EXPECTED[image][0]).is_file()
    python = str(env_dir / "bin" / "python")
    probe = ("import importlib.metadata as m, json, sys; "
             "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))")
    image_versions = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True,
                                               check=True, timeout=120).stdout)
    dev_versions = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                             check=True, timeout=120).stdout)
    # The image holds a subset of the dev environment, at the same versions.
    differing = {n: (v, dev_versions.get(n)) for n, v in image_versions.items() if dev_versions.get(n) != v}
    assert not differing, f"image {image} differs from the tested environment: {differing}"
    if image == "operator":
        assert "torch" not in image_versions, "the operator image must not carry torch"
        # Its admission webhook runs the trainer's spec checks there, without torch.
        refuse = ("import yaml; from speechtune_operator import admission, settings; "
                  f"b = yaml.safe_load(open({str(ROOT / 'examples' / 'finetunejob-canary.yaml')!r})); "
                  "b['spec']['training']['peft'] = {'method': 'lora'}; print(admission.refusal(b, settings.Settings()))")
        said = subprocess.run([python, "-c", refuse], capture_output=True, text=True, check=True, timeout=120).stdout
        assert said.startswith("spec.training.peft.method: 'lora' is not supported by nemo-canary"), said
    else:
        assert image_versions["torch"] == dev_versions["torch"]
        assert "nemo-toolkit" not in image_versions, "the speechbrain image carries only its own extra"
        crd = next((env_dir / "lib").glob("python*/site-packages/speechtune/finetunejob.crd.yaml"))
        assert crd.read_bytes() == (ROOT / "crds" / "finetunejob.yaml").read_bytes()
