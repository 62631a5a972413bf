"""SpeechBrainCTCEngine: prepare -> train -> evaluate -> export for speechbrain-ctc.

The training loop is a plain PyTorch loop over SpeechBrain modules (features, Conformer,
CTC loss, decoders) rather than `sb.Brain`, because the runtime owns what Brain would
otherwise do (logging, stop signals, metrics, scoring); checkpoints are the engines'
shared store (engines/kit/checkpoints.py), not SpeechBrain's Checkpointer, which writes
in place."""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from speechbrain.nnet import losses

from speechtune.data import manifest, normalize
from speechtune.engines import base
from speechtune.engines.speechbrain_ctc import audio, batching, decoding, model, schedule, settings
from speechtune.engines.kit import checkpoints, layout, policies
from speechtune.engines.speechbrain_ctc import tokenizer as tokenizers

HPARAMS_FILE = "hyperparams.json"
MODEL_FILE = "model.ckpt"
NORMALIZER_FILE = "normalizer.ckpt"
EVAL_BATCH_SECONDS = 120.0
LOSS_WINDOW = 20  # steps averaged into TrainResult.train_loss


@dataclasses.dataclass
class Progress:
    """Where training stands: saved in every checkpoint, so a restart continues at the
    same optimizer step and the same batch of the same epoch."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed


class SpeechBrainCTCEngine:
    def prepare(self, ctx: base.RunContext) -> None:
        self._read_inputs(ctx)  # 1. settings, normaliser, manifests
        init_dir = self._init_dir(ctx)
        self._build_model(ctx, init_dir)  # 2. tokenizer, network, starting weights, LoRA
        self._build_optimisation(ctx)  # 3. optimizer, precision, schedule length, checkpointer
        restored = self.store.restore_newest() if ctx.resume else None  # 4. resume
        if restored is not None:
            self._restore(restored)
            ctx.reporter.log(f"resumed from {restored.checkpoint.path} at step {self.progress.step}")
        if self.net.normalize.count == 0:
            self._init_cmvn()
        self.ddp: torch.nn.Module = _distributed(self.net, self.device) if ctx.world_size > 1 else self.net
        n_params = sum(p.numel() for p in self.net.parameters())
        ctx.reporter.log(
            f"speechbrain-ctc: {n_params / 1e6:.2f}M parameters, vocab {len(self.tokenizer.vocab)} "
            f"({self.tokenizer.kind}), {len(self.train_utts)} training utterances "
            f"({sum(self.durations) / 3600:.2f} h), "
            f"{f'{self.max_steps} steps' if self.max_steps else 'evaluation only'}, device {self.device}")

    def _read_inputs(self, ctx: base.RunContext) -> None:
        self.model_settings, self.train_settings = settings.from_spec(ctx.spec)
        self.training = dict(ctx.spec.get("training") or {})
        self.seed = policies.seed_of(ctx.spec)
        policies.seed_everything(self.seed)
        self.device = torch.device(ctx.device)
        self.normalizer = normalize.get(str(ctx.spec["data"].get("normalization", "none")))
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
            _load_weights(self.net, init_dir, (ctx.spec.get("model") or {}).get("init") or {})
            ctx.reporter.log(f"initialised from {init_dir}")
        peft = self.training.get("peft") or {}
        if peft.get("method", "none") == "lora":
            trainable = model.add_lora(
                self.net, rank=int(peft.get("r", 16)), alpha=float(peft.get("alpha", 32)),
                dropout=float(peft.get("dropout", 0.0)), targets=list(peft.get("targetModules") or []) or None)
            ctx.reporter.log(f"LoRA r={peft.get('r')} on the encoder: {trainable} trainable parameters")
        self.net.to(self.device)
        self.decoder = decoding.Decoder(self.tokenizer, beam_size=self.train_settings.beam_size)

    def _build_optimisation(self, ctx: base.RunContext) -> None:
        self.precision = policies.precision_for(str(self.training.get("precision", "fp32")), ctx.device,
                                                ctx.reporter.log)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.net.parameters() if p.requires_grad],
            lr=float(self.training.get("learningRate", 1e-4)), weight_decay=self.train_settings.weight_decay)
        self.scaler = self.precision.grad_scaler()
        self.progress = Progress()
        self.max_steps = self._max_steps(ctx)
        ctx.reporter.set_max_steps(self.max_steps)
        keep = int((ctx.spec.get("output") or {}).get("saveTopK", 5))
        self.store = checkpoints.Store(ctx.checkpoint_dir, keep_top_k=keep, key=policies.best_key(ctx.spec, characters=self.tokenizer.kind == "char"),
                                       writer=ctx.rank == 0,
                                       log=ctx.reporter.log)
        if ctx.rank == 0:
            self._write_model_files(ctx.checkpoint_dir)

    def _restore(self, restored: checkpoints.Restored) -> None:
        self.net.load_state_dict(restored.weights)
        self.optimizer.load_state_dict(restored.states["optimizer"])
        if self.scaler.is_enabled() and "scaler" in restored.states:
            self.scaler.load_state_dict(restored.states["scaler"])
        _load_normalizer(self.net, restored.states["normalizer"], self.device)
        checkpoints.set_rng_states(restored.states["rng"])
        self.progress = Progress(**restored.checkpoint.state)

    # -- preparation helpers -------------------------------------------------------------

    def _init_dir(self, ctx: base.RunContext) -> Path | None:
        model_spec = ctx.spec.get("model") or {}
        if model_spec.get("pretrained"):
            raise ValueError("spec.model.pretrained: speechbrain-ctc starts from a checkpoint folder "
                             "(spec.model.path), not a hub name")
        if not model_spec.get("path"):
            return None
        path = Path(model_spec["path"])
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

    def _max_steps(self, ctx: base.RunContext) -> int:
        """ctx.max_steps (spec or --max-steps) capped by spec.training.epochs."""
        accumulation = int(self.training.get("gradAccumulation", 1))
        steps_per_epoch = max(1, len(self._epoch_batches(0, ctx)) // accumulation)
        limits = [ctx.max_steps] if ctx.max_steps is not None else []
        if self.training.get("epochs"):
            limits.append(int(self.training["epochs"]) * steps_per_epoch)
        if not limits:
            raise ValueError("spec.training: set maxSteps or epochs")
        return min(limits)  # 0: evaluation only (speechtune eval)

    def _write_model_files(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / HPARAMS_FILE).write_text(json.dumps(dataclasses.asdict(self.model_settings), indent=2))
        self.tokenizer.save(folder)

    def _epoch_batches(self, epoch: int, ctx: base.RunContext) -> list[batching.Batch]:
        batch_size = self.training.get("batchSize")
        batch_seconds = float(self.training.get("batchDuration") or 0.0) or math.inf
        seed = self.seed
        if batch_seconds == math.inf and not batch_size:
            batch_size = 8
        if self.train_settings.batching == "random":  # the benchmark's baseline
            if not batch_size:  # as many utterances as an average batchDuration holds
                batch_size = max(1, round(batch_seconds * len(self.durations) / sum(self.durations)))
            batches = batching.random_batches(len(self.durations), batch_size=int(batch_size), seed=seed, epoch=epoch)
        else:
            batches = batching.length_batches(self.durations, batch_seconds=batch_seconds, seed=seed, epoch=epoch,
                                              max_batch_size=int(batch_size) if batch_size else None)
        return batching.shard(batches, rank=ctx.rank, world_size=ctx.world_size)

    # -- training ------------------------------------------------------------------------

    def train(self, ctx: base.RunContext) -> base.TrainResult:
        accumulation = int(self.training.get("gradAccumulation", 1))
        val_interval = int(self.training.get("valCheckInterval") or max(1, self.max_steps // 5))
        clip = float(self.training.get("gradientClipVal") or 0.0)
        recent: collections.deque[float] = collections.deque(maxlen=LOSS_WINDOW)
        last_loss: float | None = None
        val_loss: float | None = None
        stopped = False
        self.net.train()
        while self.progress.step < self.max_steps and not stopped:
            batches = self._epoch_batches(self.progress.epoch, ctx)
            for start in range(self.progress.batch_in_epoch, len(batches), accumulation):
                group = batches[start : start + accumulation]
                loss, audio_seconds, padding, samples = self._accumulate(group)
                step = self.progress.step + 1
                self._set_learning_rate(step)
                if math.isfinite(loss) and step > (self.train_settings.nan_after_step or math.inf):
                    loss = math.nan  # test hook: what a diverged run looks like to the runtime
                # Every rank sees the same loss (a NaN on one rank stops all) and stop request.
                loss, stop_now = policies.agree(loss, ctx.stop.is_set(), world_size=ctx.world_size, device=self.device)
                if stop_now:
                    ctx.stop.set()
                # Raises NonFiniteLoss before the optimizer applies a poisoned update.
                ctx.reporter.train_step(
                    step=step, loss=loss, learning_rate=self.optimizer.param_groups[0]["lr"],
                    epoch=self.progress.epoch + (start + len(group)) / max(1, len(batches)),
                    audio_seconds=audio_seconds * ctx.world_size, samples=samples * ctx.world_size,
                    padding_ratio=padding)
                self._optimizer_step(clip)
                self.progress.step = step
                self.progress.batch_in_epoch = start + len(group)
                recent.append(loss)
                last_loss = sum(recent) / len(recent)
                if step % val_interval == 0 or step >= self.max_steps:
                    val_loss = self._validate(ctx, step)
                if ctx.stop.is_set():
                    self._save(ctx, metrics={})
                    ctx.reporter.log(f"stop requested: checkpoint saved at step {step}")
                    stopped = True
                    break
                if step >= self.max_steps:
                    break
            else:
                self.progress.epoch += 1
                self.progress.batch_in_epoch = 0
        best = self.store.best()
        return base.TrainResult(
            steps=self.progress.step, epochs=self.progress.epoch + self.progress.batch_in_epoch / max(
                1, len(self._epoch_batches(self.progress.epoch, ctx))),
            train_loss=last_loss, val_loss=val_loss, best_checkpoint=best.path if best else None,
            stopped_early=stopped, model=self._model_facts(), extra=self._facts())

    def _accumulate(self, group: Sequence[batching.Batch]) -> tuple[float, float, float, int]:
        """Forward/backward over the micro-batches of one optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = audio_seconds = padding = 0.0
        samples = 0
        for indices in group:
            batch = self._collate([self.train_utts[i] for i in indices])
            loss = self._loss(batch, epoch=self.progress.epoch) / len(group)
            self.scaler.scale(loss).backward()
            total_loss += float(loss.detach())
            audio_seconds += batch.audio_seconds
            padding += batch.padding_ratio / len(group)
            samples += len(indices)
        return total_loss, audio_seconds, padding, samples

    def _loss(self, batch: audio.Batch, *, epoch: int) -> torch.Tensor:
        lens = batch.lens.to(self.device)
        feats = self.net.features(batch.feats.to(self.device), lens, epoch=epoch)
        with self.precision.autocast():
            log_probs = self.ddp(feats, lens)
        return losses.ctc_loss(log_probs, batch.tokens.to(self.device), lens,
                               batch.token_lens.to(self.device), blank_index=0)

    def _optimizer_step(self, clip: float) -> None:
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _set_learning_rate(self, step: int) -> None:
        peak = float(self.training.get("learningRate", 1e-4))
        warmup = int(self.training.get("warmupSteps", 0))
        lr = schedule.learning_rate(step, peak=peak, warmup=warmup, total=self.max_steps,
                           schedule=self.train_settings.lr_schedule, floor=self.train_settings.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _collate(self, utts: Sequence[manifest.Utterance]) -> audio.Batch:
        return audio.collate(utts, [self.tokenizer.encode(self.normalizer(u.text)) for u in utts], self.features)

    def _validate(self, ctx: base.RunContext, step: int) -> float | None:
        """Validation loss here, WER/CER by the runtime from the hypotheses; then a checkpoint."""
        limit = self.training.get("limitValBatches")
        loss_sum, batches = 0.0, 0
        hypotheses: list[base.Hypothesis] = []
        for batch, log_probs, lens in self._decode_batches(self.valid_utts, limit=limit):
            loss = losses.ctc_loss(log_probs, batch.tokens.to(self.device), lens,
                                   batch.token_lens.to(self.device), blank_index=0)
            loss_sum += float(loss)
            batches += 1
            hypotheses += [base.Hypothesis(utt_id=utt_id, reference=text, hypothesis=hyp, language=lang)
                           for utt_id, text, lang, hyp in zip(batch.ids, batch.texts, batch.languages,
                                                              self.decoder(log_probs, lens))]
        self.net.train()
        val_loss = loss_sum / max(1, batches)
        scores = ctx.reporter.validation(step=step, val_loss=val_loss, hypotheses=hypotheses)
        self._save(ctx, metrics=scores.metrics())
        return val_loss

    def _save(self, ctx: base.RunContext, *, metrics: Mapping[str, float | None]) -> None:
        # Every rank calls this: all refuse non-finite weights together, rank 0 writes.
        states: dict[str, Any] = {"optimizer": self.optimizer.state_dict(),
                                  "normalizer": self.net.normalize._statistics_dict()}
        if self.scaler.is_enabled():
            states["scaler"] = self.scaler.state_dict()
        self.store.save(step=self.progress.step, weights=self.net.state_dict(), states=states,
                        state=dataclasses.asdict(self.progress), metrics=metrics)

    def _decode_batches(self, utts: Sequence[manifest.Utterance], *, limit: int | None = None
                        ) -> Iterator[tuple[audio.Batch, torch.Tensor, torch.Tensor]]:
        self.net.eval()
        durations = [u.duration for u in utts]
        batches = batching.length_batches(durations, batch_seconds=EVAL_BATCH_SECONDS, seed=0, epoch=0,
                                          max_batch_size=32, shuffle=False)
        with torch.no_grad():
            for indices in batches[:limit] if limit else batches:
                batch = self._collate([utts[i] for i in indices])
                lens = batch.lens.to(self.device)
                feats = self.net.features(batch.feats.to(self.device), lens, epoch=self.progress.epoch)
                with self.precision.autocast():
                    log_probs = self.net(feats, lens)
                yield batch, log_probs, lens

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
            "precision": self.precision.name,
        }

    # -- evaluation and export -----------------------------------------------------------

    def evaluate(self, ctx: base.RunContext, manifest_path: Path) -> Sequence[base.Hypothesis]:
        utts = manifest.read(manifest_path)
        results: list[base.Hypothesis] = []
        for batch, log_probs, lens in self._decode_batches(utts):
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
    raise ValueError(f"spec.model.path: {path} holds no {MODEL_FILE} (want a speechtune/SpeechBrain "
                     "checkpoint folder)")


def _saved_model_settings(folder: Path, requested: settings.ModelSettings) -> settings.ModelSettings:
    for candidate in (folder / HPARAMS_FILE, folder.parent / HPARAMS_FILE):
        if candidate.exists():
            return settings.ModelSettings(**json.loads(candidate.read_text()))
    return requested  # a bare SpeechBrain checkpoint: the architecture comes from overrides


def _load_weights(net: model.ConformerCTC, folder: Path, init: Mapping[str, Any]) -> None:
    """Loads the parameters selected by spec.model.init (name prefixes); a CTC head of
    another vocabulary size is skipped, so a new tokenizer gets a fresh head."""
    saved, normalizer = _read_model_folder(folder)
    include, exclude = tuple(init.get("include") or ()), tuple(init.get("exclude") or ())
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


def _distributed(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP over the torchrun process group (one process per GPU)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=device_ids)


# Static conformance: mypy fails here when the class drifts from the Engine protocol.
_: type[base.Engine] = SpeechBrainCTCEngine
