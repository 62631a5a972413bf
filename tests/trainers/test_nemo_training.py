"""A tiny canary2 model (2 encoder + 2 decoder layers, tokenizers built locally: special +
en + de) trained on synthesised en and de speech with an en->de translation slice.

One module-scoped run is shared: it is stopped by a simulated SIGTERM at step 20, resumed
from its checkpoint to step 45, and then serves the export, averaging, Approach A and CLI
tests. Assertions are about learning and files, never about speed."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from speechtune import cli
from speechtune import spec as specs
from speechtune.data import synth
from speechtune.engines import base
from speechtune.engines.nemo_canary import NemoCanaryEngine
from speechtune.runtime import evaluation

pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[2]
TINY_CANARY = REPO / "examples" / "tiny-canary.yaml"
STOP_AT, MAX_STEPS, VAL_EVERY = 20, 45, 15
EXCLUDED = ["transf_decoder._embedding.token_embedding", "log_softmax.mlp.layer0"]


class RecordingReporter:
    """The runtime's Reporter, in-test: records everything; sets `stop` at a given step
    the way the SIGTERM handler would."""

    def __init__(self, stop: threading.Event, stop_at: int | None = None) -> None:
        self.stop, self.stop_at = stop, stop_at
        self.steps: list[dict[str, Any]] = []
        self.validations: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.max_steps: int | None = None

    def set_max_steps(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def train_step(self, **values: Any) -> None:
        self.steps.append(values)
        if self.stop_at is not None and values["step"] >= self.stop_at:
            self.stop.set()

    def validation(self, **values: Any) -> None:
        self.validations.append(values)

    def log(self, message: str) -> None:
        self.lines.append(message)


def tiny_spec(data: dict[str, Any] | None = None, model: dict[str, Any] | None = None,
              max_steps: int = MAX_STEPS) -> dict[str, Any]:
    """examples/tiny-canary.yaml's spec, shortened for the test budget."""
    spec = yaml.safe_load(TINY_CANARY.read_text())["spec"]
    spec["training"].update(maxSteps=max_steps, valCheckInterval=VAL_EVERY, batchDuration=20, limitValBatches=2)
    spec["training"]["overrides"]["lang_tokenizers.vocab_size"] = 128
    spec["data"].update(data or {})
    if model:
        spec["model"] = model
    return spec


def make_context(run_dir: Path, data_dir: Path, spec: dict[str, Any], *, max_steps: int,
                 stop_at: int | None = None, model_dir: Path | None = None,
                 resume: bool = True) -> base.RunContext:
    stop = threading.Event()
    return base.RunContext(
        name="tiny-canary", namespace="default", spec=specs.parse(spec),
        data=base.DataPaths(root=data_dir, train=data_dir / spec["data"]["train"],
                            validation=data_dir / spec["data"]["validation"],
                            test=data_dir / spec["data"]["test"] if spec["data"].get("test") else None),
        model_dir=model_dir, run_dir=run_dir, checkpoint_dir=run_dir / "checkpoints", max_steps=max_steps,
        resume=resume, device="cpu", world_size=1, rank=0, stop=stop,
        reporter=RecordingReporter(stop, stop_at))


@dataclasses.dataclass
class Trained:
    data_dir: Path
    run_dir: Path
    first: base.TrainResult
    first_reporter: RecordingReporter
    resumed: base.TrainResult
    resumed_reporter: RecordingReporter
    engine: NemoCanaryEngine
    ctx: base.RunContext
    export: Path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("canary-data")
    synth.synthesize(root, n=90, languages=["en", "de"], domain="generic", seed=7, translate_to="de")
    # The translation rows again as a weighted mix manifest (spec.data.mix), as a user
    # would add an AST set to keep that task alive while fine-tuning on ASR.
    rows = [json.loads(line) for line in (root / "train.json").read_text().splitlines()]
    ast = [r for r in rows if r["source_lang"] != r["target_lang"]]
    assert ast, "synth must deliver en->de rows"
    (root / "ast_mix.json").write_text("".join(json.dumps(r) + "\n" for r in ast))
    return root


