"""The `nemo-canary` engine: multitask AED (Canary) fine-tuning on NeMo 3.0.

prepare: 1. check every manifest row's prompt fields (before anything expensive)
         2. find the starting model (a .nemo on the model volume, a hub name, or none) and
            assemble the config: Approach A from the pretrained model's own config, or the
            fast-conformer AED shape from scratch; then spec + overrides
         3. extract or build the tokenizers; every manifest language must have one
         4. point data and tokenizers; then the Lightning trainer, exp_manager and model
         (max_steps 0, `speechtune eval`: restore the .nemo at spec.model.path, nothing else)
train:   fit (resuming the newest checkpoint), then the test_ds evaluation
evaluate / export: transcribe a manifest; write the best model as one .nemo
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechtune.engines import base
from speechtune.spec import typed
from speechtune.engines.nemo_canary import config as nemo_config
from speechtune.engines.nemo_canary import manifests
from speechtune.engines.nemo_canary import tokenizers
from speechtune.engines.nemo_canary import weights

MAX_PROBLEMS_SHOWN = 20
# Prompt tokens in front of the transcript (canary2: context, BOS, emotion, two
# languages, pnc, itn, timestamp, diarize) plus room for a short decoder context.
PROMPT_TOKENS = {"canary2": 10, "canary": 5}
CONTEXT_TOKEN_ALLOWANCE = 32


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where Approach A starts from: a local .nemo file or a hub name."""

    location: str
    is_hub_name: bool


def model_source(model: typed.Model | None, model_dir: Path | None) -> ModelSource | None:
    """spec.model.path (relative to the model volume) wins over spec.model.pretrained."""
    if model is None:
        return None
    if model.path:
        path = Path(model.path)
        if not path.is_absolute():
            if model_dir is None:
                raise ValueError(f"spec.model.path {path}: relative, but no model volume is mounted")
            path = model_dir / path
        if not path.is_file():
            raise ValueError(f"spec.model.path: {path} does not exist")
        return ModelSource(str(path), is_hub_name=False)
    if model.pretrained:
        return ModelSource(model.pretrained, is_hub_name=True)
    return None


def use_model_volume_as_cache(model_dir: Path | None) -> None:
    """Hub downloads land on (and are found again on) the model volume, unless the user
    already chose a cache; offline clusters pre-fill it."""
    if model_dir is not None:
        os.environ.setdefault("HF_HOME", str(model_dir / "huggingface"))
        os.environ.setdefault("NEMO_CACHE_DIR", str(model_dir / "nemo"))


def load_pretrained(source: ModelSource) -> Any:
    from nemo.collections.asr.models import EncDecMultiTaskModel

    if source.is_hub_name:
        return EncDecMultiTaskModel.from_pretrained(source.location, map_location="cpu")
    return EncDecMultiTaskModel.restore_from(source.location, map_location="cpu")


def pretrained_config(model: Any) -> dict[str, Any]:
    """Approach A: the model's own config, with our dataset keys underneath its own and
    the forced-alignment helper off (it would need a second model inside the .nemo)."""
    from omegaconf import OmegaConf

    own = OmegaConf.to_container(model.cfg, resolve=True)
    assert isinstance(own, dict)
    cfg = nemo_config.base_config()
    for key in ("train_ds", "validation_ds", "test_ds"):
        # The published configs keep the data NVIDIA trained on (cluster paths, buckets
        # sized for their GPUs); as in the tutorial's Approach A, the job's own sections
        # replace them, and overrides tune them.
        own[key] = cfg["model"][key]
    own.setdefault("multitask_metrics_cfg", cfg["model"]["multitask_metrics_cfg"])
    own["restore_timestamps_model"] = False
    own.pop("init_from_nemo_model", None)
    own.pop("init_from_pretrained_model", None)
    cfg["model"] = own
    return cfg


@dataclasses.dataclass(frozen=True)
class StartingWeights:
    """What spec.model.init copies from: the pretrained state and its token per id."""

    state: Mapping[str, Any]
    vocabulary: Sequence[str]


