"""Tiny real training runs of the hf-ctc engine, driven through its Engine contract.

The pretrained MMS fixture (tests/pretrained/mms.py: mms-1b-all's layout, ~0.8 M
parameters, trained on en/de/fr speech) is first fine-tuned in full on synthetic Bengali
(no digits, no Latin letters: like MMS's Bengali vocabulary) and saved as the
"pretrained" Bengali model; adapters and LoRA runs then fine-tune it on Banglish (Bengali with
English words and digit strings), growing its vocabulary. Learning is judged on the
training utterances (48 of them: a model this small must at least fit what it heard;
held-out Banglish with random digit strings is beyond it). Assertions are about learning,
files and steps, never about time."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import jiwer
import peft
import pytest
import safetensors.torch
import torch
import yaml
from transformers import Wav2Vec2ForCTC

from speechtune import spec as specs
from speechtune.spec import typed
from speechtune.data import normalize, synth
from speechtune.engines import base
from speechtune.engines.hf_ctc import HFCTCEngine, checkpoints, modelling
from speechtune.engines.kit import checkpoints as kit_checkpoints
from speechtune.runtime import evaluation, scoring, session, volumes

pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[2]
BANGLISH = normalize.get("banglish")
# The MMS fixture keeps mms-1b-all's dropouts, layer drop and time masking (0.05 each):
# off here, so resumed and uninterrupted runs match exactly and DDP ranks run the same
# layers (a layer skipped on one rank only leaves its gradients out of the all-reduce).
NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "final_dropout": 0.0,
              "feat_proj_dropout": 0.0, "layerdrop": 0.0, "mask_time_prob": 0.0}


class RecordingReporter:
    """The runtime's Reporter, reduced to lists; optionally stops the run or fails a step."""

    def __init__(self, *, stop: threading.Event | None = None, stop_at: int | None = None, fail_at: int | None = None):
        self.steps: list[dict[str, Any]] = []
        self.validations: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.max_steps: int | None = None
        self._stop, self._stop_at, self._fail_at = stop, stop_at, fail_at

    def set_max_steps(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def train_step(self, **values: Any) -> None:
        if values["step"] == self._fail_at:
            raise base.NonFiniteLoss(f"loss is nan at step {values['step']}")
        self.steps.append(values)
        if values["step"] == self._stop_at and self._stop is not None:
            self._stop.set()  # what the runtime's SIGTERM handler does

    def validation(self, **values: Any) -> base.Validation:
        scores = scoring.validation(values["hypotheses"], normalize.get("banglish"), val_loss=values["val_loss"])
        self.validations.append({"step": values["step"], **scores.metrics()})
        return scores

    def log(self, message: str) -> None:
        self.lines.append(message)


def job_spec(
    *, method: str, model_path: Path, steps: int, lr: float, val_every: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "engine": "hf-ctc",
        "model": {"path": str(model_path)},
        "data": {"volume": {"claimName": "d"}, "train": "train.json", "validation": "valid.json",
                 "targetLang": "bn", "sourceLang": "bn", "normalization": "banglish"},
        "training": {
            "maxSteps": steps, "learningRate": lr, "warmupSteps": 5, "batchSize": 8, "gradientClipVal": 1.0,
            "valCheckInterval": val_every or steps, "seed": 3, "precision": "fp32",
            "peft": {"method": method, "r": 8, "alpha": 16, "dropout": 0.0},
            "overrides": {"modelConfig": NO_DROPOUT, **(overrides or {})},
        },
        "output": {"volume": {"claimName": "r"}, "saveTopK": 2, "resume": True},
    }


def context(spec: Mapping[str, Any] | specs.FinetuneSpec, data: Path, run_dir: Path, reporter: RecordingReporter,
            stop: threading.Event | None = None) -> base.RunContext:
    parsed = spec if isinstance(spec, specs.FinetuneSpec) else specs.parse(spec)
    return base.RunContext(
        name="hf-test", namespace="default", spec=parsed,
        data=base.DataPaths(root=data, train=data / "train.json", validation=data / "valid.json", test=data / "test.json"),
        model_dir=None, run_dir=run_dir, checkpoint_dir=run_dir / "checkpoints", max_steps=parsed.training.max_steps,
        resume=True, device="cpu", world_size=1, rank=0, stop=stop or threading.Event(), reporter=reporter,
    )


def cer_of(hypotheses: list[base.Hypothesis]) -> float:
    """CER as the runtime scores it: the job's normaliser on both sides."""
    return float(jiwer.cer([BANGLISH(h.reference) for h in hypotheses], [BANGLISH(h.hypothesis) for h in hypotheses]))


@dataclasses.dataclass(frozen=True)
class Pretrained:
    folder: Path
    result: base.TrainResult
    reporter: RecordingReporter


@pytest.fixture(scope="module")
def bengali(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bengali")
    synth.synthesize(folder, n=60, languages=["bn"], domain="generic", seed=11)
    return folder


@pytest.fixture(scope="module")
def banglish(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("banglish")
    synth.synthesize(folder, n=60, languages=["bn"], domain="banglish", seed=12)
    return folder


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, bengali: Path, pretrained_mms: Any) -> Pretrained:
    """A Bengali MMS: full fine-tuning (feature encoder included) of the MMS fixture on
    Bengali only; its export is the 'pretrained' folder of the other tests."""
    root = tmp_path_factory.mktemp("pretrain")
    spec = job_spec(method="none", model_path=pretrained_mms.model, steps=300, lr=5e-3,
                    overrides={"freezeFeatureEncoder": False})
    reporter = RecordingReporter()
    ctx = context(spec, bengali, root / "run", reporter)
    engine = HFCTCEngine()
    engine.prepare(ctx)
    result = engine.train(ctx)
    return Pretrained(engine.export(ctx), result, reporter)


def test_full_finetuning_learns_bengali(pretrained: Pretrained) -> None:
    assert pretrained.result.steps == 300
    losses = [s["loss"] for s in pretrained.reporter.steps]
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[5:25]) / 20
    assert pretrained.reporter.validations[-1]["cer"] < 0.9
    assert all(s["audio_seconds"] > 0 and 0 <= s["padding_ratio"] < 1 for s in pretrained.reporter.steps)
    vocab = json.loads((pretrained.folder / "vocab.json").read_text(encoding="utf-8"))
    assert not any(token.isdigit() or token.isascii() and token.isalpha() for token in vocab)  # Bengali only


@pytest.fixture(scope="module")
def adapters_run(tmp_path_factory: pytest.TempPathFactory, pretrained: Pretrained, banglish: Path) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("adapters")
    reporter = RecordingReporter()
    ctx = context(job_spec(method="adapters", model_path=pretrained.folder, steps=150, lr=3e-2, val_every=75),
                  banglish, run_dir, reporter)
    engine = HFCTCEngine()
    engine.prepare(ctx)
    before = engine.evaluate(ctx, ctx.data.train)
    result = engine.train(ctx)
    export = engine.export(ctx)
    after = engine.evaluate(ctx, ctx.data.train)
    return {"ctx": ctx, "engine": engine, "before": before, "after": after, "result": result, "export": export,
            "reporter": reporter}


def test_adapters_lower_cer_and_emit_added_digits(adapters_run: dict[str, Any]) -> None:
    result, before, after = adapters_run["result"], adapters_run["before"], adapters_run["after"]
    assert result.extra["mode"] == "adapters"
    assert set("0123456789") <= set(result.extra["added_characters"])
    assert result.extra["trainable_parameters"] < 0.1 * result.extra["total_parameters"]
    print(f"training-set CER {cer_of(before):.3f} -> {cer_of(after):.3f}")  # shown with -rA
    assert cer_of(after) < cer_of(before) - 0.08, (cer_of(before), cer_of(after))
    assert any(c.isdigit() for h in after for c in h.hypothesis)  # the grown head's new rows are used
    assert [v["step"] for v in adapters_run["reporter"].validations] == [75, 150]


def test_adapter_file_reloads_with_target_lang(adapters_run: dict[str, Any]) -> None:
    export: Path = adapters_run["export"]
    adapter = safetensors.torch.load_file(str(export / "adapter.ben.safetensors"))
    assert all(".adapter_layer." in k or k.startswith("lm_head.") for k in adapter)
    reloaded = Wav2Vec2ForCTC.from_pretrained(str(export), target_lang="ben", ignore_mismatched_sizes=True).eval()
    assert reloaded.target_lang == "ben"
    trained = adapters_run["engine"]._loop.model.eval()
    audio = torch.randn(1, 16000)
    with torch.no_grad():
        assert torch.allclose(reloaded(audio).logits, trained(audio).logits, atol=1e-5)
    # Checkpoints hold the trainable weights only: adapters and head, not the whole model.
    newest = saved(adapters_run["ctx"].checkpoint_dir)[-1]
    assert set(torch.load(newest / checkpoints.WEIGHTS, weights_only=True)) == set(adapter)


def test_adapters_export_alone_decodes_like_the_run(adapters_run: dict[str, Any], banglish: Path, tmp_path: Path) -> None:
    ctx = adapters_run["ctx"]
    again = evaluation_only(adapters_run["export"], ctx.spec, banglish, tmp_path / "eval")
    assert [h.hypothesis for h in again] == [h.hypothesis for h in adapters_run["after"]]
    assert not (tmp_path / "eval" / "tokenizer").exists()  # no vocabulary was rebuilt


def test_lora_lowers_cer_and_saves_head_with_adapter(tmp_path: Path, pretrained: Pretrained, banglish: Path) -> None:
    reporter = RecordingReporter()
    ctx = context(job_spec(method="lora", model_path=pretrained.folder, steps=250, lr=3e-2), banglish, tmp_path, reporter)
    engine = HFCTCEngine()
    engine.prepare(ctx)
    before = engine.evaluate(ctx, ctx.data.train)
    result = engine.train(ctx)
    adapted = engine._loop.model  # the peft model, before export merges it
    audio = torch.randn(1, 16000)
    with torch.no_grad():
        adapted_logits = adapted.eval()(input_values=audio).logits
    export = engine.export(ctx)
    after = engine.evaluate(ctx, ctx.data.train)

    assert result.extra["mode"] == "lora"
    print(f"training-set CER {cer_of(before):.3f} -> {cer_of(after):.3f}")  # shown with -rA
    assert cer_of(after) < cer_of(before) - 0.08, (cer_of(before), cer_of(after))
    assert any(c.isdigit() for h in after for c in h.hypothesis)
    lora_weights = safetensors.torch.load_file(str(export / "lora" / "adapter_model.safetensors"))
    assert any("lora_A" in k and "q_proj" in k for k in lora_weights)
    assert any("lm_head" in k for k in lora_weights)  # the grown head travels with the adapter
    # The adapter loads onto the original base (head grown to the new vocabulary) ...
    vocab_size = result.extra["vocab_size"]
    base_model = Wav2Vec2ForCTC.from_pretrained(str(pretrained.folder), vocab_size=vocab_size, ignore_mismatched_sizes=True)
    reloaded = peft.PeftModel.from_pretrained(base_model, str(export / "lora")).eval()
    merged = Wav2Vec2ForCTC.from_pretrained(str(export)).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_values=audio).logits, adapted_logits, atol=1e-4)
        # ... and the merged folder decodes like the adapted model.
        assert torch.allclose(merged(audio).logits, adapted_logits, atol=1e-4)
    # `speechtune eval`'s path: the export alone decodes the training set as the run did.
    again = evaluation_only(export, ctx.spec, banglish, tmp_path / "eval")
    assert [h.hypothesis for h in again] == [h.hypothesis for h in after]