@pytest.fixture(scope="module")
def trained(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    run_dir = tmp_path_factory.mktemp("canary-run")
    spec = tiny_spec(data={"mix": [{"manifest": "ast_mix.json", "weight": 0.3}]})
    # Run 1: "SIGTERM" at step 20 -> a checkpoint, and train() returns early.
    first_ctx = make_context(run_dir, data_dir, spec, max_steps=MAX_STEPS, stop_at=STOP_AT)
    first_engine = NemoCanaryEngine()
    first_engine.prepare(first_ctx)
    first = first_engine.train(first_ctx)
    del first_engine
    # Run 2: a new process would do the same: resume from the newest checkpoint.
    ctx = make_context(run_dir, data_dir, spec, max_steps=MAX_STEPS)
    engine = NemoCanaryEngine()
    engine.prepare(ctx)
    resumed = engine.train(ctx)
    export = engine.export(ctx)
    assert isinstance(first_ctx.reporter, RecordingReporter) and isinstance(ctx.reporter, RecordingReporter)
    yield Trained(data_dir, run_dir, first, first_ctx.reporter, resumed, ctx.reporter, engine, ctx, export)


def test_sigterm_stops_with_a_checkpoint(trained: Trained) -> None:
    assert trained.first.stopped_early
    assert trained.first.steps == STOP_AT
    assert list((trained.run_dir / "checkpoints").glob("*last.ckpt"))


def test_killed_run_resumes_where_it_stopped(trained: Trained) -> None:
    steps = [s["step"] for s in trained.resumed_reporter.steps]
    assert steps[0] == STOP_AT + 1, "resumed run must continue after the checkpointed step"
    assert trained.resumed.steps == MAX_STEPS and not trained.resumed.stopped_early


def test_validation_loss_falls_and_wer_bleu_are_reported(trained: Trained) -> None:
    validations = trained.first_reporter.validations + trained.resumed_reporter.validations
    # Lightning also validates when a stop is requested (step 20), so that checkpoint has a val_loss.
    assert [v["step"] for v in validations] == [15, STOP_AT, 30, 45]
    losses = [v["val_loss"] for v in validations]
    assert losses[-1] < losses[0], losses
    assert all(v["wer"] is not None and v["bleu"] is not None for v in validations)
    test = trained.resumed.extra["test"]  # the test_ds pass after training
    assert {"test_loss", "test_wer", "test_bleu"} <= set(test)


def test_data_mix_reaches_the_training_loader(trained: Trained) -> None:
    assert trained.engine.config is not None
    mix = trained.engine.config["model"]["train_ds"]["input_cfg"]
    assert [(Path(m["manifest_filepath"]).name, m["weight"]) for m in mix] == [("train.json", 1.0), ("ast_mix.json", 0.3)]


def test_prompt_slots_itn_timestamp_context_have_tokens(trained: Trained) -> None:
    """The canary2 special vocabulary built from the data covers every prompt slot."""
    from nemo.collections.common.prompts.formatter import PromptFormatter

    from speechtune.engines.nemo_canary import bins

    tokenizer = bins.load_canary_tokenizer(trained.run_dir / "nemo" / "tokenizers")
    prompt = PromptFormatter.resolve("canary2")(tokenizer)
    slots = {"source_lang": "en", "target_lang": "de", "pnc": "no", "itn": "yes", "timestamp": "yes",
             "diarize": "no", "emotion": "<|emo:undefined|>", "decodercontext": ""}
    ids = prompt.encode_dialog([{"role": "user", "slots": slots}])["input_ids"].tolist()
    pieces = [tokenizer.ids_to_tokens([i])[0] for i in ids]
    for token in ("<|startofcontext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|nopnc|>", "<|itn|>",
                  "<|timestamp|>", "<|nodiarize|>"):
        assert token in pieces, (token, pieces)


def test_non_finite_loss_stops_without_a_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    class Exploding(RecordingReporter):
        def train_step(self, **values: Any) -> None:
            if values["step"] >= 2:
                raise base.NonFiniteLoss(f"step {values['step']}: loss is nan")
            super().train_step(**values)

    spec = tiny_spec(max_steps=5)
    ctx = make_context(tmp_path / "run", data_dir, spec, max_steps=5)
    ctx = dataclasses.replace(ctx, reporter=Exploding(ctx.stop))
    engine = NemoCanaryEngine()
    engine.prepare(ctx)
    with pytest.raises(base.NonFiniteLoss, match="step 2"):
        engine.train(ctx)
    assert not list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))


def test_train_steps_report_audio_seconds_and_learning_rate(trained: Trained) -> None:
    step = trained.resumed_reporter.steps[-1]
    assert step["audio_seconds"] > 0 and step["samples"] > 0
    assert step["learning_rate"] is not None and step["learning_rate"] > 0
    assert 0 <= step["padding_ratio"] < 1


