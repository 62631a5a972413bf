"""status.progress/metrics from a real prometheus_client exposition of the trainer's metrics."""

from __future__ import annotations

import prometheus_client

from speechtune_operator.builders import progress


def exposition(job: str = "demo", *, step: int = 250, max_steps: int = 1000) -> str:
    registry = prometheus_client.CollectorRegistry()
    labels = ["finetunejob", "namespace", "engine"]
    values = (job, "research", "speechbrain-ctc")

    def gauge(name: str, value: float) -> None:
        prometheus_client.Gauge(name, name, labels, registry=registry).labels(*values).set(value)

    gauge("speechtune_step", step)
    gauge("speechtune_max_steps", max_steps)
    gauge("speechtune_epoch", 1.25)
    gauge("speechtune_train_loss", 0.8123456)
    gauge("speechtune_val_loss", 0.9)
    gauge("speechtune_val_wer_ratio", 0.1834)
    gauge("speechtune_val_cer_ratio", 0.07)
    prometheus_client.Counter("speechtune_audio_seconds", "audio", labels, registry=registry).labels(*values).inc(5000)
    histogram = prometheus_client.Histogram("speechtune_step_duration_seconds", "step", labels, registry=registry)
    for _ in range(step):
        histogram.labels(*values).observe(0.5)
    return prometheus_client.generate_latest(registry).decode()


def test_progress_and_metrics_from_the_trainer_exposition() -> None:
    fields = progress.status_fields(exposition(), job="demo")
    assert fields["progress"] == {"step": 250, "maxSteps": 1000, "epoch": 1.25, "etaSeconds": 375,
                                  "summary": "25% (250/1000)"}
    assert fields["metrics"] == {"trainLoss": 0.8123, "valLoss": 0.9, "wer": 0.1834, "cer": 0.07,
                                 "audioSecondsPerSecond": 40.0}


def test_other_jobs_samples_are_ignored() -> None:
    fields = progress.status_fields(exposition("other"), job="demo")
    assert fields == {}


def test_an_early_scrape_reports_only_what_exists() -> None:
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Gauge("speechtune_step", "s", registry=registry).set(3)
    fields = progress.status_fields(prometheus_client.generate_latest(registry).decode(), job="demo")
    assert fields == {"progress": {"step": 3}}


def test_finished_job_has_no_negative_eta() -> None:
    fields = progress.status_fields(exposition(step=1200, max_steps=1000), job="demo")
    assert fields["progress"]["etaSeconds"] == 0
    assert fields["progress"]["summary"] == "100% (1200/1000)"


def test_bleu_and_best_checkpoint_from_the_trainers_own_metrics() -> None:
    """The seam: the trainer's TrainingMetrics as exported, read by the operator's builder."""
    from speechtune.runtime import metrics as trainer_metrics

    exported = trainer_metrics.TrainingMetrics(job="demo", namespace="research", engine="nemo-canary")
    assert "bleu" not in progress.status_fields(exported.render(), job="demo").get("metrics", {})  # NaN: unknown
    assert "bestCheckpoint" not in progress.status_fields(exported.render(), job="demo")
    exported.val_bleu.set(0.314159)
    exported.best_checkpoint.info({"path": "/output/demo/run-1/checkpoints/canary--val_loss=0.41-step=400.ckpt"})
    fields = progress.status_fields(exported.render(), job="demo")
    assert fields["metrics"]["bleu"] == 0.3142
    assert fields["bestCheckpoint"] == "/output/demo/run-1/checkpoints/canary--val_loss=0.41-step=400.ckpt"
    other = progress.status_fields(exported.render(), job="someone-else")
    assert "bestCheckpoint" not in other


def test_a_best_checkpoint_path_with_control_characters_is_ignored() -> None:
    text = 'speechtune_best_checkpoint_info{finetunejob="demo",path="/output/a\\nb"} 1.0\n'
    assert progress.best_checkpoint(text, job="demo") is None
    long_path = "/output/" + "a" * 2000
    assert progress.best_checkpoint(f'speechtune_best_checkpoint_info{{path="{long_path}"}} 1.0\n') is None