def test_killed_run_resumes_where_it_stopped(tmp_path: Path, pretrained: Pretrained, banglish: Path) -> None:
    """Stop (SIGTERM) at step 6 of 12, resume, and end with the very weights of an
    uninterrupted run: optimizer, scheduler, RNG and data position all came back."""
    spec = job_spec(method="adapters", model_path=pretrained.folder, steps=12, lr=1e-2, val_every=12)

    def trained(run_dir: Path, reporter: RecordingReporter, stop: threading.Event | None = None) -> tuple[base.TrainResult, dict[str, torch.Tensor]]:
        engine = HFCTCEngine()
        ctx = context(spec, banglish, run_dir, reporter, stop)
        engine.prepare(ctx)
        result = engine.train(ctx)
        return result, checkpoints.trainable_state(engine._loop.model)

    _, uninterrupted = trained(tmp_path / "straight", RecordingReporter())
    stop = threading.Event()
    first, _ = trained(tmp_path / "killed", RecordingReporter(stop=stop, stop_at=6), stop)
    assert first.stopped_early and first.steps == 6
    assert saved(tmp_path / "killed" / "checkpoints")[-1].name == "step-00000006"
    again = RecordingReporter()
    second, resumed = trained(tmp_path / "killed", again)
    assert not second.stopped_early and second.steps == 12
    assert [s["step"] for s in again.steps] == list(range(7, 13))
    assert again.max_steps == 12
    for name, tensor in uninterrupted.items():
        assert torch.allclose(resumed[name], tensor, atol=1e-6), name