def test_export_writes_a_loadable_nemo_that_transcribes(trained: Trained) -> None:
    from nemo.collections.asr.models import EncDecMultiTaskModel

    assert trained.export.is_file() and trained.export.suffix == ".nemo"
    model = EncDecMultiTaskModel.restore_from(str(trained.export), map_location="cpu")
    assert model.prompt_format == "canary2"
    hypotheses = trained.engine.evaluate(trained.ctx, trained.data_dir / "test.json")
    rows = (trained.data_dir / "test.json").read_text().splitlines()
    assert len(hypotheses) == len(rows)
    assert {h.language for h in hypotheses} == {"en", "de"}


def test_export_command_converts_and_averages_checkpoints(trained: Trained, tmp_path: Path) -> None:
    import torch
    from nemo.collections.asr.models import EncDecMultiTaskModel

    checkpoints = trained.run_dir / "checkpoints"
    best = sorted(p for p in checkpoints.glob("*.ckpt") if not p.stem.endswith("-last"))[0]
    assert cli.main(["export", str(best), "-o", str(tmp_path / "one.nemo")]) == 0
    assert cli.main(["export", str(trained.run_dir), "--average-top-k", "2", "-o", str(tmp_path / "avg.nemo")]) == 0
    one = EncDecMultiTaskModel.restore_from(str(tmp_path / "one.nemo"), map_location="cpu")
    averaged = EncDecMultiTaskModel.restore_from(str(tmp_path / "avg.nemo"), map_location="cpu")
    states = [torch.load(str(p), map_location="cpu", weights_only=False)["state_dict"]
              for p in sorted(checkpoints.glob("*.ckpt")) if not p.stem.endswith("-last")]
    key = "encoder.layers.0.feed_forward1.linear1.weight"
    assert len(states) == 2  # saveTopK: 2
    assert torch.allclose(averaged.state_dict()[key], (states[0][key] + states[1][key]) / 2, atol=1e-6)
    assert one.state_dict()[key].shape == averaged.state_dict()[key].shape


def test_approach_a_from_a_saved_nemo_with_exclude(trained: Trained, tmp_path: Path) -> None:
    """The exported tiny model stands in for a pretrained Canary on the model volume."""
    from nemo.collections.asr.models import EncDecMultiTaskModel

    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(trained.export, models / "tiny.nemo")
    source = EncDecMultiTaskModel.restore_from(str(models / "tiny.nemo"), map_location="cpu").state_dict()
    spec = tiny_spec(data={"test": None}, model={"path": "tiny.nemo", "init": {"exclude": EXCLUDED}}, max_steps=3)
    # Approach A keeps the pretrained architecture: no from-scratch overrides.
    spec["training"]["overrides"] = {"model.decoding.beam.max_generation_delta": 10}
    ctx = make_context(tmp_path / "run", trained.data_dir, spec, max_steps=3, model_dir=models)
    engine = NemoCanaryEngine()
    engine.prepare(ctx)
    assert engine.config is not None
    assert isinstance(ctx.reporter, RecordingReporter)
    assert any("initialised from the starting model" in line and "left out by spec.model.init" in line
               for line in ctx.reporter.lines), ctx.reporter.lines
    tokenizer_langs = engine.config["model"]["tokenizer"]["langs"]
    assert set(tokenizer_langs) == {"spl_tokens", "en", "de"}
    assert all(Path(t["dir"]).is_relative_to(ctx.run_dir) for t in tokenizer_langs.values())
    state = engine.model.state_dict()
    encoder_key = "encoder.layers.1.self_attn.linear_q.weight"
    embedding_key = "transf_decoder._embedding.token_embedding.weight"
    assert (state[encoder_key] == source[encoder_key]).all(), "included weights come from the .nemo"
    assert not (state[embedding_key] == source[embedding_key]).all(), "excluded weights are re-initialised"
    result = engine.train(ctx)
    assert result.steps == 3


