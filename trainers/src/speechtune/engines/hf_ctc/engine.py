"""HFCTCEngine: the MMS Banglish guide's fine-tuning, on transformers 5 and peft.

prepare() reads the settings, builds or grows
the vocabulary, loads the model, makes the mode's parameters trainable and restores the
newest checkpoint; train() runs the loop; evaluate() decodes a manifest; export() writes
the Hugging Face folder (see export.py). With max_steps 0 (`speechtune eval`) prepare()
only loads the exported folder at spec.model.path for evaluate().
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import torch
import transformers
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

from speechtune.data import normalize
from speechtune.engines import base
from speechtune.engines.hf_ctc import batches as batches_mod
from speechtune.engines.hf_ctc import checkpoints
from speechtune.engines.hf_ctc import decoding
from speechtune.engines.hf_ctc import export as export_mod
from speechtune.engines.hf_ctc import loop as loop_mod
from speechtune.engines.hf_ctc import modelling
from speechtune.engines.hf_ctc import settings as settings_mod
from speechtune.engines.hf_ctc import vocab as vocab_mod
from speechtune.engines.kit import policies

EXPORT_SUBDIR = "model"
TOKENIZER_SUBDIR = "tokenizer"


class HFCTCEngine:
    """The `hf-ctc` engine (see speechtune.engines.base.Engine)."""

    def __init__(self) -> None:
        self._loop: loop_mod.Loop | None = None
        self._decoder: Decoder | None = None  # evaluation only (max_steps 0): no loop
        self._processor: Wav2Vec2Processor | None = None
        self._hf: settings_mod.HFSettings | None = None
        self._facts: dict[str, Any] = {}
        self._model: base.ModelFacts | None = None

    def prepare(self, ctx: base.RunContext) -> None:
        hf, source = settings_mod.from_spec(ctx.spec, max_steps=ctx.max_steps, model_dir=ctx.model_dir)
        self._hf = hf
        if ctx.max_steps == 0:
            self._decoder = load_export(source, hf, ctx)
            return
        policies.seed_everything(hf.seed)
        cache_dir = ctx.model_dir if source.local_dir is None else None
        require_model_folder(source)
        normalizer = normalize.get(hf.normalization)
        train_examples = batches_mod.examples(ctx.data.train, normalizer)
        val_examples = batches_mod.examples(ctx.data.validation, normalizer)
        if not train_examples:
            raise ValueError(f"spec.data.train: {ctx.data.train} has no utterances")
        if not val_examples:
            raise ValueError(f"spec.data.validation: {ctx.data.validation} has no utterances")

        pretrained = None if hf.vocabulary == "build" else modelling.load_pretrained_vocabulary(source, hf.adapter_lang, cache_dir)
        if hf.vocabulary == "extend" and pretrained is None:
            raise ValueError(
                f"spec.training.overrides.vocabulary: extend needs a model with a tokenizer for "
                f"{hf.adapter_lang!r}; {source.name_or_path} has none"
            )
        texts = [e.text for e in train_examples]
        if pretrained is not None:
            vocab, added = vocab_mod.extend(pretrained, texts, hf.extra_characters)
        else:
            vocab, added = vocab_mod.build(texts), vocab_mod.characters(texts)
        tokenizer = vocab_mod.save_tokenizer(vocab, ctx.run_dir / TOKENIZER_SUBDIR, write=ctx.rank == 0)
        feature_extractor = modelling.load_feature_extractor(source, cache_dir)
        self._processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)

        model, adapter_loaded = modelling.load_model(
            source, adapter_lang=hf.adapter_lang, model_config=hf.model_config, cache_dir=cache_dir
        )
        modelling.fit_head(model, vocab, keep_rows=pretrained is not None)
        if hf.gradient_checkpointing:
            # transformers 5.23's name for gradient_checkpointing_enable. Non-reentrant: with
            # a frozen encoder the checkpointed layers' inputs need no grad, which the
            # reentrant variant would turn into missing gradients.
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        trainable = modelling.make_trainable(model, hf, fresh_adapter=not adapter_loaded and pretrained is None)
        device = ctx.device
        trainable.to(device)
        precision = policies.precision_for(hf.precision, device, ctx.reporter.log)
        if hf.mode != "none" and precision.dtype is not None:
            modelling.store_frozen_in(trainable, precision.dtype)
        n_trainable, n_total = modelling.count_parameters(trainable)
        self._model = base.ModelFacts(
            architecture=f"{type(model).__name__} ({hf.mode} fine-tuning of {source.name_or_path})",
            tokenizer=f"characters ({type(tokenizer).__name__})", vocab_size=len(vocab),
            parameters=n_total, trainable_parameters=n_trainable)
        self._facts = {
            "mode": hf.mode, "trainable_parameters": n_trainable, "total_parameters": n_total,
            "vocab_size": len(vocab), "added_characters": "".join(added), "adapter_lang": hf.adapter_lang,
            "adapter_loaded": adapter_loaded,
        }
        ctx.reporter.log(
            f"hf-ctc: {hf.mode} fine-tuning of {source.name_or_path}: {n_trainable:,} of {n_total:,} parameters "
            f"trainable; vocabulary {len(vocab)} ({'extended' if pretrained is not None else 'built'}, "
            f"added {''.join(added)!r})"
        )

        optimizer = torch.optim.AdamW(
            [p for p in trainable.parameters() if p.requires_grad], lr=hf.learning_rate, weight_decay=hf.weight_decay
        )
        train_set = batches_mod.AudioDataset(train_examples, feature_extractor.sampling_rate)
        loop = loop_mod.Loop(
            hf=hf, model=trainable, optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),  # replaced below
            scaler=precision.grad_scaler(),
            train_set=train_set, val_set=batches_mod.AudioDataset(val_examples, feature_extractor.sampling_rate),
            collator=batches_mod.CTCCollator(feature_extractor, tokenizer), device=device, autocast=precision.autocast,
            total_steps=0, batches_per_epoch=0, world_size=ctx.world_size, rank=ctx.rank,
            store=checkpoints.store(ctx.checkpoint_dir, keep_top_k=hf.save_top_k, key=policies.best_key(ctx.spec, characters=True),
                                    rank=ctx.rank,
                                          log=ctx.reporter.log),
        )
        loop.batches_per_epoch = len(loop_mod.epoch_batches(loop, 0))
        loop.total_steps = loop_mod.total_steps(hf, loop.batches_per_epoch)
        loop.scheduler = transformers.get_linear_schedule_with_warmup(optimizer, hf.warmup_steps, loop.total_steps)
        restored = loop.store.restore_newest() if ctx.resume else None
        if restored is not None:
            loop.state = checkpoints.load(restored, model=trainable, optimizers=loop.optimizers())
            ctx.reporter.log(f"hf-ctc: resumed from {restored.checkpoint.path} (step {loop.state.step})")
        if ctx.world_size > 1:
            loop.model = distributed(trainable, device)
        ctx.reporter.set_max_steps(loop.total_steps)
        self._loop = loop

    def train(self, ctx: base.RunContext) -> base.TrainResult:
        loop = self._require_loop()
        stopped = loop_mod.run(loop, ctx)
        if loop.world_size > 1:  # rank 0 may still be writing the last checkpoint
            torch.distributed.barrier()
        best = loop.store.best()
        if not stopped and best is not None and best.step != loop.state.step:
            # Like load_best_model_at_end: evaluate and export the best validated weights.
            checkpoints.load(loop.store.restore(best), model=modelling.unwrap_ddp(loop.model), optimizers=None)
            ctx.reporter.log(f"hf-ctc: restored the best checkpoint {best.path.name} for evaluation and export")
        steps_per_epoch = max(1, -(-loop.batches_per_epoch // loop.hf.grad_accumulation))
        return base.TrainResult(
            steps=loop.state.step,
            epochs=loop.state.epoch + loop.state.batch_in_epoch / max(1, loop.batches_per_epoch),
            train_loss=loop.state.train_loss,
            val_loss=loop.state.val_loss,
            best_checkpoint=best.path if best else None,
            stopped_early=stopped,
            model=self._model,
            extra={**self._facts, "steps_per_epoch": steps_per_epoch},
        )

    def evaluate(self, ctx: base.RunContext, manifest: Path) -> Sequence[base.Hypothesis]:
        hf = self._hf
        if self._decoder is not None:
            decoder = self._decoder
        else:
            loop = self._require_loop()
            decoder = Decoder(loop.model, loop.collator, loop.device, loop.autocast)
        assert hf is not None
        items = batches_mod.examples(manifest, normalize.get(hf.normalization))
        dataset = batches_mod.AudioDataset(items, decoder.collator.feature_extractor.sampling_rate)
        order = sorted(range(len(items)), key=lambda i: items[i].duration, reverse=True)
        groups = [order[i : i + hf.eval_batch_size] for i in range(0, len(order), hf.eval_batch_size)]
        data = batches_mod.loader(dataset, groups, decoder.collator, num_workers=hf.num_workers)
        decoded, _ = decoding.run(
            decoder.model, data, decoder.collator.tokenizer, device=decoder.device, autocast=decoder.autocast
        )
        language = ctx.spec.data.target_lang
        by_index = {d.index: d.text for d in decoded}
        return [
            base.Hypothesis(utt_id=e.utt_id, reference=e.raw_text, hypothesis=by_index[i], language=language, duration=e.duration)
            for i, e in enumerate(items)
        ]

    def export(self, ctx: base.RunContext) -> Path:
        loop, hf, processor = self._require_loop(), self._hf, self._processor
        assert hf is not None and processor is not None
        directory = ctx.run_dir / EXPORT_SUBDIR
        plain = export_mod.write(
            modelling.unwrap_ddp(loop.model), processor, directory, mode=hf.mode, adapter_lang=hf.adapter_lang
        )
        loop.model = plain  # a merged LoRA model decodes the same, without the peft wrapper
        return directory

    def _require_loop(self) -> loop_mod.Loop:
        if self._loop is None:
            raise RuntimeError("HFCTCEngine: prepare() must run first")
        return self._loop


@dataclasses.dataclass(frozen=True)
class Decoder:
    """What evaluate() needs: a model in the run's precision and the collator that holds
    the feature extractor and tokenizer."""

    model: torch.nn.Module
    collator: batches_mod.CTCCollator
    device: str
    autocast: Any


def load_export(source: settings_mod.ModelSource, hf: settings_mod.HFSettings, ctx: base.RunContext) -> Decoder:
    """`speechtune eval`: the exported folder exactly as saved (weights with its adapter or
    merged LoRA, and its own processor); no base-model creation, vocabulary rebuild, head
    resize, PEFT wrapping or optimizer, which would change what the export decodes."""
    if source.local_dir is None or not (source.local_dir / "config.json").exists():
        raise ValueError(f"spec.model.path: {source.name_or_path} is not an exported model folder (no config.json)")
    processor = Wav2Vec2Processor.from_pretrained(source.name_or_path)
    model: torch.nn.Module = Wav2Vec2ForCTC.from_pretrained(source.name_or_path)
    model.to(ctx.device).eval()
    collator = batches_mod.CTCCollator(processor.feature_extractor, processor.tokenizer)
    ctx.reporter.log(f"hf-ctc: evaluating {source.name_or_path} ({sum(p.numel() for p in model.parameters()):,} parameters)")
    return Decoder(model, collator, ctx.device, policies.precision_for(hf.precision, ctx.device, ctx.reporter.log).autocast)


def require_model_folder(source: settings_mod.ModelSource) -> None:
    """A local model.path must hold a Hugging Face model; say so in one line, not in
    from_pretrained's traceback."""
    if source.local_dir is not None and not (source.local_dir / "config.json").exists():
        raise ValueError(
            f"spec.model.path: {source.local_dir} holds no Hugging Face model (no config.json); for "
            "examples/tiny-mms.yaml build its base with `make tiny-mms-base`"
        )


def distributed(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """DDP over torchrun's process group (one process per GPU); every rank loaded the same
    checkpoint, rank 0 alone writes new ones."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    device_ids = [int(device.split(":")[1])] if device.startswith("cuda:") else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)




# Static conformance: mypy fails here when the class drifts from the Engine protocol.
_: type[base.Engine] = HFCTCEngine
