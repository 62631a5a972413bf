"""SpeechBrainCTCEngine: prepare -> train -> evaluate -> export for speechbrain-ctc.

The engine is the shared loop's Task (engines/kit/loop.py) over SpeechBrain modules
(features, Conformer, CTC loss, decoders) rather than `sb.Brain`, because the runtime and
the kit own what Brain would otherwise do (logging, stop signals, metrics, scoring,
precision, DDP); checkpoints are the kit's store (engines/kit/checkpoints.py), not
SpeechBrain's Checkpointer, which writes in place."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from speechbrain.nnet import losses

from speechtune.data import manifest, normalize
from speechtune.engines import base
from speechtune.engines.kit import checkpoints, layout, loop, policies
from speechtune.engines.speechbrain_ctc import audio, batching, decoding, model, schedule, settings
from speechtune.engines.speechbrain_ctc import tokenizer as tokenizers
from speechtune.spec import typed

HPARAMS_FILE = "hyperparams.json"
MODEL_FILE = "model.ckpt"
NORMALIZER_FILE = "normalizer.ckpt"
EVAL_BATCH_SECONDS = 120.0


class SpeechBrainCTCEngine:
    """The engine, and the kit loop's Task: the loop trains `net` on these batches."""

    def prepare(self, ctx: base.RunContext) -> None:
        self._read_inputs(ctx)  # 1. settings, normaliser, manifests
        init_dir = self._init_dir(ctx)
        self._build_model(ctx, init_dir)  # 2. tokenizer, network, starting weights, LoRA
        self.loop = self._build_loop(ctx)  # 3. the shared loop: device, optimizer, precision, checkpoints
        if ctx.resume:  # 4. continue from the newest readable checkpoint
            self.loop.resume()
        if self.net.normalize.count == 0:
            self._init_cmvn()
        self.loop.distribute()
        n_params = sum(p.numel() for p in self.net.parameters())
        ctx.reporter.log(
            f"speechbrain-ctc: {n_params / 1e6:.2f}M parameters, vocab {len(self.tokenizer.vocab)} "
            f"({self.tokenizer.kind}), {len(self.train_utts)} training utterances "
            f"({sum(self.durations) / 3600:.2f} h), "
            f"{f'{self.loop.total_steps} steps' if self.loop.total_steps else 'evaluation only'}, device {self.device}")

    def _read_inputs(self, ctx: base.RunContext) -> None:
        self.model_settings, self.train_settings = settings.from_overrides(ctx.spec.training.overrides)
        self.training = ctx.spec.training
        self.seed = ctx.spec.training.seed
        policies.seed_everything(self.seed)
        self.device = torch.device(ctx.device)
        self.normalizer = normalize.get(ctx.spec.data.normalization)
        # Rows whose normalised text is empty teach CTC nothing (preflight reports them).
        self.train_utts = [u for u in manifest.read(ctx.data.train) if self.normalizer(u.text).strip()]
        self.valid_utts = manifest.read(ctx.data.validation)
        self.durations = [u.duration for u in self.train_utts]

    def _build_model(self, ctx: base.RunContext, init_dir: Path | None) -> None:
        if init_dir is not None:
            self.model_settings = _saved_model_settings(init_dir, self.model_settings)
        self.tokenizer = self._tokenizer(ctx, init_dir)
        self.net = model.ConformerCTC(self.model_settings, vocab_size=len(self.tokenizer.vocab))
        self.net.set_spec_augment(self.train_settings)
        self.features = audio.FeatureCache(self.net.fbank)
        if init_dir is not None:
            _load_weights(self.net, init_dir, ctx.spec.model.init if ctx.spec.model else None)
            ctx.reporter.log(f"initialised from {init_dir}")
        peft = self.training.peft
        if peft.method == "lora":
            trainable = model.add_lora(self.net, rank=peft.r, alpha=peft.alpha, dropout=peft.dropout,
                                       targets=list(peft.target_modules or []) or None)
            ctx.reporter.log(f"LoRA r={peft.r} on the encoder: {trainable} trainable parameters")
        self.decoder = decoding.Decoder(self.tokenizer, beam_size=self.train_settings.beam_size)

    def _build_loop(self, ctx: base.RunContext) -> loop.Loop[audio.Batch]:
        peak = self.training.learning_rate
        warmup = self.training.warmup_steps
        train = self.train_settings

        def lr_schedule(optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LRScheduler:
            # LambdaLR's k-th factor is the rate of optimizer step k + 1.
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: schedule.learning_rate(
                k + 1, peak=1.0, warmup=warmup, total=total, schedule=train.lr_schedule, floor=train.min_lr_ratio))

        loop_settings = loop.Settings(
            learning_rate=peak, weight_decay=train.weight_decay, max_steps=ctx.max_steps,
            epochs=self.training.epochs,
            grad_accumulation=self.training.grad_accumulation,
            gradient_clip=self.training.gradient_clip_val or 0.0,
            val_check_interval=self.training.val_check_interval,
            precision=self.training.precision,
            save_top_k=ctx.spec.output.save_top_k,
            best_by=policies.best_key(ctx.spec, characters=self.tokenizer.kind == "char"))
        built = loop.Loop(self, loop_settings, ctx, schedule=lr_schedule)
        if ctx.rank == 0:
            self._write_model_files(ctx.checkpoint_dir)
        return built

    # -- the loop's Task -----------------------------------------------------------------

    @property
    def model(self) -> torch.nn.Module:
        return self.net

    def weights(self) -> dict[str, torch.Tensor]:
        return dict(self.net.state_dict())

    def load_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        self.net.load_state_dict(weights)

    def states(self) -> dict[str, Any]:
        return {"normalizer": self.net.normalize._statistics_dict()}

    def load_states(self, states: Mapping[str, Any]) -> None:
        _load_normalizer(self.net, states["normalizer"], self.device)

    def plans(self, epoch: int) -> list[batching.Batch]:
        batch_size = self.training.batch_size
        batch_seconds = self.training.batch_duration or math.inf
        if batch_seconds == math.inf and not batch_size:
            batch_size = 8
        if self.train_settings.batching == "random":  # the benchmark's baseline
            if not batch_size:  # as many utterances as an average batchDuration holds
                batch_size = max(1, round(batch_seconds * len(self.durations) / sum(self.durations)))
            return batching.random_batches(len(self.durations), batch_size=int(batch_size), seed=self.seed, epoch=epoch)
        return batching.length_batches(self.durations, batch_seconds=batch_seconds, seed=self.seed, epoch=epoch,
                                       max_batch_size=int(batch_size) if batch_size else None)

    def load(self, plans: Sequence[Sequence[int]]) -> Iterator[audio.Batch]:
        return (self._collate([self.train_utts[i] for i in indices]) for indices in plans)

    def facts(self, batch: audio.Batch) -> loop.Facts:
        return loop.Facts(audio_seconds=batch.audio_seconds, samples=len(batch.ids), padding_ratio=batch.padding_ratio)

    def loss(self, forward: loop.Forward, batch: audio.Batch, *, epoch: int) -> torch.Tensor:
        lens = batch.lens.to(self.device)
        feats = self.net.features(batch.feats.to(self.device), lens, epoch=epoch)
        return losses.ctc_loss(forward(feats, lens), batch.tokens.to(self.device), lens,
                               batch.token_lens.to(self.device), blank_index=0)

    def validate(self, forward: loop.Forward) -> tuple[float | None, list[base.Hypothesis]]:
        """Validation loss here, WER/CER by the runtime from the hypotheses."""
        limit = self.training.limit_val_batches
        loss_sum, batches = 0.0, 0
        hypotheses: list[base.Hypothesis] = []
        for batch, log_probs, lens in self._decode_batches(self.valid_utts, forward, limit=limit):
            loss = losses.ctc_loss(log_probs, batch.tokens.to(self.device), lens,
                                   batch.token_lens.to(self.device), blank_index=0)
            loss_sum += float(loss)
            batches += 1
            hypotheses += [base.Hypothesis(utt_id=utt_id, reference=text, hypothesis=hyp, language=lang)
                           for utt_id, text, lang, hyp in zip(batch.ids, batch.texts, batch.languages,
                                                              self.decoder(log_probs, lens))]
        return loss_sum / max(1, batches), hypotheses

    # -- training ------------------------------------------------------------------------

    def train(self, ctx: base.RunContext) -> base.TrainResult:
        result = self.loop.train()
        return dataclasses.replace(result, model=self._model_facts(), extra=self._facts())

    # -- preparation helpers -------------------------------------------------------------

    def _init_dir(self, ctx: base.RunContext) -> Path | None:
        model_spec = ctx.spec.model
        if model_spec and model_spec.pretrained:
            raise ValueError("spec.model.pretrained: speechbrain-ctc starts from a checkpoint folder "
                             "(spec.model.path), not a hub name")
        if not (model_spec and model_spec.path):
            return None
        path = Path(model_spec.path)
        if not path.is_absolute():
            if ctx.model_dir is None:
                raise ValueError("spec.model.path: relative path but no model volume is mounted")
            path = ctx.model_dir / path
        return _checkpoint_folder(path)

    def _tokenizer(self, ctx: base.RunContext, init_dir: Path | None) -> tokenizers.Tokenizer:
        # A resumed run keeps its own tokenizer; a started-from model brings its tokenizer.
        resumed = ctx.checkpoint_dir if ctx.resume and layout.has_checkpoints(ctx.checkpoint_dir) else None
        for folder in (resumed, init_dir, init_dir.parent if init_dir else None):
            if folder is not None and (folder / "tokenizer.json").exists():
                return tokenizers.load(folder)
        texts = [self.normalizer(u.text) for u in self.train_utts]
        if self.model_settings.tokenizer == "char":
            return tokenizers.CharTokenizer.from_texts(texts)
        if self.model_settings.spm_model:
            spm = Path(self.model_settings.spm_model)
            if not spm.is_absolute() and ctx.model_dir is not None:
                spm = ctx.model_dir / spm
            return tokenizers.SentencePieceTokenizer(spm)
        return tokenizers.SentencePieceTokenizer.train(
            texts, ctx.run_dir / "tokenizer", self.model_settings.spm_vocab_size)

    def _init_cmvn(self, max_utterances: int = 400) -> None:
        """Global CMVN statistics from the training audio before the first step, so even
        the untrained model (the demo's "before" row) sees normalised features."""
        utts = self.train_utts[:max_utterances]
        batches = batching.length_batches([u.duration for u in utts], batch_seconds=EVAL_BATCH_SECONDS,
                                          seed=0, epoch=0, max_batch_size=32, shuffle=False)
        self.net.normalize.train()
        with torch.no_grad():
            for indices in batches:
                batch = self._collate([utts[i] for i in indices])
                self.net.normalize(batch.feats.to(self.device), batch.lens.to(self.device))

    def _write_model_files(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / HPARAMS_FILE).write_text(json.dumps(dataclasses.asdict(self.model_settings), indent=2))
        self.tokenizer.save(folder)

    def _collate(self, utts: Sequence[manifest.Utterance]) -> audio.Batch:
        return audio.collate(utts, [self.tokenizer.encode(self.normalizer(u.text)) for u in utts], self.features)

    def _decode_batches(self, utts: Sequence[manifest.Utterance], forward: loop.Forward, *, limit: int | None = None
                        ) -> Iterator[tuple[audio.Batch, torch.Tensor, torch.Tensor]]:
        durations = [u.duration for u in utts]
        batches = batching.length_batches(durations, batch_seconds=EVAL_BATCH_SECONDS, seed=0, epoch=0,
                                          max_batch_size=32, shuffle=False)
        for indices in batches[:limit] if limit else batches:
            batch = self._collate([utts[i] for i in indices])
            lens = batch.lens.to(self.device)
            feats = self.net.features(batch.feats.to(self.device), lens, epoch=0)  # eval mode: no augmentation
            yield batch, forward(feats, lens), lens

    def _model_facts(self) -> base.ModelFacts:
        m = self.model_settings
        return base.ModelFacts(
            architecture=f"SpeechBrain Conformer encoder + CTC ({m.num_layers} layers, d_model {m.d_model})",
            tokenizer=self.tokenizer.kind, vocab_size=len(self.tokenizer.vocab),
            parameters=sum(p.numel() for p in self.net.parameters()),
            trainable_parameters=sum(p.numel() for p in self.net.parameters() if p.requires_grad))

    def _facts(self) -> dict[str, Any]:
        return {
            "parameters": sum(p.numel() for p in self.net.parameters()),
            "trainable_parameters": sum(p.numel() for p in self.net.parameters() if p.requires_grad),
            "tokenizer": self.tokenizer.kind, "vocab_size": len(self.tokenizer.vocab),
            "model": dataclasses.asdict(self.model_settings),
            "train": dataclasses.asdict(self.train_settings),
            "precision": self.loop.precision.name,
        }

    # -- evaluation and export -----------------------------------------------------------

    def evaluate(self, ctx: base.RunContext, manifest_path: Path) -> Sequence[base.Hypothesis]:
        utts = manifest.read(manifest_path)
        results: list[base.Hypothesis] = []
        self.net.eval()
        with torch.no_grad():
            for batch, log_probs, lens in self._decode_batches(utts, self.loop.forward(self.net)):
                for utt_id, text, lang, hyp in zip(batch.ids, batch.texts, batch.languages,
                                                   self.decoder(log_probs, lens)):
                    results.append(base.Hypothesis(utt_id=utt_id, reference=text, hypothesis=hyp, language=lang))
        by_id = {u.id: u.duration for u in utts}
        return [dataclasses.replace(h, duration=by_id.get(h.utt_id)) for h in results]

    def export(self, ctx: base.RunContext) -> Path:
        """`<run>/model/`: weights, CMVN statistics, tokenizer and architecture; a folder
        `spec.model.path` (and `speechtune eval --checkpoint`) can start from."""
        folder = ctx.run_dir / "model"
        self._write_model_files(folder)
        torch.save(self.net.state_dict(), folder / MODEL_FILE)
        torch.save(self.net.normalize._statistics_dict(), folder / NORMALIZER_FILE)
        return folder


