"""Build the control-plane binaries with `go build` from the Go module proxy.

Each component (one Go module) is one build into its own cache folder, keyed by its
version and locked on its own; missing ones run in parallel under `nice`. A binary is
moved into its folder only once its build succeeded, so an interrupted build never leaves
a half-written binary that a later run would trust.
"""

from __future__ import annotations

import contextlib
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


class ToolchainMissing(RuntimeError):
    """Go, or the Go module proxy, is not usable and a binary still has to be built."""


@dataclasses.dataclass(frozen=True)
class GoBuild:
    """One `go` invocation that produces some of the binaries."""

    component: versions.Component
    args: tuple[str, ...]
    cwd: Path | None  # a wrapper module, or None for `go install pkg@version`
    outputs: tuple[str, ...]  # binary names the invocation writes into its output dir
    renames: tuple[tuple[str, str], ...] = ()  # (written name, cached name)

    @property
    def label(self) -> str:
        return f"{self.component.name} {self.component.version}"


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


def kueue_ldflags() -> str:
    """What Kueue's Makefile stamps (it logs and reports this version)."""
    return f"-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion={versions.KUEUE}"


def planned_builds() -> tuple[GoBuild, ...]:
    install = ("install", "-ldflags=-s -w")
    return (
        GoBuild(
            component=versions.KUBERNETES_COMPONENT,
            args=("build", "-mod=readonly", f"-ldflags={kubernetes_ldflags()}", "-o", "{out}/")
            + tuple(
                f"k8s.io/kubernetes/cmd/{name}"
                for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
            ),
            cwd=GOMOD_DIR / "kubernetes",
            outputs=("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
        ),
        GoBuild(
            component=versions.ETCD_COMPONENT,
            args=("build", "-mod=readonly", "-ldflags=-s -w", "-o", "{out}/etcd", "."),
            cwd=GOMOD_DIR / "etcd",
            outputs=("etcd",),
        ),
        GoBuild(
            component=versions.KWOK_COMPONENT,
            args=install + (f"sigs.k8s.io/kwok/cmd/kwok@{versions.KWOK}",),
            cwd=None,
            outputs=("kwok",),
        ),
        GoBuild(
            component=versions.HELM_COMPONENT,
            args=("install", f"-ldflags={helm_ldflags()}", f"helm.sh/helm/v3/cmd/helm@{versions.HELM}"),
            cwd=None,
            outputs=("helm",),
        ),
        GoBuild(
            component=versions.TRAINING_OPERATOR_COMPONENT,
            args=install
            + (
                f"{versions.TRAINING_OPERATOR_MODULE}/cmd/training-operator.v1"
                f"@{versions.TRAINING_OPERATOR}",
            ),
            cwd=None,
            outputs=("training-operator.v1",),
            renames=(("training-operator.v1", "training-operator"),),
        ),
        GoBuild(
            component=versions.TRAINER_COMPONENT,
            args=install
            + (f"{versions.TRAINER_MODULE}/cmd/trainer-controller-manager@{versions.TRAINER}",),
            cwd=None,
            outputs=("trainer-controller-manager",),
        ),
        GoBuild(
            # A wrapper module: `go install sigs.k8s.io/jobset@v0.12.0` asks the proxy for the
            # module's version list (deprecation check), which the proxy refuses for jobset.
            component=versions.JOBSET_COMPONENT,
            args=("build", "-mod=readonly", "-ldflags=-s -w", "-o", "{out}/jobset", versions.JOBSET_MODULE),
            cwd=GOMOD_DIR / "jobset",
            outputs=("jobset",),
        ),
        GoBuild(
            # Kueue's go.mod has no replace lines: `go install` builds it with its own go.sum.
            component=versions.KUEUE_COMPONENT,
            args=("install", f"-ldflags={kueue_ldflags()}", f"{versions.KUEUE_MODULE}/cmd/kueue@{versions.KUEUE}"),
            cwd=None,
            outputs=("kueue",),
        ),
    )


def cached_name(build: GoBuild, written: str) -> str:
    return dict(build.renames).get(written, written)


def is_complete(bins: versions.Binaries, component: versions.Component) -> bool:
    folder = bins.folder(component)
    return all((folder / name).is_file() for name in (*component.binaries, *component.cached_files()))


def missing_builds(bins: versions.Binaries) -> list[GoBuild]:
    wanted = set(bins.components)
    return [build for build in planned_builds()
            if build.component in wanted
            and not all((bins.folder(build.component) / cached_name(build, name)).is_file()
                        for name in build.outputs)]


def go_executable() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolchainMissing(
            "the Go toolchain is missing: `go` is not on PATH. The local control plane builds "
            "kube-apiserver, etcd, kwok, helm, the training-operator (and for the trainjob "
            "backend Kubeflow Trainer and JobSet) from the Go module proxy; install Go >= 1.26 "
            "(https://go.dev/dl/) and run again."
        )
    return go


def check_pins() -> None:
    """The wrapper go.mod files pin the same versions as versions.py."""
    expected = {
        GOMOD_DIR / "kubernetes" / "go.mod": f"k8s.io/kubernetes {versions.KUBERNETES}",
        GOMOD_DIR / "etcd" / "go.mod": f"go.etcd.io/etcd/server/v3 {versions.ETCD}",
        GOMOD_DIR / "jobset" / "go.mod": f"{versions.JOBSET_MODULE} {versions.JOBSET}",
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
    return bins.crd_path(name)


def ensure_binaries(*, quiet: bool = False,
                    components: tuple[versions.Component, ...] = versions.BASE_COMPONENTS) -> versions.Binaries:
    """Build whatever `components` miss in their cache folders and return them."""
    bins = versions.binaries(components)
    if all(is_complete(bins, component) for component in components):
        return bins
    bins.root.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as locks:
        wait_for_legacy_build(bins, locks)
        # Two sessions starting at once must not both spend twenty minutes building: one
        # lock per component, taken in a fixed order.
        for component in sorted(components, key=lambda c: c.key):
            lock = locks.enter_context((bins.root / f".{component.key}.lock").open("w"))
            fcntl.flock(lock, fcntl.LOCK_EX)
            for stale in bins.root.glob(f"build-{component.key}-*"):  # left by a killed build
                shutil.rmtree(stale, ignore_errors=True)
            bins.folder(component).mkdir(exist_ok=True)
        link_legacy_binaries(bins)
        todo = missing_builds(bins)
        if todo:
            run_builds(todo, bins, quiet=quiet)
        for component in components:
            if not is_complete(bins, component):
                copy_manifests(bins, component)
    return bins


def wait_for_legacy_build(bins: versions.Binaries, locks: contextlib.ExitStack) -> None:
    """An older checkout may be building everything into the one legacy folder right now:
    wait for it (its lock) rather than build Kubernetes a second time beside it."""
    legacy_lock = bins.root / f".{versions.legacy_stack_key()}.lock"
    if legacy_lock.exists():
        lock = locks.enter_context(legacy_lock.open("r"))
        fcntl.flock(lock, fcntl.LOCK_SH)


def link_legacy_binaries(bins: versions.Binaries) -> None:
    """Hard-link what the legacy all-in-one folder already has (an older checkout's build)
    into the per-component folders; the legacy folder stays usable by older checkouts."""
    legacy = bins.root / versions.legacy_stack_key()
    if not legacy.is_dir():
        return
    for component in bins.components:
        folder = bins.folder(component)
        names = [*component.binaries, *component.cached_files()]
        for name in names:
            source, target = legacy / name, folder / name
            if source.is_file() and not target.exists():
                target.parent.mkdir(exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.unlink(missing_ok=True)
                try:
                    os.link(source, tmp)
                except OSError:  # another filesystem: copy instead
                    shutil.copy2(source, tmp)
                os.replace(tmp, target)


def copy_manifests(bins: versions.Binaries, component: versions.Component) -> None:
    """Keep a controller's CRDs and webhooks next to its binary, so a warm start needs no Go."""
    files = component.cached_files()
    if not files:
        return
    source = module_dir(component.module, component.version)
    for name, path in files.items():
        target = bins.folder(component) / name
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source / path, tmp)
        os.replace(tmp, target)


def run_builds(todo: list[GoBuild], bins: versions.Binaries, *, quiet: bool) -> None:
    go = go_executable()
    check_pins()

    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    started = time.monotonic()
    with contextlib.ExitStack() as folders:
        running = []
        for build in todo:
            key = build.component.key
            out_dir = Path(folders.enter_context(tempfile.TemporaryDirectory(prefix=f"build-{key}-", dir=bins.root)))
            log = bins.root / f"build-{key}.log"
            say(f"cluster: building {build.label} (log: {log})")
            running.append((build, out_dir, log, start(build, go, out_dir, log)))
        failures = []
        for build, out_dir, log, process in running:
            if process.wait() != 0:
                failures.append(failure_message(build, log))
                continue
            for name in build.outputs:
                os.replace(out_dir / name, bins.folder(build.component) / cached_name(build, name))
            say(f"cluster: built {build.label} ({time.monotonic() - started:.0f}s)")
        if failures:
            raise ToolchainMissing("\n\n".join(failures))
    say(f"cluster: binaries ready in {bins.root} ({time.monotonic() - started:.0f}s)")


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
