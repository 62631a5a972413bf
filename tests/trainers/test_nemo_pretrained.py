"""Fine-tuning Canary checkpoints shaped like the published ones (tests/pretrained/canary.py):
canary-1b-v2 (unified SentencePiece tokenizer with the special tokens inside), and the
aggregate-tokenizer models canary-180m-flash (canary2 prompt) and canary-1b (canary prompt).

Each starts from its fixture .nemo on the model volume (Approach A): the special tokens the
manifests need are checked first, a SIGTERM'd run resumes, the export restores and
transcribes, and the score before fine-tuning (the fixture itself, `speechtune eval`'s path:
prepare with max_steps 0) is compared with the score after."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from test_nemo_training import RecordingReporter, make_context, tiny_spec

from speechtune.data import normalize, synth
from speechtune.engines.nemo_canary import NemoCanaryEngine
from speechtune.runtime import scoring

pytestmark = pytest.mark.training

STOP_AT, MAX_STEPS = 8, 20
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("canary-pretrained-data")
    synth.synthesize(root, n=60, languages=["en", "de"], domain="generic", seed=11, translate_to="de")
    return root


def pretrained_spec(model_file: str, *, init: dict[str, Any] | None = None, max_steps: int = MAX_STEPS,
                    data: dict[str, Any] | None = None) -> dict[str, Any]:
    """tiny-canary's data and training fields, but Approach A: the fixture's own
    architecture and tokenizer, no from-scratch overrides."""
    spec = tiny_spec(data=data, model={"path": model_file, **({"init": init} if init else {})}, max_steps=max_steps)
    spec["training"].update(valCheckInterval=10, learningRate=1e-3, warmupSteps=5)
    spec["training"]["overrides"] = {"model.decoding.beam.max_generation_delta": 10}
    return spec


def score(engine: NemoCanaryEngine, ctx: Any, manifest: Path) -> float:
    hypotheses = engine.evaluate(ctx, manifest)
    scores = scoring.score_hypotheses(hypotheses, normalize.get("lower"))
    return scores["all"].wer if "all" in scores else next(iter(scores.values())).wer


def models_volume(tmp_path: Path, fixture: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(fixture, models / fixture.name)
    return models


@dataclasses.dataclass
class FineTuned:
    before: float
    after: float
    first_steps: int
    resumed_first_step: int
    engine: NemoCanaryEngine
    validations: list[dict[str, Any]]


def fine_tune(fixture: Path, speech: Path, tmp_path: Path, *, init: dict[str, Any] | None = None) -> FineTuned:
    models = models_volume(tmp_path, fixture)
    spec = pretrained_spec(fixture.name, init=init)
    evaluation_ctx = make_context(tmp_path / "eval-before", speech, spec, max_steps=0, model_dir=models)
    before_engine = NemoCanaryEngine()
    before_engine.prepare(evaluation_ctx)
    before = score(before_engine, evaluation_ctx, speech / "test.json")
    del before_engine
    run = tmp_path / "run"
    first_ctx = make_context(run, speech, spec, max_steps=MAX_STEPS, stop_at=STOP_AT, model_dir=models)
    first = NemoCanaryEngine()
    first.prepare(first_ctx)
    first_result = first.train(first_ctx)
    del first
    ctx = make_context(run, speech, spec, max_steps=MAX_STEPS, model_dir=models)
    engine = NemoCanaryEngine()
    engine.prepare(ctx)
    engine.train(ctx)
    engine.export(ctx)
    after = score(engine, ctx, speech / "test.json")
    assert isinstance(ctx.reporter, RecordingReporter) and isinstance(first_ctx.reporter, RecordingReporter)
    print(f"{fixture.name}: test WER before {before:.3f}, after {MAX_STEPS} steps {after:.3f}")
    return FineTuned(before, after, first_result.steps, ctx.reporter.steps[0]["step"], engine,
                     first_ctx.reporter.validations + ctx.reporter.validations)


def test_canary_1b_v2_fixture_mirrors_the_published_layout(pretrained_canary: Callable[[str], Path]) -> None:
    import tarfile

    from nemo.collections.asr.models import EncDecMultiTaskModel

    fixture = pretrained_canary("canary-1b-v2")
    names = tarfile.open(fixture).getnames()
    assert sum(name.endswith("_tokenizer.model") for name in names) == 1, names  # one unified model
    model = EncDecMultiTaskModel.restore_from(str(fixture), map_location="cpu")
    assert model.cfg.tokenizer.type == "bpe"
    assert model.cfg.tokenizer.custom_tokenizer._target_.endswith("CanaryBPETokenizer")
    assert (model.cfg.preprocessor.features, model.cfg.prompt_format) == (128, "canary2")
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 2e6
    assert model.tokenizer.token_to_id("<|pl|>") > 0 and model.tokenizer.pad_id == model.tokenizer.token_to_id("<pad>")


def test_fine_tune_canary_1b_v2_unified_tokenizer(pretrained_canary: Callable[[str], Path], speech: Path,
                                                  tmp_path: Path) -> None:
    """The flagship: Approach A from a unified-tokenizer canary2 model, with init prefixes."""
    tuned = fine_tune(pretrained_canary("canary-1b-v2"), speech, tmp_path,
                      init={"include": ["encoder", "transf_decoder", "log_softmax"], "exclude": ["encoder.pre_encode"]})
    assert tuned.engine.config is not None
    tokenizer = tuned.engine.config["model"]["tokenizer"]
    assert tokenizer["type"] == "bpe" and tokenizer["custom_tokenizer"]["_target_"].endswith("CanaryBPETokenizer")
    assert Path(tokenizer["dir"], "tokenizer.model").is_file()
    assert tuned.first_steps == STOP_AT and tuned.resumed_first_step == STOP_AT + 1
    losses = [v["val_loss"] for v in tuned.validations]
    assert losses[-1] < losses[0], losses
    assert tuned.after <= tuned.before


@pytest.mark.parametrize("name", ["canary-180m-flash", "canary-1b"])
def test_fine_tune_aggregate_canaries(name: str, pretrained_canary: Callable[[str], Path], speech: Path,
                                      tmp_path: Path) -> None:
    tuned = fine_tune(pretrained_canary(name), speech, tmp_path)
    assert tuned.engine.config is not None
    assert set(tuned.engine.config["model"]["tokenizer"]["langs"]) == {"spl_tokens", "en", "de", "es", "fr"}
    losses = [v["val_loss"] for v in tuned.validations]
    assert losses[-1] < losses[0], losses


def _rewrite(path: Path, change: Callable[[list[dict[str, Any]]], None]) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    change(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("name", ["canary-1b-v2", "canary-1b"])
def test_missing_special_token_is_named_before_any_step(name: str, pretrained_canary: Callable[[str], Path],
                                                        speech: Path, tmp_path: Path) -> None:
    """Japanese is not among the fixture's languages; canary-1b has no <|itn|>."""
    fixture = pretrained_canary(name)
    data = tmp_path / "data"
    shutil.copytree(speech, data)

    def japanese(rows: list[dict[str, Any]]) -> None:
        rows[2]["source_lang"] = "ja"
    _rewrite(data / "valid.json", japanese)
    ctx = make_context(tmp_path / "run", data, pretrained_spec(fixture.name), max_steps=5,
                       model_dir=models_volume(tmp_path, fixture))
    engine = NemoCanaryEngine()
    with pytest.raises(ValueError, match=r"valid\.json:3: language 'ja' needs the special token <\|ja\|>"):
        engine.prepare(ctx)
    assert engine.trainer is None and not (ctx.run_dir / "checkpoints").exists()


