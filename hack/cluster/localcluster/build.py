"""Build the control-plane binaries with `go build` from the Go module proxy.

Each Go module is one build, run in parallel with the others under `nice`; a binary is
moved into the cache folder only once its build succeeded, so an interrupted build never
leaves a half-written binary that a later run would trust.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localcluster import versions

GOMOD_DIR = Path(__file__).resolve().parent.parent / "gomod"

# kube-apiserver reports this version to clients (helm and kubectl check it); without the
# linker flags a module build would call itself v0.0.0-master.
_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")


# From the training-operator module's manifests/base/crds; only PyTorchJob is served.
CRD_FILES = ("kubeflow.org_pytorchjobs.yaml",)


class ToolchainMissing(RuntimeError):
    """Go, or the Go module proxy, is not usable and a binary still has to be built."""


@dataclasses.dataclass(frozen=True)
class GoBuild:
    """One `go` invocation that produces some of the binaries."""

    label: str
    args: tuple[str, ...]
    cwd: Path | None  # a wrapper module, or None for `go install pkg@version`
    outputs: tuple[str, ...]  # binary names the invocation writes into its output dir
    renames: tuple[tuple[str, str], ...] = ()  # (written name, cached name)


def kubernetes_ldflags() -> str:
    major, minor = versions.KUBERNETES.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in _VERSION_PACKAGES:
        flags += [
            f"-X {package}.gitVersion={versions.KUBERNETES}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)


def helm_ldflags() -> str:
    """What helm's own Makefile stamps into a release binary."""
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={versions.HELM}"]
    for package in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        flags += [f"-X {package}.k8sVersionMajor=1", f"-X {package}.k8sVersionMinor={versions.HELM_KUBE_MINOR}"]
    return " ".join(flags)


