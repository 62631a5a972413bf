"""speechbrain-ctc specifics on tiny models: LoRA through speechbrain.nnet.adapters, starting
from an exported checkpoint folder (model.path, init.exclude), beam decoding, SentencePiece."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from speechtune import engines, spec  # noqa: E402
from speechtune.data import synth  # noqa: E402
from speechtune.engines import base  # noqa: E402
from speechtune.runtime import console, reporter, session, volumes  # noqa: E402

pytestmark = pytest.mark.training

TINY = {"num_layers": 1, "d_model": 32, "nhead": 2, "d_ffn": 64, "kernel_size": 7, "frontend_channels": 8,
        "n_mels": 40}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    paths = synth.synthesize(tmp_path_factory.mktemp("atc"), n=12, languages=["en"], domain="atc", seed=5)
    return paths["train"].parent


def document(*, steps: int = 3, overrides: dict[str, Any] | None = None, **spec_extra: Any) -> dict[str, Any]:
    training = {"maxSteps": steps, "learningRate": 1e-3, "batchDuration": 20, "valCheckInterval": steps,
                "limitValBatches": 1, "overrides": {**TINY, **(overrides or {})}}
    training.update(spec_extra.pop("training", {}))
    return {"apiVersion": "speechtune.dev/v1alpha1", "kind": "FinetuneJob", "metadata": {"name": "sb"},
            "spec": {"engine": "speechbrain-ctc",
                     "data": {"volume": {"claimName": "d"}, "train": "train.json", "validation": "valid.json",
                              "test": "test.json", "normalization": "atc"},
                     "training": training, "output": {"volume": {"claimName": "r"}, "resume": False},
                     **spec_extra}}


def run(doc: dict[str, Any], data: Path, runs: Path) -> session.Outcome:
    job = spec.validate(doc)
    quiet = console.Console(sys.stderr, live=False)
    outcome = session.run(job, volumes.local_mounts(job.typed, {"d": data, "r": runs}),
                          session.Options(metrics_port=0, console=quiet))
    assert outcome.status == "succeeded", outcome.reason
    return outcome


def test_lora_trains_only_the_adapters_and_the_head(data: Path, tmp_path: Path) -> None:
    outcome = run(document(training={"peft": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.1}}),
                  data, tmp_path)
    facts = outcome.metrics["engine_facts"]
    assert 0 < facts["trainable_parameters"] < facts["parameters"] / 2
    state = torch.load(outcome.run_folder / "model" / "model.ckpt", weights_only=True)
    assert any("adapter_down_proj" in name for name in state)
    card = json.loads((outcome.run_folder / "model_card.json").read_text())
    assert card["peft"]["method"] == "lora" and card["peft"]["r"] == 4


def test_starts_from_an_exported_model_and_decodes_with_beam_search(data: Path, tmp_path: Path) -> None:
    first = run(document(), data, tmp_path / "first")
    exported = first.run_folder / "model"
    doc = document(overrides={"beam_size": 3, "d_model": 64, "nhead": 4},  # architecture comes from the export
                   model={"path": str(exported), "init": {"exclude": ["ctc_head"]}})
    job = spec.validate(doc)
    engine = engines.load("speechbrain-ctc")
    run_dir = tmp_path / "second"
    ctx = base.RunContext(
        name="sb", namespace="default", spec=job.typed,
        data=base.DataPaths(root=data, train=data / "train.json", validation=data / "valid.json",
                            test=data / "test.json"),
        model_dir=None, run_dir=run_dir, checkpoint_dir=run_dir / "checkpoints", max_steps=0, resume=False,
        device="cpu", world_size=1, rank=0, stop=threading.Event(),
        reporter=reporter.RunReporter(metrics=None, log_file=None, console=console.Console(sys.stderr, live=False)))
    engine.prepare(ctx)
    saved = torch.load(exported / "model.ckpt", weights_only=True)
    loaded = engine.net.state_dict()  # type: ignore[attr-defined]
    encoder = [n for n in saved if n.startswith("encoder.")]
    assert encoder and all(torch.equal(saved[n], loaded[n]) for n in encoder)
    assert not torch.equal(saved["ctc_head.weight"], loaded["ctc_head.weight"])  # excluded: fresh head
    hypotheses = engine.evaluate(ctx, data / "test.json")
    expected = (data / "test.json").read_text().count("\n")
    assert len(hypotheses) == expected and all(isinstance(h.hypothesis, str) for h in hypotheses)


def test_sentencepiece_tokenizer_is_trained_and_saved(data: Path, tmp_path: Path) -> None:
    outcome = run(document(overrides={"tokenizer": "spm", "spm_vocab_size": 40}), data, tmp_path)
    assert outcome.metrics["engine_facts"]["tokenizer"] == "spm"
    assert (outcome.run_folder / "model" / "spm.model").exists()


def test_an_engine_error_names_the_field_and_is_kept_in_metrics_json(data: Path, tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    job = spec.validate(document(model={"path": str(empty)}))
    mounts = volumes.local_mounts(job.typed, {"d": data, "r": tmp_path / "runs"})
    with pytest.raises(ValueError, match="spec.model.path"):
        session.run(job, mounts, session.Options(metrics_port=0, console=console.Console(sys.stderr, live=False)))
    (metrics_file,) = (tmp_path / "runs" / "sb").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["status"] == "failed" and "spec.model.path" in metrics["reason"]