def _checkpoint_folder(path: Path) -> Path:
    """An exported model folder, a `step-<N>` checkpoint, or a checkpoints/ folder (its newest)."""
    if (path / MODEL_FILE).exists() or (path / checkpoints.WEIGHTS).exists():
        return path
    candidates = checkpoints.Store(path, keep_top_k=1, writer=False).listed()
    if candidates:
        return candidates[-1].path
    if (path / "hyperparams.yaml").exists():
        # A hub model's Pretrainer layout (hyperparams.yaml + asr.ckpt, ...) describes its
        # own classes (an encoder-decoder with an LM, often), not this engine's Conformer-CTC.
        raise ValueError(f"spec.model.path: {path} is a SpeechBrain hub model folder (hyperparams.yaml); "
                         f"speechbrain-ctc starts only from its own runs' checkpoints or exports ({MODEL_FILE} + "
                         f"{HPARAMS_FILE})")
    raise ValueError(f"spec.model.path: {path} holds no {MODEL_FILE} (want a speechtune/SpeechBrain "
                     "checkpoint folder)")


def _saved_model_settings(folder: Path, requested: settings.ModelSettings) -> settings.ModelSettings:
    for candidate in (folder / HPARAMS_FILE, folder.parent / HPARAMS_FILE):
        if candidate.exists():
            return settings.ModelSettings(**json.loads(candidate.read_text()))
    return requested  # a bare SpeechBrain checkpoint: the architecture comes from overrides