def planned_builds() -> tuple[GoBuild, ...]:
    install = ("install", "-ldflags=-s -w")
    return (
        GoBuild(
            label="kubernetes " + versions.KUBERNETES,
            args=("build", "-mod=readonly", f"-ldflags={kubernetes_ldflags()}", "-o", "{out}/")
            + tuple(
                f"k8s.io/kubernetes/cmd/{name}"
                for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
            ),
            cwd=GOMOD_DIR / "kubernetes",
            outputs=("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
        ),
        GoBuild(
            label="etcd " + versions.ETCD,
            args=("build", "-mod=readonly", "-ldflags=-s -w", "-o", "{out}/etcd", "."),
            cwd=GOMOD_DIR / "etcd",
            outputs=("etcd",),
        ),
        GoBuild(
            label="kwok " + versions.KWOK,
            args=install + (f"sigs.k8s.io/kwok/cmd/kwok@{versions.KWOK}",),
            cwd=None,
            outputs=("kwok",),
        ),
        GoBuild(
            label="helm " + versions.HELM,
            args=("install", f"-ldflags={helm_ldflags()}", f"helm.sh/helm/v3/cmd/helm@{versions.HELM}"),
            cwd=None,
            outputs=("helm",),
        ),
        GoBuild(
            label="training-operator " + versions.TRAINING_OPERATOR,
            args=install
            + (
                f"{versions.TRAINING_OPERATOR_MODULE}/cmd/training-operator.v1"
                f"@{versions.TRAINING_OPERATOR}",
            ),
            cwd=None,
            outputs=("training-operator.v1",),
            renames=(("training-operator.v1", "training-operator"),),
        ),
    )


def cached_name(build: GoBuild, written: str) -> str:
    return dict(build.renames).get(written, written)


def missing_builds(bins: versions.Binaries) -> list[GoBuild]:
    return [
        build
        for build in planned_builds()
        if not all(bins.path(cached_name(build, name)).is_file() for name in build.outputs)
    ]


def go_executable() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolchainMissing(
            "the Go toolchain is missing: `go` is not on PATH. The local control plane builds "
            "kube-apiserver, etcd, kwok, helm and the training-operator from the Go module "
            "proxy; install Go >= 1.26 (https://go.dev/dl/) and run again."
        )
    return go


def check_pins() -> None:
    """The wrapper go.mod files pin the same versions as versions.py."""
    expected = {
        GOMOD_DIR / "kubernetes" / "go.mod": f"k8s.io/kubernetes {versions.KUBERNETES}",
        GOMOD_DIR / "etcd" / "go.mod": f"go.etcd.io/etcd/server/v3 {versions.ETCD}",
    }
    for path, requirement in expected.items():
        if requirement not in path.read_text():
            raise RuntimeError(f"{path}: expected `require {requirement}` (pinned in versions.py)")


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOWORK"] = "off"  # never let a go.work elsewhere steer these builds
    env["GOFLAGS"] = "-buildvcs=false"  # the wrappers live in our git tree; no VCS stamping
    env.setdefault("CGO_ENABLED", "0")  # static binaries, no C toolchain needed
    return env


def start(build: GoBuild, go: str, out_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    args = [arg.replace("{out}", str(out_dir)) for arg in build.args]
    env = go_env()
    if build.cwd is None:
        env["GOBIN"] = str(out_dir)
    with log.open("wb") as log_file:
        return subprocess.Popen(
            ["nice", "-n", "10", go, *args],
            cwd=build.cwd or out_dir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def failure_message(build: GoBuild, log: Path) -> str:
    text = log.read_text(errors="replace")
    hint = ""
    if any(sign in text for sign in ("proxy.golang.org", "GOPROXY", "dial tcp", "no such host")):
        hint = (
            "\nThe Go module proxy is not reachable (GOPROXY="
            f"{os.environ.get('GOPROXY', 'https://proxy.golang.org,direct')}); the first build "
            "needs it, later runs use ~/.cache/speechtune/bin."
        )
    return f"building {build.label} failed (log: {log}):\n{tail(log)}{hint}"


def crd_path(bins: versions.Binaries, name: str) -> Path:
    return bins.dir / "crds" / name


def ensure_binaries(*, quiet: bool = False) -> versions.Binaries:
    """Build whatever is missing from the cache folder and return it."""
    bins = versions.binaries()
    if not missing_builds(bins) and crd_path(bins, CRD_FILES[0]).is_file():
        return bins
    bins.dir.mkdir(parents=True, exist_ok=True)
    # Two sessions starting at once must not both spend twenty minutes building.
    with (bins.dir.parent / f".{bins.dir.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in bins.dir.parent.glob("build-*"):  # left by a build that was killed
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        todo = missing_builds(bins)
        if todo:
            run_builds(todo, bins, quiet=quiet)
        if not crd_path(bins, CRD_FILES[0]).is_file():
            copy_crds(bins)
    return bins


def copy_crds(bins: versions.Binaries) -> None:
    """Keep the training-operator's CRDs next to its binary, so a warm start needs no Go."""
    source = module_dir(versions.TRAINING_OPERATOR_MODULE, versions.TRAINING_OPERATOR)
    target = bins.dir / "crds"
    target.mkdir(exist_ok=True)
    for name in CRD_FILES:
        tmp = target / f".{name}.tmp"
        shutil.copyfile(source / "manifests" / "base" / "crds" / name, tmp)
        os.replace(tmp, target / name)


def run_builds(todo: list[GoBuild], bins: versions.Binaries, *, quiet: bool) -> None:
    go = go_executable()
    check_pins()

    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="build-", dir=bins.dir.parent) as tmp:
        running = []
        for index, build in enumerate(todo):
            out_dir = Path(tmp) / str(index)
            out_dir.mkdir()
            log = bins.dir.parent / f"build-{build.label.split()[0]}.log"
            say(f"cluster: building {build.label} (log: {log})")
            running.append((build, out_dir, log, start(build, go, out_dir, log)))
        failures = []
        for build, out_dir, log, process in running:
            if process.wait() != 0:
                failures.append(failure_message(build, log))
                continue
            for name in build.outputs:
                os.replace(out_dir / name, bins.path(cached_name(build, name)))
            say(f"cluster: built {build.label} ({time.monotonic() - started:.0f}s)")
        if failures:
            raise ToolchainMissing("\n\n".join(failures))
    say(f"cluster: binaries ready in {bins.dir} ({time.monotonic() - started:.0f}s)")


def module_dir(module: str, version: str) -> Path:
    """Download (if needed) a module into the module cache and return its folder."""
    go = go_executable()
    result = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        env=go_env(),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=False,
    )
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "Dir" not in info:
        raise ToolchainMissing(
            f"go mod download {module}@{version} failed: {info.get('Error') or result.stderr}"
        )
    return Path(info["Dir"])
