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
import zipfile
from pathlib import Path

import pytest
import yaml

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


@pytest.mark.parametrize("image", sorted(EXPECTED))
def test_installs_the_projects_own_package(image: str) -> None:
    path = IMAGES / image / "Dockerfile"
    _, source, extra = EXPECTED[image]
    instructions = parse_dockerfile(path)
    copies = {ins.args.split()[-1].rstrip("/"): ins.args.split()[-2].rstrip("/")
              for ins in instructions if ins.keyword == "COPY" and not ins.args.startswith("--from")}
    target = next((dst for dst, src in copies.items() if src == source), None)
    assert target, f"{path}: does not COPY {source}/ from the build context"
    # The trainer validates specs against the CRD: crds/ must be in the image's source too.
    assert "crds" in copies.values(), f"{path}: does not COPY crds/"
    wanted = f"{target}[{extra}]" if extra else target
    installs = [ins for ins in instructions if ins.keyword == "RUN" and "pip install" in ins.args]
    assert any(re.search(rf"pip install [^&;]*[\"']?{re.escape(wanted)}[\"']?(\s|$)", ins.args) for ins in installs), (
        f"{path}: no `pip install {wanted}`"
    )
    if extra:
        extras = tomllib.loads((ROOT / "trainers" / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        assert extra in extras, f"{path}: trainers/pyproject.toml has no extra {extra!r}"


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
    sources = [ins.args.split()[-2].rstrip("/") for ins in parse_dockerfile(IMAGES / image / "Dockerfile")
               if ins.keyword == "COPY" and not ins.args.startswith("--from")]
    for source in sources:
        assert not ignored(patterns, f"{source}/pyproject.toml" if source != "crds" else "crds/finetunejob.yaml"), (
            f"{path}: excludes {source}/, which the Dockerfile copies"
        )
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


def build_wheel(image: str, tmp_path: Path) -> Path:
    """The image's `pip install` step, without Docker: copy what the Dockerfile COPYs into the
    layout it creates, then build the package's wheel from there (no deps, no network)."""
    instructions = parse_dockerfile(IMAGES / image / "Dockerfile")
    _, source, _ = EXPECTED[image]
    for ins in instructions:
        if ins.keyword == "COPY" and not ins.args.startswith("--from"):
            src, dst = ins.args.split()[-2:]
            # Symlinks stay links, as COPY keeps them: the trainer's CRD link must resolve there.
            shutil.copytree(ROOT / src, tmp_path / dst.lstrip("/"), symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    target = next(ins.args.split()[-1] for ins in instructions
                  if ins.keyword == "COPY" and ins.args.split()[-2].rstrip("/") == source)
    out = tmp_path / "wheels"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           str(tmp_path / target.lstrip("/")), "--wheel-dir", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("*.whl")
    return wheel


# One trainer image stands for the three: they copy the same sources and differ only in the
# pip extra, which test_installs_the_projects_own_package checks.
@pytest.mark.parametrize("image", ["operator", "speechbrain"])
def test_the_copied_sources_build_the_package_with_its_entry_point(image: str, tmp_path: Path) -> None:
    with zipfile.ZipFile(build_wheel(image, tmp_path)) as wheel:
        names = wheel.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = re.findall(r"^([\w-]+) = ", wheel.read(entry_points).decode(), re.M)
        assert EXPECTED[image][0] in scripts
        if image != "operator":
            # The trainer validates specs against the CRD it carries: the very file in crds/.
            assert wheel.read("speechtune/finetunejob.crd.yaml") == (ROOT / "crds" / "finetunejob.yaml").read_bytes()