def test_non_finite_loss_propagates_without_saving(tmp_path: Path, pretrained: Pretrained, banglish: Path) -> None:
    spec = job_spec(method="adapters", model_path=pretrained.folder, steps=8, lr=1e-2, val_every=2)
    engine = HFCTCEngine()
    ctx = context(spec, banglish, tmp_path, RecordingReporter(fail_at=3))
    engine.prepare(ctx)
    with pytest.raises(base.NonFiniteLoss):
        engine.train(ctx)
    assert [p.name for p in saved(ctx.checkpoint_dir)] == ["step-00000002"]


def test_tiny_mms_example_runs_with_speechtune_run(tmp_path: Path, banglish: Path) -> None:
    """examples/tiny-mms.yaml through the runtime, its base placed by `make tiny-mms-base`
    (the fixture builder's CLI); the run exports an adapter that loads with target_lang."""
    runs = tmp_path / "runs"
    make = subprocess.run(["make", "-s", "tiny-mms-base", f"RUNS={runs}"], cwd=REPO, capture_output=True, text=True,
                          check=False)
    assert make.returncode == 0, make.stdout + make.stderr
    assert (runs / "models" / "tiny-mms-base" / "adapter.eng.safetensors").exists()
    job = specs.load(REPO / "examples" / "tiny-mms.yaml")
    mounts = volumes.local_mounts(job.typed, {"demo-data": banglish, "demo-runs": runs})
    outcome = session.run(job, mounts, session.Options(max_steps=10, metrics_port=0))
    assert outcome.status == "succeeded", outcome.reason
    export = outcome.run_folder / "model"
    assert (export / "adapter.ben.safetensors").exists()
    Wav2Vec2ForCTC.from_pretrained(str(export), target_lang="ben", ignore_mismatched_sizes=True)
    assert outcome.metrics  # metrics.json facts were written
    card = json.loads((outcome.run_folder / "model_card.json").read_text())
    assert all(card[key] is not None for key in ("architecture", "tokenizer", "vocab_size", "parameters",
                                                 "trainable_parameters")), card
    assert card["trainable_parameters"] < card["parameters"]


