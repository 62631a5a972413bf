"""Pure pieces of the runtime: sweep CSV, scoring, console, volumes, metrics names,
cluster status lines, sweep grids."""

from __future__ import annotations

import csv
import threading
import urllib.request
from pathlib import Path

import pytest

from speechtune import spec as specs
from speechtune.engines import base
from speechtune.runtime import cluster, console, evaluation, metrics, scoring, sweep, sweeps, volumes

REFERENCE_HEADER = (
    "timestamp, run_id, run_stage, model, output_dir, dataset_part, train_fraction, validation_samples, "
    "epochs, wer, train_runtime, train_loss, eval_loss, device, gpu, per_device_train_batch_size, "
    "grad_accum, effective_batch_size, lora_r, lora_alpha, lora_dropout, quant_weights_dtype, "
    "quant_compute_dtype, inference_time_sec, peak_memory_mb, save_full_model, language, task, "
    "learning_rate, seed, eval_strategy, eval_steps"
)
ARCHITECTURE_METRICS = (
    "speechtune_train_loss", "speechtune_val_loss", "speechtune_val_wer_ratio", "speechtune_val_cer_ratio",
    "speechtune_learning_rate", "speechtune_step", "speechtune_max_steps", "speechtune_epoch",
    "speechtune_audio_seconds_total", "speechtune_samples_total", "speechtune_step_duration_seconds",
    "speechtune_padding_ratio", "speechtune_gpu_memory_bytes",
)


def test_sweep_header_is_the_reference_header() -> None:
    assert sweep.HEADER == tuple(c.strip() for c in REFERENCE_HEADER.split(","))
    assert len(sweep.HEADER) == 32


def test_sweep_rows_append_under_one_header(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "sweep.csv"
    sweep.append_row(target, {"run_id": "a", "wer": 0.5})
    sweep.append_row(target, {"run_id": "b", "wer": 0.25, "lora_r": 8})
    rows = list(csv.reader(target.open()))
    assert tuple(rows[0]) == sweep.HEADER
    assert [r[1] for r in rows[1:]] == ["a", "b"]
    assert rows[2][sweep.HEADER.index("lora_r")] == "8"


def test_sweep_refuses_unknown_columns_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown column"):
        sweep.append_row(tmp_path / "s.csv", {"notes": "x"})
    foreign = tmp_path / "other.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header differs"):
        sweep.append_row(foreign, {"run_id": "x"})


def test_scoring_normalises_and_splits_by_language() -> None:
    hyps = [
        base.Hypothesis("1", "Climb Flight Level", "climb flight level", language="en"),
        base.Hypothesis("2", "turn left", "turn right", language="en"),
        base.Hypothesis("3", "guten tag", "guten tag", language="de"),
    ]
    scores = scoring.score_hypotheses(hyps, str.upper)
    assert scores["all"].wer == pytest.approx(1 / 7)
    assert scores["en"].wer == pytest.approx(1 / 5)
    assert scores["de"].wer == 0.0
    assert scores["all"].utterances == 3


def test_translation_rows_are_scored_with_bleu_per_language_pair() -> None:
    hyps = [
        base.Hypothesis("1", "the cat sits on the mat", "the cat sits on the mat", language="en", source_language="en"),
        base.Hypothesis("2", "die Katze sitzt auf der Matte", "die Katze sitzt auf der Matte", language="de",
                        source_language="en"),
        base.Hypothesis("3", "ich habe heute keine Zeit", "ich habe keine Zeit heute", language="de",
                        source_language="en"),
    ]
    scores = scoring.score_hypotheses(hyps, str.lower)
    assert scores["en"].bleu is None  # ASR rows: WER only
    pair = scores["en->de"]
    assert pair.utterances == 2 and pair.bleu is not None and 0.3 < pair.bleu < 1.0
    assert "en->de" in evaluation.format_scores(scores)


def test_scoring_skips_empty_references() -> None:
    assert scoring.score([("", "noise"), ("a b", "a")]).wer == pytest.approx(0.5)
    assert scoring.score([]).utterances == 0


def test_progress_line_and_eta() -> None:
    line = console.progress_line(step=50, max_steps=200, loss=1.23456, eta_seconds=3725, audio_per_second=12.3)
    assert line.startswith("[######")
    assert " 50/200 loss 1.235 ETA 1:02:05 12.3 audio-s/s" in line
    assert console.format_eta(None) == "--:--"
    assert console.format_eta(65) == "01:05"


def test_console_without_tty_prints_no_bar(tmp_path: Path) -> None:
    out = (tmp_path / "out.txt").open("w+")
    view = console.Console(out)
    view.progress("[###] 1/2")
    view.line("plain line")
    out.seek(0)
    assert out.read() == "plain line\n"


