"""Faults in local runs: signals, run-folder races, failing volumes and streams. A fake
engine (the runtime's contract, no framework) keeps these in the unit tier; every case
asserts the one-line message and that nothing written before the fault was lost."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import soundfile
import yaml

from speechtune import cli, engines, spec
from speechtune.engines import base
from speechtune.runtime import console, metrics, rundir, session, signals, volumes

REPO = Path(__file__).resolve().parents[3]


class FakeEngine:
    """Trains `steps` steps; `fault` picks what goes wrong at `at` (a signal or an OSError)."""

    def __init__(self, *, steps: int = 6, fault: str | None = None, at: int = 3) -> None:
        self.steps, self.fault, self.at = steps, fault, at

    def prepare(self, ctx: base.RunContext) -> None:
        ctx.reporter.set_max_steps(self.steps)

    def train(self, ctx: base.RunContext) -> base.TrainResult:
        for step in range(1, self.steps + 1):
            ctx.reporter.train_step(step=step, loss=1.0 / step, audio_seconds=1.0, samples=1)
            if step == self.at and self.fault in ("SIGINT", "SIGTERM", "SIGINT twice"):
                os.kill(os.getpid(), getattr(signal, self.fault.split()[0]))
            if step == self.at and self.fault == "ENOSPC":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ctx.checkpoint_dir / "step3.pt"))
            if ctx.stop.is_set():
                if self.fault == "SIGINT twice":
                    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again while "saving"
                (ctx.checkpoint_dir / f"CKPT+step{step:08d}").mkdir()
                return base.TrainResult(step, 0.0, 1.0 / step, None, None, stopped_early=True)
        (ctx.checkpoint_dir / f"CKPT+step{self.steps:08d}").mkdir()
        return base.TrainResult(self.steps, 1.0, 0.1, 0.1, None)

    def evaluate(self, ctx: base.RunContext, manifest: Path) -> Sequence[base.Hypothesis]:
        return [base.Hypothesis("a", "hello", "hello")]

    def export(self, ctx: base.RunContext) -> Path:
        (ctx.run_dir / "model").mkdir(exist_ok=True)
        return ctx.run_dir / "model"


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    soundfile.write(str(data / "a.wav"), np.zeros(16000), 16000, subtype="PCM_16")
    row = json.dumps({"id": "a", "audio_filepath": "a.wav", "duration": 1.0, "text": "hello"})
    for name in ("train.json", "valid.json"):
        (data / name).write_text(row + "\n")
    return tmp_path


def job_file(root: Path, **resources: Any) -> Path:
    document = {
        "apiVersion": spec.API_VERSION, "kind": spec.KIND, "metadata": {"name": "tiny"},
        "spec": {"engine": "speechbrain-ctc", "data": {"volume": {"claimName": "d"}, "train": "train.json",
                                                        "validation": "valid.json"},
                 "training": {"maxSteps": 6}, "resources": resources,
                 "output": {"volume": {"claimName": "r"}, "resume": False}}}
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run_cli(root: Path, *extra: str) -> list[str]:
    return ["run", str(job_file(root)), "--volume", f"d={root / 'data'}", "--volume", f"r={root / 'runs'}",
            "--metrics-port", "0", *extra]


def use(monkeypatch: pytest.MonkeyPatch, engine: FakeEngine) -> None:
    monkeypatch.setattr(engines, "load", lambda name: engine)


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith(("metrics:", "run folder", "  "))]
    assert "Traceback" not in err, err
    return lines[-1]


@pytest.mark.parametrize(("fault", "code", "name"), [("SIGINT", 130, "SIGINT"), ("SIGTERM", 143, "SIGTERM")])
def test_a_signal_checkpoints_and_says_stopped(fault: str, code: int, name: str, volume: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    use(monkeypatch, FakeEngine(fault=fault))
    assert cli.main(run_cli(volume)) == code
    err = capsys.readouterr().err
    assert f"stopped by {name} at step 3" in one_line(err)
    (folder,) = (volume / "runs" / "tiny").iterdir()
    facts = json.loads((folder / "metrics.json").read_text())
    assert facts["status"] == "stopped" and f"stopped by {name}" in facts["reason"]
    assert (folder / "checkpoints" / "CKPT+step00000003").is_dir()
    assert "step 3" in (folder / "train_log.txt").read_text() or facts["steps"] == 3


def test_ctrl_c_twice_stops_now_and_still_says_so(volume: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    use(monkeypatch, FakeEngine(fault="SIGINT twice"))
    # What the process had before the run (a background job starts with SIGINT ignored).
    before = signal.getsignal(signal.SIGINT)
    assert cli.main(run_cli(volume)) == 130
    assert "interrupted (Ctrl-C twice)" in one_line(capsys.readouterr().err)
    (folder,) = (volume / "runs" / "tiny").iterdir()
    facts = json.loads((folder / "metrics.json").read_text())
    assert facts["status"] == "stopped" and "interrupted" in facts["reason"]
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_a_full_volume_is_one_line_with_path_and_errno(volume: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    use(monkeypatch, FakeEngine(fault="ENOSPC"))
    assert cli.main(run_cli(volume)) == 1
    line = one_line(capsys.readouterr().err)
    assert re.search(r"checkpoints/step3.pt: No space left on device \(ENOSPC\)$", line), line
    (folder,) = (volume / "runs" / "tiny").iterdir()
    facts = json.loads((folder / "metrics.json").read_text())
    assert facts["status"] == "failed" and "ENOSPC" not in facts["reason"] and "No space" in facts["reason"]
    log = (folder / "train_log.txt").read_text()
    assert "run folder:" in log and "FAILED: OSError" in log  # earlier lines kept


def test_an_unwritable_output_volume_is_one_line(volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = Path("/sys/speechtune-output")  # sysfs takes no new folders, even from root
    code = cli.main(["run", str(job_file(volume)), "--volume", f"d={volume / 'data'}", "--volume", f"r={target}"])
    line = one_line(capsys.readouterr().err)
    assert code == 1 and line.startswith(f"speechtune: {target}: ") and re.search(r"\((EPERM|EROFS|EACCES)\)$", line)


def test_the_output_volume_being_a_file_is_one_line(volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (volume / "runs").write_text("not a folder")
    code = cli.main(run_cli(volume))
    line = one_line(capsys.readouterr().err)
    assert code == 1 and "(EEXIST)" in line and str(volume / "runs") in line
    assert (volume / "runs").read_text() == "not a folder"


def test_two_runs_in_the_same_second_get_two_folders(volume: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rundir, "run_id", lambda environ=os.environ: "20261201_050000")
    monkeypatch.delenv(rundir.RUN_ID_ENV, raising=False)
    use(monkeypatch, FakeEngine())
    job = spec.load(job_file(volume))
    mounts = volumes.local_mounts(job.typed, {"d": volume / "data", "r": volume / "runs"})
    first = session.run(job, mounts, session.Options(metrics_port=0, console=console.Console(open(os.devnull, "w"))))
    second = session.run(job, mounts, session.Options(metrics_port=0, console=console.Console(open(os.devnull, "w"))))
    assert (first.run_folder.name, second.run_folder.name) == ("20261201_050000", "20261201_050000-2")
    assert json.loads((first.run_folder / "metrics.json").read_text())["run_id"] == "20261201_050000"


def test_racing_processes_never_share_a_run_folder(tmp_path: Path) -> None:
    names: list[str] = []
    threads = [threading.Thread(target=lambda: names.append(rundir.create_new(tmp_path, "job", "same").path.name))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(names) == sorted(["same", *[f"same-{n}" for n in range(2, 9)]])


def test_gpus_per_node_without_gpus_is_refused(volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    path = job_file(volume, gpusPerNode=2)
    code = cli.main(["run", str(path), "--volume", f"d={volume / 'data'}", "--volume", f"r={volume / 'runs'}"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "spec.resources.gpusPerNode: 2 GPUs per node, but this machine has 0" in line
    assert not (volume / "runs" / "tiny").exists()


def test_local_metrics_listen_on_loopback_and_pods_on_all() -> None:
    assert session.Options().metrics_host == metrics.LOCAL_HOST == "127.0.0.1"
    registry = metrics.TrainingMetrics(job="j", namespace="n", engine="e")
    for host in (metrics.LOCAL_HOST, metrics.POD_HOST):
        server = session.start_metrics_server(registry, 0, console.Console(open(os.devnull, "w")), host=host)
        try:
            assert server._server.server_address[0] == host
        finally:
            server.stop()
    parser = cli.build_parser()
    assert parser.parse_args(["run", "j.yaml", "--metrics-host", "0.0.0.0"]).metrics_host == "0.0.0.0"


def test_a_closed_console_does_not_stop_the_run(tmp_path: Path) -> None:
    stream = open(tmp_path / "x", "w")
    stream.close()
    view = console.Console(stream, live=True)
    view.line("still fine")
    view.progress("[###]")
    view.close()
    assert view.stream is None


@pytest.mark.parametrize("redirect", ["2>&-", ">&-", "| head -c0"])
def test_closed_stdout_or_stderr_is_no_traceback(redirect: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: speechtune.dev/v1alpha1\nkind: FinetuneJob\nspec: {engine: x}\nspec: {}\n")
    good = REPO / "examples" / "demo.yaml"
    command = f"{sys.executable} -m speechtune.cli validate {good} {bad} {redirect}; echo rc=$?"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert "rc=1" in done.stdout


def test_every_torch_load_is_weights_only() -> None:
    sources = sorted((REPO / "trainers" / "src" / "speechtune").rglob("*.py"))
    calls = [(p, line) for p in sources for line in p.read_text().splitlines() if "torch.load(" in line]
    assert calls, "expected the checkpoint readers"
    for path, line in calls:
        assert "weights_only=True" in line, f"{path}: {line.strip()}"
    assert not [p for p in sources if "weights_only=False" in p.read_text()]


def test_a_pickled_command_in_a_checkpoint_is_not_run(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("omegaconf")
    from speechtune.engines.nemo_canary import export as nemo_export

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {}, "hyper_parameters": Exploit()}, tmp_path / "evil.ckpt")
    with pytest.raises(Exception, match="Weights only load failed"):
        nemo_export.load_lightning_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_a_port_in_use_is_one_line_and_leaves_no_run_folder(volume: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    use(monkeypatch, FakeEngine())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main([*run_cli(volume)[:-2], "--metrics-port", str(port)])
    line = one_line(capsys.readouterr().err)
    assert code == 1 and line == f"speechtune: metrics 127.0.0.1:{port}: Address already in use (EADDRINUSE)"
    assert not (volume / "runs" / "tiny").exists() or not any((volume / "runs" / "tiny").iterdir())


def test_a_sweep_refuses_a_bad_grid_point_before_running_any(volume: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    use(monkeypatch, FakeEngine())
    code = cli.main(["sweep", str(job_file(volume)), "--volume", f"d={volume / 'data'}", "--volume",
                     f"r={volume / 'runs'}", "--set", "overrides.kernel_size=15,14", "--metrics-port", "0"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "spec.training.overrides.kernel_size: must be odd, got 14" in line
    assert not (volume / "runs" / "tiny").exists()
