"""The shared training policies: one seed default (the CRD's), one precision mapping, one
best-checkpoint key, one scoring of validation hypotheses."""

from __future__ import annotations

import math

import pytest
import torch

from speechtune import spec as specs
from speechtune.data import normalize
from speechtune.engines import base
from speechtune.engines.kit import policies, precision
from speechtune.runtime import scoring
from typed_specs import typed


def test_the_seed_every_engine_reads_defaults_to_the_crds() -> None:
    """Engines read ctx.spec.training.seed (once 1234 in one engine and 0 in another)."""
    crd = specs.crd_schema()["properties"]["spec"]["properties"]["training"]["properties"]["seed"]["default"]
    assert typed({}).training.seed == crd == 1234
    assert typed({"training": {"seed": 7}}).training.seed == 7


@pytest.mark.parametrize(("requested", "device", "name", "dtype", "lightning", "scaler"), [
    ("fp32", "cpu", "fp32", None, "32-true", False),
    ("bf16", "cpu", "fp32", None, "32-true", False),  # the same YAML runs on a laptop
    ("bf16", "cuda:0", "bf16", torch.bfloat16, "bf16-mixed", False),
    ("fp16", "cuda:1", "fp16", torch.float16, "16-mixed", True),
])
def test_precision_is_one_mapping_for_every_engine(requested: str, device: str, name: str,
                                                    dtype: torch.dtype | None, lightning: str, scaler: bool) -> None:
    notes: list[str] = []
    chosen = policies.precision_for(requested, device, notes.append)
    assert (chosen.name, chosen.dtype, chosen.lightning, chosen.needs_scaler) == (name, dtype, lightning, scaler)
    assert precision.lightning(requested, device) == lightning  # what the NeMo config gets
    assert bool(notes) == (name != requested)


def test_agreement_is_a_no_op_on_one_process() -> None:
    assert policies.agree(1.5, False, world_size=1, device="cpu") == (1.5, False)


def test_best_key_is_declared_or_wer_or_cer_for_unspaced_languages() -> None:
    assert policies.best_key(typed({}), characters=False) == "wer"
    assert policies.best_key(typed({}), characters=True) == "cer"
    assert policies.best_key(typed({"data": {"targetLang": "ja"}}), characters=False) == "cer"
    assert policies.best_key(typed({"data": {"targetLang": "zh-CN"}, "output": {"bestBy": "val_loss"}}),
                             characters=True) == "val_loss"


def test_validation_hypotheses_are_scored_by_the_runtime_with_bleu_for_translation_rows() -> None:
    rows = [
        base.Hypothesis("1", "Climb to FL 350", "climb to fl three fifty", language="en"),
        base.Hypothesis("2", "Descend to 4000", "descend to 4000", language="en"),
        base.Hypothesis("3", "steigen sie auf flugfläche drei", "steigen sie auf flugfläche drei", language="de",
                        source_language="en"),
    ]
    scores = scoring.validation(rows, normalize.get("none"), val_loss=2.0)
    assert scores.val_loss == 2.0 and scores.bleu == pytest.approx(1.0)
    assert scores.wer == pytest.approx(5 / 7)  # the translation row is not in the WER
    lowered = scoring.validation(rows[:2], normalize.get("atc"), val_loss=None)
    assert lowered.wer is not None and lowered.wer < scores.wer and lowered.bleu is None
    assert scoring.validation([], normalize.get("none"), val_loss=math.nan).wer is None


def test_throughput_is_wall_clock_between_step_reports_without_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    from speechtune.runtime import console, reporter

    clock = iter([10.0, 10.0, 12.0, 12.0, 100.0, 100.0, 104.0, 104.0, 104.0])
    monkeypatch.setattr(reporter.time, "monotonic", lambda: next(clock))
    quiet = console.Console(open("/dev/null", "w"), live=False)
    runs = reporter.RunReporter(metrics=None, log_file=None, console=quiet)
    runs.train_step(step=1, loss=1.0, audio_seconds=50.0)  # at 10: the first step only starts the clock
    runs.train_step(step=2, loss=1.0, audio_seconds=20.0)  # at 12: 2 s
    runs.validation(step=2, val_loss=1.0, hypotheses=[])  # ends at 100: not a step
    runs.train_step(step=3, loss=1.0, audio_seconds=20.0)  # at 104: 4 s
    assert runs.summary.train_seconds == pytest.approx(6.0)
    assert runs.summary.audio_seconds_per_second == pytest.approx(40.0 / 6.0)


@pytest.mark.parametrize("engine", ["speechbrain_ctc", "hf_ctc"])
def test_engine_and_runtime_load_without_the_nemo_only_packages(engine: str) -> None:
    """The speechbrain and hf images ship neither Lightning nor sacrebleu (nor, for
    speechbrain, safetensors): the engine, the kit and the runtime must import without them."""
    import subprocess
    import sys

    blocked = ["lightning", "sacrebleu", "nemo"] + (["safetensors"] if engine == "speechbrain_ctc" else [])
    code = (f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
            f"import speechtune.engines.{engine}.engine, speechtune.runtime.session, speechtune.engines.kit.checkpoints")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