def test_volume_flags_and_local_mounts(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    claims = volumes.parse_volume_flags([f"asr-data={tmp_path / 'data'}", f"asr-runs={tmp_path / 'runs'}"])
    spec = specs.parse({"engine": "hf-ctc", "training": {"maxSteps": 1},
                        "data": {"volume": {"claimName": "asr-data"}, "train": "a/train.json", "validation": "v.json"},
                        "output": {"volume": {"claimName": "asr-runs"}}})
    mounts = volumes.local_mounts(spec, claims)
    assert mounts.output.is_dir() and mounts.model is None
    paths = volumes.data_paths(spec, mounts)
    assert paths.train == tmp_path / "data" / "a" / "train.json" and paths.test is None
    with pytest.raises(ValueError, match="expected CLAIM=DIR"):
        volumes.parse_volume_flags(["nodir"])
    with pytest.raises(ValueError, match="--volume asr-data=DIR"):
        volumes.local_mounts(spec, {})


def test_metrics_endpoint_serves_every_architecture_name() -> None:
    registry = metrics.TrainingMetrics(job="j", namespace="ns", engine="speechbrain-ctc")
    server = metrics.MetricsServer(registry, port=0, host="127.0.0.1")
    try:
        registry.step.set(3)
        registry.audio_seconds.inc(1.5)
        registry.step_duration.observe(0.2)
        body = urllib.request.urlopen(server.url.replace("localhost", "127.0.0.1"), timeout=30).read().decode()
    finally:
        server.stop()
    for name in ARCHITECTURE_METRICS:
        assert f"\n{name}" in body or body.startswith(name), name
    assert 'speechtune_step{engine="speechbrain-ctc",finetunejob="j",namespace="ns"} 3.0' in body
    # Before the first validation the error rates are unknown, not a perfect 0.
    assert 'speechtune_val_wer_ratio{engine="speechbrain-ctc",finetunejob="j",namespace="ns"} NaN' in body


def test_metrics_server_lingers_for_a_last_scrape() -> None:
    registry = metrics.TrainingMetrics(job="j", namespace="ns", engine="hf-ctc")
    server = metrics.MetricsServer(registry, port=0, host="127.0.0.1")
    url = server.url.replace("localhost", "127.0.0.1")
    stopper = threading.Thread(target=server.stop, kwargs={"linger_s": 2.0})
    stopper.start()
    try:
        registry.step.set(7)  # the run's final value, set after stop() was called
        body = urllib.request.urlopen(url, timeout=30).read().decode()
    finally:
        stopper.join()
    assert 'speechtune_step{engine="hf-ctc",finetunejob="j",namespace="ns"} 7.0' in body


def test_metrics_port_from_environment() -> None:
    assert metrics.port_from_env({}) == 9400
    assert metrics.port_from_env({"SPEECHTUNE_METRICS_PORT": "0"}) == 0
    with pytest.raises(ValueError, match="SPEECHTUNE_METRICS_PORT"):
        metrics.port_from_env({"SPEECHTUNE_METRICS_PORT": "http"})


def test_cluster_status_line_and_watch_until_done() -> None:
    states = iter([
        {"metadata": {"name": "j"}, "spec": {"engine": "hf-ctc"}, "status": {"phase": "Running",
         "progress": {"step": 5, "maxSteps": 10}, "metrics": {"wer": 0.5}}},
        {"metadata": {"name": "j"}, "spec": {"engine": "hf-ctc"}, "status": {"phase": "Succeeded"}},
    ])
    shown: list[str] = []
    final = cluster.watch(lambda: next(states), show=shown.append, interval=0)
    assert final["status"]["phase"] == "Succeeded"
    assert shown[0] == "j  hf-ctc  Running  step 5/10  wer 0.5000"


def test_sweep_grid_points() -> None:
    grid = sweeps.parse_grid(["learningRate=1e-3,3e-4", "peft.r=8,16"])
    assert grid == [("learningRate", [1e-3, 3e-4]), ("peft.r", [8, 16])]
    assert len(sweeps.points(grid)) == 4
    with pytest.raises(ValueError, match="KEY=V1,V2"):
        sweeps.parse_grid(["learningRate"])


def test_stop_event_set_by_sigterm() -> None:
    import os
    import signal

    from speechtune.runtime import signals

    stop = threading.Event()
    with signals.stop_on_sigterm(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(timeout=10)


def test_torchrun_command_for_one_and_many_nodes() -> None:
    from speechtune.runtime import launcher

    local = launcher.torchrun_command(["run", "job.yaml"], gpus_per_node=4, environ={})
    assert local[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=4" in local
    assert "--standalone" in local and local[-4:] == ["-m", "speechtune.cli", "run", "job.yaml"]
    pods = launcher.torchrun_command(["train", "--job", "j.yaml"], gpus_per_node=8, environ={
        "PET_NNODES": "2", "PET_NODE_RANK": "1", "MASTER_ADDR": "ftj-master-0", "MASTER_PORT": "23456"})
    assert {"--nnodes=2", "--node_rank=1", "--master_addr=ftj-master-0", "--master_port=23456"} <= set(pods)
    assert launcher.needs_torchrun(2, {}) and not launcher.needs_torchrun(2, {"LOCAL_RANK": "0"})
    assert not launcher.needs_torchrun(1, {})


def test_eval_finds_the_run_and_its_export(tmp_path: Path) -> None:
    import json

    from speechtune.runtime import evaluation

    run = tmp_path / "runs" / "job" / "20260101_000000"
    (run / "checkpoints" / "step-00000010").mkdir(parents=True)
    (run / "job.yaml").write_text("{}")
    (run / "model.nemo").write_text("x")
    (run / "metrics.json").write_text(json.dumps({"model_export": str(run / "model.nemo")}))
    assert evaluation.find_run(run) == (run, run / "model.nemo")
    checkpoint = run / "checkpoints" / "step-00000010"
    assert evaluation.find_run(checkpoint) == (run, checkpoint)
    with pytest.raises(ValueError, match="no job.yaml"):
        evaluation.find_run(tmp_path)


def test_metrics_server_moves_off_a_busy_default_port_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from speechtune.runtime import session

    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        monkeypatch.setattr(metrics, "DEFAULT_PORT", taken)
        registry = metrics.TrainingMetrics(job="j", namespace="ns", engine="e")
        quiet = console.Console(open("/dev/null", "w"), live=False)
        server = session.start_metrics_server(registry, None, quiet, environ={})
        assert server.port != taken
        server.stop()
        with pytest.raises(OSError):  # asked for explicitly: no silent move
            session.start_metrics_server(registry, None, quiet, environ={"SPEECHTUNE_METRICS_PORT": str(taken)})


def test_local_resume_picks_the_newest_unfinished_run(tmp_path: Path) -> None:
    import json
    import os

    from speechtune.runtime import rundir

    def make(name: str, status: str | None, mtime: int, checkpoint: bool = True) -> None:
        folder = rundir.create(tmp_path, "job", name)
        if checkpoint:
            (folder.checkpoints / "step-00000002").mkdir()
        if status:
            folder.metrics_json.write_text(json.dumps({"status": status}))
        os.utime(folder.path, (mtime, mtime))

    assert rundir.unfinished_run(tmp_path, "job") is None
    make("a", "succeeded", 100)
    make("b", "stopped", 200)
    make("c", None, 300, checkpoint=False)  # killed before its first checkpoint
    assert rundir.unfinished_run(tmp_path, "job") == "b"
    make("d", "succeeded", 400)
    assert rundir.unfinished_run(tmp_path, "job") is None


def test_pod_mounts_are_the_fixed_paths() -> None:
    spec = {"engine": "hf-ctc", "training": {"maxSteps": 1},
            "data": {"volume": {"claimName": "asr-data"}, "train": "t.json", "validation": "v.json",
                     "test": "x.json"},
            "output": {"volume": {"claimName": "asr-runs"}}, "model": {"volume": {"claimName": "m"}}}
    mounts = volumes.pod_mounts(specs.parse(spec))
    assert (mounts.data, mounts.output, mounts.model) == (Path("/data"), Path("/output"), Path("/models"))
    assert volumes.data_paths(specs.parse(spec), mounts).test == Path("/data/x.json")
    assert volumes.pod_mounts(specs.parse({**spec, "model": {}})).model is None


def test_validation_bleu_and_best_checkpoint_reach_the_metrics(tmp_path: Path) -> None:
    from speechtune.runtime import reporter as reporters

    registry = metrics.TrainingMetrics(job="j", namespace="ns", engine="nemo-canary")
    run = reporters.RunReporter(metrics=registry, log_file=None, console=console.Console())
    run.validation(step=10, val_loss=1.5, wer=0.4, bleu=0.125)
    run.best_checkpoint(tmp_path / "checkpoints" / "best.ckpt")
    run.close()
    body = registry.render()
    assert 'speechtune_val_bleu_ratio{engine="nemo-canary",finetunejob="j",namespace="ns"} 0.125' in body
    assert f'path="{tmp_path / "checkpoints" / "best.ckpt"}"' in body


def test_eval_recognises_a_pretrained_model_without_a_run_folder(tmp_path: Path) -> None:
    from speechtune.runtime import evaluation

    (tmp_path / "canary.nemo").write_bytes(b"")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "sb").mkdir()
    (tmp_path / "sb" / "model.ckpt").write_bytes(b"")
    engines_found = {name: evaluation.model_spec(str(tmp_path / name), engine=None, normalization="lower")["engine"]
                     for name in ("canary.nemo", "hf", "sb")}
    assert engines_found == {"canary.nemo": "nemo-canary", "hf": "hf-ctc", "sb": "speechbrain-ctc"}
    hub = evaluation.model_spec("nvidia/canary-1b-v2", engine="nemo-canary", normalization="none")
    assert hub["model"] == {"pretrained": "nvidia/canary-1b-v2"}
    with pytest.raises(ValueError, match=r"--checkpoint nvidia/canary-1b-v2: no such file or folder .* needs --engine"):
        evaluation.model_spec("nvidia/canary-1b-v2", engine=None, normalization="none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"neither a run folder .* pass --engine"):
        evaluation.model_spec(str(tmp_path / "empty"), engine=None, normalization="none")
