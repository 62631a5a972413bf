"""The optimisation loop: accumulate, step, report, validate, checkpoint, stop on SIGTERM.

A plain loop rather than transformers' Trainer, for three reasons: the runtime wants
per-step speech statistics (audio seconds, padding) that Trainer callbacks never see;
checkpoints hold only the trainable weights (Trainer saves the whole 1B model each time
in adapter mode); and SIGTERM / NaN handling must be exact (save and return / stop
without saving).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import torch

from speechtune.engines import base
from speechtune.engines.hf_ctc import batches as batches_mod
from speechtune.engines.hf_ctc import checkpoints
from speechtune.engines.hf_ctc import decoding
from speechtune.engines.hf_ctc import modelling
from speechtune.engines.hf_ctc import settings as settings_mod
from speechtune.engines.kit import checkpoints as kit_checkpoints
from speechtune.engines.kit import policies


@dataclasses.dataclass
class Loop:
    """Everything one training run steps through; built by the engine's prepare()."""

    hf: settings_mod.HFSettings
    model: torch.nn.Module  # possibly peft- and/or DDP-wrapped
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.grad_scaler.GradScaler
    train_set: batches_mod.AudioDataset
    val_set: batches_mod.AudioDataset
    collator: batches_mod.CTCCollator
    device: str
    autocast: Callable[[], ContextManager[Any]]
    total_steps: int
    batches_per_epoch: int
    store: kit_checkpoints.Store
    world_size: int = 1
    rank: int = 0
    state: checkpoints.LoopState = dataclasses.field(default_factory=checkpoints.LoopState)

    def optimizers(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler}


def epoch_batches(loop: Loop, epoch: int) -> list[list[int]]:
    """This rank's batches of `epoch` (the same on every resume: seeded by seed + epoch)."""
    durations = [e.duration for e in loop.train_set.items]
    all_batches = batches_mod.length_grouped_batches(
        durations, batch_size=loop.hf.batch_size, batch_duration=loop.hf.batch_duration, seed=loop.hf.seed + epoch
    )
    if loop.world_size > 1:  # every rank must step the same number of times
        usable = len(all_batches) // loop.world_size * loop.world_size
        all_batches = all_batches[:usable][loop.rank :: loop.world_size]
    return all_batches


def total_steps(hf: settings_mod.HFSettings, batches_per_epoch: int) -> int:
    """Optimizer steps of the run: maxSteps or epochs, whichever ends first."""
    per_epoch = math.ceil(batches_per_epoch / hf.grad_accumulation)
    limits = [hf.max_steps] if hf.max_steps is not None else []
    if hf.epochs is not None:
        limits.append(hf.epochs * per_epoch)
    return max(1, min(limits))


def run(loop: Loop, ctx: base.RunContext) -> bool:
    """Trains until total_steps, the epoch limit or ctx.stop; returns True when stopped
    by ctx.stop (a checkpoint was saved). NonFiniteLoss from the reporter propagates."""
    interval = loop.hf.val_check_interval or math.ceil(loop.batches_per_epoch / loop.hf.grad_accumulation)
    loop.model.train()
    while loop.state.step < loop.total_steps:
        if loop.hf.epochs is not None and loop.state.epoch >= loop.hf.epochs:
            break
        epoch = epoch_batches(loop, loop.state.epoch)
        todo = epoch[loop.state.batch_in_epoch :]
        data = iter(batches_mod.loader(loop.train_set, todo, loop.collator, num_workers=loop.hf.num_workers))
        while loop.state.batch_in_epoch < len(epoch) and loop.state.step < loop.total_steps:
            take = min(loop.hf.grad_accumulation, len(epoch) - loop.state.batch_in_epoch)
            optimizer_step(loop, ctx, [next(data) for _ in range(take)], epoch_size=len(epoch))
            if loop.state.step % interval == 0 or loop.state.step == loop.total_steps:
                validate_and_save(loop, ctx)
            if ctx.stop.is_set():
                save(loop, ctx)
                return True
        if loop.state.batch_in_epoch >= len(epoch):
            loop.state = dataclasses.replace(loop.state, epoch=loop.state.epoch + 1, batch_in_epoch=0)
    if loop.state.val_loss is None and loop.state.cer is None:  # ended on an epoch limit between validations
        validate_and_save(loop, ctx)
    return False