def grow_tokenizer(
    tokenizer: tokenizers.ModelTokenizer,
    out_dir: Path,
    cfg: Mapping[str, Any],
    rows_by_path: Mapping[Path, Sequence[manifests.Row]],
    train_inputs: Sequence[tuple[Path, float]],
) -> tokenizers.ModelTokenizer:
    """`spl_tokens.extra_tokens` and `lang_tokenizers.add_languages` on a pretrained model."""
    builder: Mapping[str, Any] = cfg["lang_tokenizers"]
    add = [str(lang) for lang in builder.get("add_languages") or []]
    extra = [str(token) for token in cfg["spl_tokens"].get("extra_tokens") or []]
    if not add and not extra:
        return tokenizer
    texts = manifests.texts_by_target_language(row for path, _ in train_inputs for row in rows_by_path[path])
    unknown = [lang for lang in add if lang not in texts]
    if unknown:
        raise ValueError(f"lang_tokenizers.add_languages: no training row has target_lang {', '.join(unknown)}")
    return tokenizers.grow(tokenizer, out_dir, new_tokens=extra, new_languages={lang: texts[lang] for lang in add},
                           vocab_size=int(builder["vocab_size"]), kind=str(builder.get("type", "bpe")))


def default_prompt(spec_data: typed.Data, prompt_format: str) -> list[dict[str, Any]]:
    """prompt_defaults used by transcribe() when a request leaves slots out."""
    slots: dict[str, Any] = {
        "source_lang": spec_data.source_lang or "en",
        "target_lang": spec_data.target_lang or spec_data.source_lang or "en",
        "pnc": spec_data.pnc,
    }
    if prompt_format == "canary2":
        slots.update(decodercontext="", emotion="<|emo:undefined|>", itn="no", timestamp="no", diarize="no")
    else:
        slots["task"] = "asr" if slots["source_lang"] == slots["target_lang"] else "ast"
    return [{"role": "user", "slots": slots}]