@pytest.fixture(scope="module")
def lora_job_run(tmp_path_factory: pytest.TempPathFactory, pretrained: Pretrained, banglish: Path) -> session.Outcome:
    """examples/tiny-mms.yaml in LoRA mode on the Bengali-trained model, 10 steps through
    the runtime: a run folder whose export (merged model + lora/) already decodes words."""
    document = yaml.safe_load((REPO / "examples" / "tiny-mms.yaml").read_text())
    spec = document["spec"]
    spec["model"] = {"path": pretrained.folder.name, "volume": {"claimName": "models"}}
    spec["training"].update(peft={"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0}, learningRate=1e-2,
                            overrides={"modelConfig": NO_DROPOUT})
    job = specs.validate(document)
    runs = tmp_path_factory.mktemp("lora-job-runs")
    mounts = volumes.local_mounts(job.typed, {"demo-data": banglish, "demo-runs": runs,
                                             "models": pretrained.folder.parent})
    outcome = session.run(job, mounts, session.Options(max_steps=10, metrics_port=0))
    assert outcome.status == "succeeded", outcome.reason
    return outcome


def test_speechtune_eval_reproduces_the_runs_test_score(lora_job_run: session.Outcome, banglish: Path,
                                                        tmp_path: Path) -> None:
    """`speechtune eval --checkpoint RUN test.json` loads the exported folder (prepare with
    max_steps 0: no vocabulary, LoRA wrapping or optimizer) and scores the test split
    exactly as the run did after its export."""
    run_folder = lora_job_run.run_folder
    metrics = json.loads((run_folder / "metrics.json").read_text())
    manifest = banglish / "test.json"
    result = evaluation.evaluate(run_folder, manifest)
    assert result.decode_jsonl == run_folder / "model" / "decode.jsonl"
    decoded = [json.loads(line) for line in result.decode_jsonl.read_text().splitlines()]
    assert len(decoded) == len(manifest.read_text().splitlines())
    recorded = [json.loads(line) for line in (run_folder / "decode.jsonl").read_text().splitlines()]
    assert any(row["hyp"] for row in recorded), "the comparison needs a model that emits text"
    assert [row["hyp"] for row in decoded] == [row["hyp"] for row in recorded]
    assert set(result.scores) == set(metrics["test"])
    for language, score in result.scores.items():
        assert score.wer == pytest.approx(metrics["test"][language]["wer"], abs=1e-6), language
        assert score.cer == pytest.approx(metrics["test"][language]["cer"], abs=1e-6), language


def evaluation_only(export: Path, spec: specs.FinetuneSpec, data: Path, run_dir: Path) -> list[base.Hypothesis]:
    """What `speechtune eval` asks of the engine: prepare with max_steps 0 and model.path
    = the export, then decode the training manifest."""
    eval_spec = dataclasses.replace(spec, model=typed.Model(pretrained=None, path=str(export), volume=None, init=None))
    ctx = dataclasses.replace(context(eval_spec, data, run_dir, RecordingReporter()), max_steps=0)
    engine = HFCTCEngine()
    engine.prepare(ctx)
    return list(engine.evaluate(ctx, ctx.data.train))


def _ddp_rank(rank: int, port: int, spec: dict[str, Any], data: Path, run_dir: Path, out: Path) -> None:
    """One torchrun-like process of the DDP test (spawned: module level, picklable)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    ctx = dataclasses.replace(context(spec, data, run_dir, RecordingReporter()), world_size=2, rank=rank)
    engine = HFCTCEngine()
    engine.prepare(ctx)
    result = engine.train(ctx)
    state = checkpoints.trainable_state(modelling.unwrap_ddp(engine._loop.model))
    safetensors.torch.save_file(state, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({"steps": result.steps, "reported": len(ctx.reporter.steps)}))
    torch.distributed.destroy_process_group()


def test_two_process_ddp_keeps_ranks_in_step(tmp_path: Path, pretrained: Pretrained, banglish: Path) -> None:
    """torchrun's multi-GPU layout on the CPU (gloo): both ranks step together on their
    own half of the batches and end with identical weights; only rank 0 writes checkpoints."""
    spec = job_spec(method="lora", model_path=pretrained.folder, steps=4, lr=1e-2, val_every=2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_rank, args=(port, spec, banglish, tmp_path / "run", tmp_path), nprocs=2)
    rank0 = safetensors.torch.load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = safetensors.torch.load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == {"steps": 4, "reported": 4}
    assert [p.name for p in saved(tmp_path / "run" / "checkpoints")] == ["step-00000002", "step-00000004"]


def saved(checkpoint_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (read without touching the folder)."""
    return [c.path for c in kit_checkpoints.Store(checkpoint_dir, keep_top_k=1, writer=False).listed()]


@pytest.fixture(scope="module", autouse=True)
def _single_thread() -> Iterator[None]:
    """Two shared cores: one intra-op thread keeps runs steady and results deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