def optimizer_step(loop: Loop, ctx: base.RunContext, micro_batches: Sequence[dict[str, Any]], *, epoch_size: int) -> None:
    """Forward/backward over the micro-batches, one optimizer step, one report."""
    losses = []
    for micro in micro_batches:
        inputs = {k: v.to(loop.device) for k, v in micro["inputs"].items()}
        with loop.autocast():
            loss = loop.model(**inputs).loss
        loop.scaler.scale(loss / len(micro_batches)).backward()
        losses.append(float(loss.detach()))
    if loop.hf.gradient_clip:
        loop.scaler.unscale_(loop.optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in loop.model.parameters() if p.requires_grad], loop.hf.gradient_clip)
    loop.scaler.step(loop.optimizer)
    loop.scaler.update()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    state = loop.state
    batch_in_epoch = state.batch_in_epoch + len(micro_batches)
    # Every rank sees the same loss (a NaN on one rank stops all) and the same stop request.
    mean_loss, stop = policies.agree(sum(losses) / len(losses), ctx.stop.is_set(), world_size=loop.world_size,
                                     device=loop.device)
    if stop:
        ctx.stop.set()
    loop.state = dataclasses.replace(
        state, step=state.step + 1, batch_in_epoch=batch_in_epoch, train_loss=mean_loss, val_loss=None, cer=None, wer=None
    )
    audio_seconds = sum(m["audio_seconds"] for m in micro_batches)
    ctx.reporter.train_step(
        step=loop.state.step,
        loss=mean_loss,
        learning_rate=float(loop.scheduler.get_last_lr()[0]),
        epoch=state.epoch + batch_in_epoch / max(1, epoch_size),
        # Ranks see equal shares of batches; the runtime wants the job-wide amount.
        audio_seconds=audio_seconds * loop.world_size,
        samples=sum(len(m["indices"]) for m in micro_batches) * loop.world_size,
        padding_ratio=sum(m["padding_ratio"] for m in micro_batches) / len(micro_batches),
    )


def validate_and_save(loop: Loop, ctx: base.RunContext) -> None:
    """Validation loss and hypotheses of (at most limitValBatches of) the validation set;
    the runtime scores them; then a checkpoint ranked by those scores."""
    items = loop.val_set.items
    order = sorted(range(len(items)), key=lambda i: items[i].duration, reverse=True)
    size = loop.hf.eval_batch_size
    val_batches = [order[i : i + size] for i in range(0, len(order), size)]
    if loop.hf.limit_val_batches:
        val_batches = val_batches[: loop.hf.limit_val_batches]
    data = batches_mod.loader(loop.val_set, val_batches, loop.collator, num_workers=loop.hf.num_workers)
    decoded, loss = decoding.run(loop.model, data, loop.collator.tokenizer, device=loop.device, autocast=loop.autocast)
    hypotheses = [base.Hypothesis(utt_id=items[d.index].utt_id, reference=items[d.index].raw_text, hypothesis=d.text)
                  for d in decoded]
    scores = ctx.reporter.validation(step=loop.state.step, val_loss=loss, hypotheses=hypotheses)
    loop.state = dataclasses.replace(loop.state, val_loss=loss, cer=scores.cer, wer=scores.wer)
    save(loop, ctx)


def save(loop: Loop, ctx: base.RunContext) -> Path | None:
    """Every rank checks the weights (a NaN stops all ranks alike); rank 0 writes the
    checkpoint and prunes to saveTopK."""
    return checkpoints.save(loop.store, model=modelling.unwrap_ddp(loop.model), optimizers=loop.optimizers(),
                            state=loop.state)