def _resolve_data_path(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


def training_inputs(ctx: base.RunContext) -> list[tuple[Path, float]]:
    """The train manifest plus spec.data.mix (weighted, relative to the data volume)."""
    # The CRD requires each manifest and a weight > 0 (default 1.0).
    inputs = [(ctx.data.train, 1.0)]
    inputs += [(_resolve_data_path(ctx.data.root, item.manifest), item.weight) for item in ctx.spec.data.mix or ()]
    return inputs


def _raise_problems(problems: Sequence[str], what: str) -> None:
    if problems:
        shown = "\n  ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise ValueError(f"nemo-canary {what}:\n  {shown}{more}")


def max_label_tokens(tokenizer: tokenizers.ModelTokenizer, rows: Sequence[manifests.Row]) -> int:
    """Longest transcript in tokens of the SentencePiece model that writes its language."""
    import sentencepiece

    processors: dict[Path, Any] = {}
    longest = 0
    for row in rows:
        model_file = tokenizer.text_model(row.target_lang)
        if model_file is None:
            continue
        if model_file not in processors:
            processors[model_file] = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        longest = max(longest, len(processors[model_file].encode(row.text)))
    return longest


class NemoCanaryEngine:
    """Implements speechtune.engines.base.Engine for NeMo's EncDecMultiTaskModel."""

    def __init__(self) -> None:
        self.config: dict[str, Any] | None = None
        self.model: Any = None
        self.trainer: Any = None
        self._report: Any = None
        self._stop: Any = None
        self.tokenizer_kind = ""
        self.start: StartingWeights | None = None

    # -- prepare -------------------------------------------------------------------------

    def build_config(self, ctx: base.RunContext) -> tuple[dict[str, Any], tokenizers.ModelTokenizer]:
        """The full NeMo config and the tokenizer folders, after every manifest passed."""
        spec = ctx.spec
        work = ctx.run_dir / "nemo"
        overrides: Mapping[str, Any] = nemo_config.flatten(spec.training.overrides or {})
        max_steps = ctx.max_steps or spec.training.max_steps
        if not max_steps or max_steps <= 0:
            raise ValueError("spec.training.maxSteps: required (> 0) for nemo-canary (lhotse has no epoch length)")

        # 1. manifests: prompt fields first, before any model or tokenizer work
        train_inputs = training_inputs(ctx)
        evaluation = [ctx.data.validation] + ([ctx.data.test] if ctx.data.test else [])
        rows_by_path = {path: manifests.read(path) for path, _ in train_inputs}
        rows_by_path.update({path: manifests.read(path) for path in evaluation})
        all_rows = [row for rows in rows_by_path.values() for row in rows]
        requested_format = str(overrides.get("model.prompt_format") or "canary2")
        _raise_problems(manifests.prompt_problems(all_rows, prompt_format=requested_format), "manifest check failed")

        # 2. the starting model and the config (Approach A, or from scratch)
        source = model_source(spec.model, ctx.model_dir)
        if source is not None and source.is_hub_name:
            use_model_volume_as_cache(ctx.model_dir)
        pretrained = load_pretrained(source) if source else None
        cfg = pretrained_config(pretrained) if pretrained is not None else nemo_config.base_config()
        layout = nemo_config.RunLayout(
            log_dir=work,
            checkpoint_dir=ctx.checkpoint_dir,
            max_steps=max_steps,
            device=ctx.device,
            world_size=ctx.world_size,
            nodes=spec.resources.nodes,
            resume=ctx.resume,
        )
        cfg = nemo_config.apply_spec(cfg, spec, layout)
        cfg = nemo_config.apply_overrides(cfg, overrides)
        model = cfg["model"]
        prompt_format = str(model.get("prompt_format") or "canary2")
        if prompt_format not in nemo_config.PROMPT_FORMATS:
            raise ValueError(f"model.prompt_format {prompt_format!r}: supported {nemo_config.PROMPT_FORMATS}")
        model["prompt_format"] = prompt_format
        if prompt_format != requested_format:  # the pretrained model's own format
            _raise_problems(manifests.prompt_problems(all_rows, prompt_format=prompt_format), "manifest check failed")

        # 3. tokenizers: extracted from the pretrained model, or built from training text
        if pretrained is not None:
            tokenizer = tokenizers.extract(pretrained, work / "tokenizers")
            self.start = StartingWeights(state=pretrained.state_dict(),
                                         vocabulary=weights.vocabulary_keys(pretrained.tokenizer))
            del pretrained
            tokenizer = grow_tokenizer(tokenizer, work / "tokenizers-grown", cfg, rows_by_path, train_inputs)
        else:
            train_rows = [row for path, _ in train_inputs for row in rows_by_path[path]]
            builder = cfg["lang_tokenizers"]
            tokenizer = tokenizers.ModelTokenizer(langs=tokenizers.build_from_texts(
                work / "tokenizers",
                texts_by_language=manifests.texts_by_target_language(train_rows),
                prompt_languages=manifests.prompt_languages(all_rows),
                prompt_format=prompt_format,
                vocab_size=int(builder["vocab_size"]),
                kind=str(builder.get("type", "bpe")),
                extra_special=list(cfg["spl_tokens"].get("extra_tokens") or []),
            ))
        # Every special token a row's prompt needs (languages, task, flags) must exist.
        slot_defaults = {"pnc": spec.data.pnc}
        _raise_problems(
            manifests.language_problems(
                all_rows,
                text_languages=tokenizer.text_languages,
                prompt_tokens=tokenizers.special_vocabulary(tokenizer.special_dir),
                prompt_format=prompt_format,
                slot_defaults=slot_defaults,
            ),
            "manifest check failed",
        )

        # 4. point the config at data and tokenizers

        def as_input(path: Path, weight: float = 1.0) -> nemo_config.ManifestInput:
            tags = manifests.missing_slot_tags(rows_by_path[path], slot_defaults)
            return nemo_config.ManifestInput(path=path, weight=weight, tags=tags)

        nemo_config.point_datasets(
            model,
            train=[as_input(path, weight) for path, weight in train_inputs],
            validation=as_input(ctx.data.validation),
            test=as_input(ctx.data.test) if ctx.data.test else None,
        )
        nemo_config.point_tokenizers(model, tokenizer)
        if not model.get("prompt_defaults"):
            model["prompt_defaults"] = default_prompt(spec.data, prompt_format)
        needed = PROMPT_TOKENS[prompt_format] + CONTEXT_TOKEN_ALLOWANCE + max_label_tokens(tokenizer, all_rows) + 1
        nemo_config.ensure_sequence_length(model, needed)
        if source is None:
            nemo_config.fill_derived_sizes(model)
        if not ctx.device.startswith("cuda"):
            for key in ("train_ds", "validation_ds", "test_ds"):
                if model.get(key) and "model.%s.num_workers" % key not in overrides:
                    model[key]["num_workers"] = 0  # worker processes cost more than they save on CPU
            if "model.train_ds.concurrent_bucketing" not in overrides:
                # On a CPU the bucket-filling thread competes with training for the same cores.
                model["train_ds"]["concurrent_bucketing"] = False
        cfg["name"] = cfg["exp_manager"]["name"] = ctx.name
        return cfg, tokenizer

    def prepare(self, ctx: base.RunContext) -> None:
        if ctx.max_steps == 0:
            self.prepare_evaluation(ctx)
            return
        import lightning.pytorch as pl
        from nemo.collections.asr.models import EncDecMultiTaskModel
        from nemo.utils.exp_manager import exp_manager
        from omegaconf import OmegaConf

        from speechtune.engines.kit import lightning_checkpoints, policies
        from speechtune.engines.nemo_canary import callbacks

        cfg, tokenizer = self.build_config(ctx)
        self.config = cfg
        self.tokenizer_kind = tokenizer.describe()
        work = ctx.run_dir / "nemo"
        work.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(cfg), work / "config.yaml")
        policies.seed_everything(ctx.spec.training.seed)

        self._report = callbacks.ReportMetrics(
            ctx.reporter, sample_rate=int(cfg["model"].get("sample_rate", 16000)),
            rank=ctx.rank, world_size=ctx.world_size,
        )
        self._stop = callbacks.StopOnSignal(ctx.stop)
        trainer_cfg = dict(cfg["trainer"])
        # The shared checkpoint guarantees: no checkpoint from NaN weights or validation
        # loss, files written atomically, resume past an unreadable newest checkpoint.
        self.trainer = pl.Trainer(**trainer_cfg, callbacks=[self._report, self._stop, lightning_checkpoints.RefuseNonFinite()],
                                  plugins=[lightning_checkpoints.AtomicCheckpointIO()])
        if ctx.resume:
            lightning_checkpoints.prepare_resume(ctx.checkpoint_dir, ctx.reporter.log)
        exp_manager(self.trainer, OmegaConf.create(cfg["exp_manager"]))
        self.model = EncDecMultiTaskModel(cfg=OmegaConf.create(cfg["model"]), trainer=self.trainer)
        if self.start is not None:
            # Lightning restores a resumed checkpoint after this, so resuming still wins.
            init = ctx.spec.model.init if ctx.spec.model else None
            new_vocabulary = weights.vocabulary_keys(self.model.tokenizer)
            report = weights.load_into(
                self.model, self.start.state,
                include=list(init.include or []) if init else [], exclude=list(init.exclude or []) if init else [],
                rows=weights.row_map(new_vocabulary, self.start.vocabulary) if new_vocabulary != self.start.vocabulary else None,
            )
            self.start = None
            ctx.reporter.log(f"nemo-canary: initialised from the starting model: {report.summary()}")
        ctx.reporter.set_max_steps(int(cfg["trainer"]["max_steps"]))
        ctx.reporter.log(
            f"nemo-canary: {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M parameters, "
            f"prompt {cfg['model']['prompt_format']}, tokenizer {tokenizer.describe()}"
        )

    def prepare_evaluation(self, ctx: base.RunContext) -> None:
        """`speechtune eval` (max_steps 0): the .nemo at spec.model.path as it was saved,
        with no trainer, exp_manager or tokenizer rebuild; only the manifest's prompt
        fields are checked against the model's own prompt format."""
        from nemo.collections.asr.models import EncDecMultiTaskModel

        spec_model = ctx.spec.model
        path = (spec_model and spec_model.path) or ""
        if not (spec_model and spec_model.pretrained) and not path.endswith(".nemo"):
            raise ValueError(f"spec.model.path {path!r}: evaluation needs a .nemo file (the run folder's "
                             "model.nemo; `speechtune export CKPT` converts a Lightning checkpoint) or a hub name")
        source = model_source(spec_model, ctx.model_dir)
        assert source is not None
        if source.is_hub_name:
            use_model_volume_as_cache(ctx.model_dir)
            model = EncDecMultiTaskModel.from_pretrained(source.location, map_location=ctx.device)
        else:
            model = EncDecMultiTaskModel.restore_from(source.location, map_location=ctx.device)
        prompt_format = str(model.cfg.get("prompt_format") or "canary2")
        manifests_to_decode = dict.fromkeys(p for p in (ctx.data.validation, ctx.data.test) if p is not None)
        rows = [row for manifest in manifests_to_decode for row in manifests.read(manifest)]
        _raise_problems(manifests.prompt_problems(rows, prompt_format=prompt_format), "manifest check failed")
        model.eval()
        self.model = model
        ctx.reporter.log(f"nemo-canary: evaluating {source.location} (prompt {prompt_format}, "
                         f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters)")

    # -- train ---------------------------------------------------------------------------

    def train(self, ctx: base.RunContext) -> base.TrainResult:
        assert self.trainer is not None and self.config is not None, "prepare() first"
        self.trainer.fit(self.model)
        stopped = bool(self._stop.stopped)
        facts = self._model_facts()
        extra: dict[str, Any] = {"validations": list(self._report.validations), "prompt_format": facts.pop("prompt_format")}
        if not stopped and self.config["model"].get("test_ds") and ctx.data.test:
            extra["test"] = self._test()
        best = self._best_checkpoint(ctx)
        return base.TrainResult(
            steps=int(self.trainer.global_step),
            epochs=float(self.trainer.current_epoch),
            train_loss=self._report.last_train_loss,
            val_loss=self._report.last_val_loss,
            best_checkpoint=best,
            stopped_early=stopped,
            model=base.ModelFacts(**facts),
            extra=extra,
        )

    def _model_facts(self) -> dict[str, Any]:
        """Model-card facts (architecture, tokenizer, sizes) for metrics.json."""
        model_cfg = self.config["model"] if self.config else {}
        parameters = list(self.model.parameters())
        return {
            "architecture": "EncDecMultiTaskModel (FastConformer encoder + Transformer decoder)",
            "prompt_format": model_cfg.get("prompt_format"),
            "tokenizer": self.tokenizer_kind,
            "vocab_size": int(self.model.tokenizer.vocab_size),
            "parameters": sum(p.numel() for p in parameters),
            "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
        }

    def _test(self) -> dict[str, float]:
        """NeMo's own test_ds pass (loss, WER on ASR rows, BLEU on translation rows)."""
        # exp_manager pointed ckpt_path at the checkpoint this run resumed from, which
        # top-k rotation may have deleted since: test the weights in memory instead.
        self.trainer.ckpt_path = None
        results = self.trainer.test(self.model, ckpt_path=None, verbose=False)
        merged: dict[str, float] = {}
        for result in results or []:
            merged.update({key: float(value) for key, value in result.items()})
        return merged

    def _best_checkpoint(self, ctx: base.RunContext) -> Path | None:
        callback = getattr(self.trainer, "checkpoint_callback", None)
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        if best:
            return Path(best)
        last = sorted(ctx.checkpoint_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        return last[-1] if last else None

    # -- evaluate / export ---------------------------------------------------------------

    def evaluate(self, ctx: base.RunContext, manifest: Path) -> Sequence[base.Hypothesis]:
        assert self.model is not None, "prepare() first"
        return transcribe_manifest(self.model, manifest)

    def export(self, ctx: base.RunContext) -> Path:
        """The best model as `<run_dir>/model.nemo`: exp_manager's always_save_nemo file
        when it exists (written from the best checkpoint), else the current weights."""
        assert self.model is not None, "prepare() first"
        target = ctx.run_dir / "model.nemo"
        saved = sorted(ctx.checkpoint_dir.glob("*.nemo"), key=lambda p: p.stat().st_mtime)
        if ctx.rank != 0:
            return target
        if saved:
            shutil.copyfile(saved[-1], target)
        else:
            self.model.save_to(str(target))
        return target


def transcribe_manifest(model: Any, manifest: Path, batch_size: int = 8) -> list[base.Hypothesis]:
    """Decodes each row with its own prompt (languages, pnc) taken from the manifest; rows
    without a slot get the model's prompt_defaults. transcribe() reads prompts only from a
    manifest file, so a copy with absolute audio paths goes to a temporary folder."""
    rows = manifests.read(manifest)
    defaults = _default_slots(model)
    with tempfile.TemporaryDirectory(prefix="speechtune-eval-") as tmp:
        copy = Path(tmp) / "manifest.json"
        with copy.open("w", encoding="utf-8") as handle:
            for row in rows:
                fields = {**defaults, **row.fields}
                audio = Path(str(fields["audio_filepath"]))
                fields["audio_filepath"] = str(audio if audio.is_absolute() else manifest.parent / audio)
                handle.write(json.dumps(fields, ensure_ascii=False) + "\n")
        outputs = model.transcribe(str(copy), batch_size=batch_size, verbose=False)
    if len(outputs) != len(rows):
        raise RuntimeError(f"{manifest}: {len(rows)} rows but {len(outputs)} hypotheses (unreadable audio?)")
    hypotheses = []
    for row, output in zip(rows, outputs):
        text = output.text if hasattr(output, "text") else str(output)
        hypotheses.append(
            base.Hypothesis(
                utt_id=str(row.fields.get("id") or row.fields.get("utt_id") or Path(str(row.fields["audio_filepath"])).stem),
                reference=row.text,
                hypothesis=clean_hypothesis(text),
                language=row.target_lang,
                duration=float(row.fields["duration"]) if row.fields.get("duration") is not None else None,
                source_language=row.source_lang,
            )
        )
    return hypotheses


# Prompt/control tokens an undertrained decoder may still emit; frame numbers (<|12|>) are
# kept because they are the output of the timestamp task.
_CONTROL_TOKEN = re.compile(r"<\|(?!\d+\|>)[^|<>]*\|>")


def clean_hypothesis(text: str) -> str:
    """Without control tokens and surrounding spaces (canary hypotheses start with one)."""
    return " ".join(_CONTROL_TOKEN.sub(" ", text).split())


def _default_slots(model: Any) -> dict[str, Any]:
    """The model's prompt_defaults, so rows without e.g. `pnc` decode as trained."""
    from omegaconf import OmegaConf

    defaults = model.cfg.get("prompt_defaults")
    if not defaults:
        return {}
    turns = OmegaConf.to_container(defaults, resolve=True)
    if not isinstance(turns, list):
        return {}
    user = [turn for turn in turns if isinstance(turn, dict) and turn.get("role") == "user"]
    slots = dict(user[0].get("slots") or {}) if user else {}
    # A YAML boolean (`itn: false`) is not a value the prompt formatter accepts.
    return {key: ("yes" if value else "no") if isinstance(value, bool) else value for key, value in slots.items()}


# Static conformance: mypy fails here when the class drifts from the Engine protocol.
_: type[base.Engine] = NemoCanaryEngine