def _copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite(path: Path, change: Any) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    change(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_preflight_refuses_language_without_tokenizer(data_dir: Path, tmp_path: Path) -> None:
    data = _copy_data(data_dir, tmp_path / "data")

    def french(rows: list[dict[str, Any]]) -> None:
        rows[1]["target_lang"] = "fr"

    _rewrite(data / "valid.json", french)
    ctx = make_context(tmp_path / "run", data, tiny_spec(), max_steps=5)
    engine = NemoCanaryEngine()
    with pytest.raises(ValueError, match=r"valid\.json:2: target_lang 'fr' has no tokenizer"):
        engine.prepare(ctx)
    assert engine.trainer is None and not (ctx.run_dir / "checkpoints").exists()


def test_preflight_refuses_missing_source_lang(data_dir: Path, tmp_path: Path) -> None:
    data = _copy_data(data_dir, tmp_path / "data")

    def no_source(rows: list[dict[str, Any]]) -> None:
        del rows[2]["source_lang"]

    _rewrite(data / "train.json", no_source)
    ctx = make_context(tmp_path / "run", data, tiny_spec(), max_steps=5)
    engine = NemoCanaryEngine()
    with pytest.raises(ValueError, match=r"train\.json:3: missing source_lang"):
        engine.prepare(ctx)
    assert engine.trainer is None and not (ctx.run_dir / "nemo" / "tokenizers").exists()


def test_data_bins_command_on_the_run_tokenizers(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "bins.yaml"
    assert cli.main(["data", "bins", str(trained.data_dir / "train.json"), "--tokenizers",
                     str(trained.run_dir / "nemo" / "tokenizers"), "-b", "3", "-s", "2",
                     "--batch-duration", "20", "-o", str(out)]) == 0
    overrides = yaml.safe_load(out.read_text())["overrides"]
    bins = overrides["model.train_ds.bucket_duration_bins"]
    assert 3 <= len(bins) <= 6 and len(overrides["model.train_ds.bucket_batch_size"]) == len(bins)
    assert all(tokens > 10 for _, tokens in bins)  # prompt (10 tokens) + transcript


@pytest.fixture(scope="module")
def cli_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """`speechtune run examples/tiny-canary.yaml` for 4 steps: (exit code, run folder)."""
    runs = tmp_path_factory.mktemp("canary-runs")
    rc = cli.main(["run", str(TINY_CANARY), "--volume", f"demo-data={data_dir}",
                   "--volume", f"demo-runs={runs}", "--max-steps", "4", "--metrics-port", "0"])
    (metrics_file,) = runs.glob("tiny-canary/*/metrics.json")
    return rc, metrics_file.parent


def test_speechtune_run_tiny_canary_end_to_end(cli_run: tuple[int, Path]) -> None:
    rc, run_folder = cli_run
    assert rc == 0
    metrics = json.loads((run_folder / "metrics.json").read_text())
    assert metrics["status"] == "succeeded" and metrics["steps"] == 4
    assert metrics["wer"] is not None
    assert Path(metrics["model_export"]).is_file()


def test_speechtune_eval_reproduces_the_runs_test_score(cli_run: tuple[int, Path], data_dir: Path) -> None:
    """`speechtune eval --checkpoint RUN test.json` restores the exported .nemo (prepare with
    max_steps 0: no trainer) and scores the test split as the run itself did."""
    _, run_folder = cli_run
    metrics = json.loads((run_folder / "metrics.json").read_text())
    manifest = data_dir / "test.json"
    recorded = (run_folder / "decode.jsonl").read_text()
    result = evaluation.evaluate(run_folder, manifest)
    # Beside the .nemo, leaving the run's own decode.jsonl as the run wrote it.
    assert result.decode_jsonl == run_folder / "model.decode.jsonl"
    assert (run_folder / "decode.jsonl").read_text() == recorded
    decoded = [json.loads(line) for line in result.decode_jsonl.read_text().splitlines()]
    assert len(decoded) == len(manifest.read_text().splitlines())
    assert [row["hyp"] for row in decoded] == [json.loads(line)["hyp"] for line in recorded.splitlines()]
    assert set(result.scores) == set(metrics["test"])
    for language, score in result.scores.items():
        assert score.wer == pytest.approx(metrics["test"][language]["wer"], abs=1e-6), language
        assert score.cer == pytest.approx(metrics["test"][language]["cer"], abs=1e-6), language


def test_evaluation_needs_a_nemo_file(cli_run: tuple[int, Path], data_dir: Path) -> None:
    _, run_folder = cli_run
    spec = {**tiny_spec(), "model": {"path": str(run_folder / "checkpoints")}}
    ctx = make_context(run_folder / "scratch", data_dir, spec, max_steps=0)
    with pytest.raises(ValueError, match=r"spec.model.path .*checkpoints'?: evaluation needs a \.nemo file"):
        NemoCanaryEngine().prepare(ctx)