def _load_weights(net: model.ConformerCTC, folder: Path, init: typed.Init | None) -> None:
    """Loads the parameters selected by spec.model.init (name prefixes); a CTC head of
    another vocabulary size is skipped, so a new tokenizer gets a fresh head."""
    saved, normalizer = _read_model_folder(folder)
    include, exclude = tuple(init.include or ()) if init else (), tuple(init.exclude or ()) if init else ()
    own = net.state_dict()
    selected = {
        name: value for name, value in saved.items()
        if (not include or name.startswith(include)) and not (exclude and name.startswith(exclude))
        and name in own and own[name].shape == value.shape
    }
    net.load_state_dict(selected, strict=False)
    if normalizer is not None:
        _load_normalizer(net, normalizer, torch.device("cpu"))


def _read_model_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(weights, CMVN statistics) of an exported folder or a training checkpoint."""
    if (folder / checkpoints.WEIGHTS).exists():
        restored = checkpoints.Store(folder.parent, keep_top_k=1, writer=False).restore(folder)
        return restored.weights, restored.states.get("normalizer")
    saved = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
    stats = folder / NORMALIZER_FILE
    return saved, torch.load(stats, map_location="cpu", weights_only=True) if stats.exists() else None


def _load_normalizer(net: model.ConformerCTC, stats: Mapping[str, Any], device: torch.device) -> None:
    net.normalize._load_statistics_dict(
        {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in stats.items()})


# Static conformance: mypy fails here when the class drifts from the Engine protocol.
_: type[base.Engine] = SpeechBrainCTCEngine