def test_data_bins_reads_a_unified_tokenizer_nemo(pretrained_canary: Callable[[str], Path], speech: Path,
                                                  tmp_path: Path) -> None:
    import yaml

    from speechtune import cli

    out = tmp_path / "bins.yaml"
    assert cli.main(["data", "bins", str(speech / "train.json"), "--tokenizers", str(pretrained_canary("canary-1b-v2")),
                     "-b", "2", "-s", "2", "--batch-duration", "20", "-o", str(out)]) == 0
    bins = yaml.safe_load(out.read_text())["overrides"]["model.train_ds.bucket_duration_bins"]
    assert bins and all(tokens > 10 for _, tokens in bins)  # canary2 prompt (10 tokens) + transcript


@pytest.mark.parametrize("name", ["canary-180m-flash", "canary-1b-v2"])
def test_new_tokens_and_language_grow_the_vocabulary_keeping_trained_rows(
        name: str, pretrained_canary: Callable[[str], Path], speech: Path, tmp_path: Path) -> None:
    """Tutorial 001: a new task token (<|summarize|>) and a new language ("it", here the
    German rows relabelled). Aggregate: spl_tokens rebuilt with <|it|> and a new "it"
    SentencePiece model; unified: the tokens are appended to its one model. The decoder
    embedding and output layer keep every trained token's row."""
    import torch
    from nemo.collections.asr.models import EncDecMultiTaskModel

    fixture = pretrained_canary(name)
    data = tmp_path / "data"
    shutil.copytree(speech, data)

    def italian(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if row["target_lang"] == "de" and row["source_lang"] == "de":
                row["source_lang"] = row["target_lang"] = "it"
    for split in ("train.json", "valid.json"):
        _rewrite(data / split, italian)
    spec = pretrained_spec(fixture.name, max_steps=3, data={"test": None})
    spec["training"]["overrides"].update({"spl_tokens.extra_tokens": ["<|summarize|>"],
                                          "lang_tokenizers.add_languages": ["it"], "lang_tokenizers.vocab_size": 64})
    ctx = make_context(tmp_path / "run", data, spec, max_steps=3, model_dir=models_volume(tmp_path, fixture))
    engine = NemoCanaryEngine()
    engine.prepare(ctx)
    source = EncDecMultiTaskModel.restore_from(str(fixture), map_location="cpu")
    new, old = engine.model.tokenizer, source.tokenizer
    assert new.vocab_size > old.vocab_size
    if name == "canary-1b-v2":
        assert new.token_to_id("<|summarize|>") == old.vocab_size  # appended: every old id unchanged
        old_ids = new_ids = list(range(old.vocab_size))
        added = [new.token_to_id("<|summarize|>")]
    else:
        assert "it" in new.tokenizers_dict
        old_ids = [old.token_to_id("<|en|>", "spl_tokens")] + [old.token_id_offset["en"] + i for i in range(20)]
        new_ids = [new.token_to_id("<|en|>", "spl_tokens")] + [new.token_id_offset["en"] + i for i in range(20)]
        assert new_ids != old_ids  # ids moved when spl_tokens grew in front
        added = [new.token_to_id("<|summarize|>", "spl_tokens"), new.token_to_id("<|it|>", "spl_tokens")]
    for key in ("transf_decoder._embedding.token_embedding.weight", "log_softmax.mlp.layer0.weight"):
        grown, trained = engine.model.state_dict()[key], source.state_dict()[key]
        assert torch.equal(grown[new_ids], trained[old_ids]), key
        assert not any(torch.equal(grown[i], trained[0]) for i in added)
    assert engine.train(ctx).steps == 3


def test_speechtune_eval_scores_a_pretrained_nemo_without_a_run(pretrained_canary: Callable[[str], Path], speech: Path,
                                                              tmp_path: Path) -> None:
    """`speechtune eval --checkpoint model.nemo MANIFEST`: no run folder, no job file."""
    from speechtune import cli

    fixture = tmp_path / "canary-1b-v2.nemo"
    shutil.copyfile(pretrained_canary("canary-1b-v2"), fixture)
    out = tmp_path / "decode.jsonl"
    assert cli.main(["eval", "--checkpoint", str(fixture), str(speech / "test.json"), "--normalization", "lower",
                     "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len((speech / "test.json").read_text().splitlines())
    assert {row["language"] for row in rows} == {"en", "de"}


def test_speechtune_eval_of_a_hub_name_from_the_cache(pretrained_canary: Callable[[str], Path], speech: Path,
                                                      tmp_path: Path) -> None:
    """`speechtune eval --checkpoint nvidia/canary-1b-v2 --engine nemo-canary`, offline: NeMo
    resolves the name through the Hugging Face cache (here pre-filled with the fixture)."""
    import os
    import subprocess
    import sys

    from pretrained import canary

    hf_home = tmp_path / "hf"
    canary.place_in_hub_cache(pretrained_canary("canary-1b-v2"), hf_home, "nvidia/canary-1b-v2")
    out = tmp_path / "decode.jsonl"
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(
        [sys.executable, "-m", "speechtune.cli", "eval", "--checkpoint", "nvidia/canary-1b-v2", "--engine",
         "nemo-canary", str(speech / "test.json"), "--output", str(out)],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "en->de" in result.stdout  # the translation rows' own line, with BLEU
    assert len(out.read_text().splitlines()) == len((speech / "test.json").read_text().splitlines())


def _operator_job_file(body: dict[str, Any]) -> str:
    """The job file the operator mounts at /etc/speechtune/job.yaml: the pod template's
    annotation its downwardAPI volume names, rendered by the operator's own builder from
    the FinetuneJob as the API server stores it (CRD defaults applied)."""
    import importlib.util

    from speechtune_operator import settings
    from speechtune_operator.builders import backends

    spec = importlib.util.spec_from_file_location("ftj_crd", REPO / "tests" / "unit" / "operator" / "ftj_crd.py")
    assert spec is not None and spec.loader is not None
    crdtools = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(crdtools)
    stored = crdtools.apply_defaults(crdtools.schema(), body)
    stored["metadata"].update(namespace="research", uid=crdtools.UID, generation=1)
    child = backends.PYTORCHJOB.build(stored, settings.Settings())
    template = child["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    [volume] = [v for v in template["spec"]["volumes"] if v["name"] == "job"]
    key = volume["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"]
    return str(template["metadata"]["annotations"][key.removeprefix("metadata.annotations['").removesuffix("']")])


def test_the_operators_mounted_job_file_fine_tunes_the_unified_canary(
        pretrained_canary: Callable[[str], Path], speech: Path, tmp_path: Path) -> None:
    """Seam: examples/finetunejob-canary.yaml (canary-1b-v2), pointed at the fixture and cut
    to CPU size, goes through the operator's builder; the file a pod would read runs."""
    import yaml

    from speechtune import cli

    body = yaml.safe_load((REPO / "examples" / "finetunejob-canary.yaml").read_text())
    spec = body["spec"]
    spec["model"] = {"path": "canary-1b-v2.nemo", "volume": {"claimName": "asr-models"}}
    spec["data"].update(train="train.json", validation="valid.json", test="test.json")
    spec["data"].pop("mix")
    spec["training"].update(maxSteps=4, valCheckInterval=2, limitValBatches=1, batchDuration=20, warmupSteps=1,
                            precision="fp32")
    spec["resources"] = {"cpu": "2", "memory": "4Gi"}
    job_file = tmp_path / "job.yaml"
    job_file.write_text(_operator_job_file(body))
    models, runs = models_volume(tmp_path, pretrained_canary("canary-1b-v2")), tmp_path / "runs"
    runs.mkdir()
    rc = cli.main(["run", str(job_file), "--volume", f"asr-data={speech}", "--volume", f"asr-runs={runs}",
                   "--volume", f"asr-models={models}", "--metrics-port", "0"])
    assert rc == 0
    (metrics_file,) = runs.glob("canary-1b-v2-atc/*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["status"] == "succeeded" and metrics["steps"] == 4
    assert Path(metrics["model_export"]).is_file() and metrics["best_checkpoint"]
