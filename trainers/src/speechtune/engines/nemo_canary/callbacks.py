"""Lightning callbacks that connect a NeMo run to the SpeechTune runtime: metrics go to the
runtime's Reporter, SIGTERM (ctx.stop) ends training after the current step."""

from __future__ import annotations

import math
import threading
from typing import Any, Mapping

import lightning.pytorch as pl
import torch

from speechtune.engines import base


def _scalar(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.detach().float().item()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class ReportMetrics(pl.Callback):
    """Per optimizer step: loss, learning rate, audio seconds (from `num_frames`, the
    waveform samples of the batch) and padding; per validation: val_loss, WER and BLEU.
    Rank 0 reports; every rank refuses a non-finite loss so DDP peers stop together."""

    def __init__(self, reporter: base.Reporter, *, sample_rate: int, rank: int, world_size: int) -> None:
        self._reporter = reporter
        self._sample_rate = sample_rate
        self._rank = rank
        self._world_size = world_size
        self._audio_samples = 0.0
        self._samples = 0
        self._padding: list[float] = []
        self.last_train_loss: float | None = None
        self.last_val_loss: float | None = None
        self.validations: list[dict[str, float | None]] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # NeMo's training_step wrapper moves its "log" dict into self.log_dict(on_step=True),
        # so this step's values are in callback_metrics.
        log: Mapping[str, Any] = trainer.callback_metrics
        self._audio_samples += _scalar(log.get("num_frames")) or 0.0
        self._samples += int(_scalar(log.get("batch_size")) or 0)
        ratio = _scalar(log.get("input_to_padding_ratio"))
        if ratio is not None:
            self._padding.append(1.0 - ratio)
        if (batch_idx + 1) % max(1, trainer.accumulate_grad_batches) != 0:
            return  # not an optimizer step yet
        loss = _scalar(outputs.get("loss")) if isinstance(outputs, Mapping) else None
        if loss is None:
            loss = _scalar(trainer.callback_metrics.get("train_loss"))
        audio_samples, samples = self._audio_samples, self._samples
        if self._world_size > 1:  # speech of all ranks; the mean loss, so a NaN anywhere stops every rank
            totals = trainer.strategy.reduce(
                torch.tensor([audio_samples, float(samples), math.nan if loss is None else loss],
                             dtype=torch.float64, device=pl_module.device), reduce_op="sum"
            )
            audio_samples, samples = float(totals[0]), int(totals[1])
            loss = float(totals[2]) / self._world_size if loss is not None else None
        padding = sum(self._padding) / len(self._padding) if self._padding else None
        self._audio_samples, self._samples, self._padding = 0.0, 0, []
        if loss is not None and not math.isfinite(loss):
            raise base.NonFiniteLoss(f"step {trainer.global_step}: loss is {loss}")
        self.last_train_loss = loss
        if self._rank != 0 or loss is None:
            return
        self._reporter.train_step(
            step=trainer.global_step,
            loss=loss,
            learning_rate=_scalar(log.get("learning_rate")),
            epoch=float(trainer.current_epoch),
            audio_seconds=audio_samples / self._sample_rate,
            samples=samples,
            padding_ratio=padding,
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        result = {
            "val_loss": _scalar(metrics.get("val_loss")),
            "wer": _scalar(metrics.get("val_wer")),
            "bleu": _scalar(metrics.get("val_sacreBLEU", metrics.get("val_bleu"))),
        }
        self.last_val_loss = result["val_loss"]
        self.validations.append({"step": float(trainer.global_step), **result})
        if self._rank == 0:
            self._reporter.validation(
                step=trainer.global_step, val_loss=result["val_loss"], wer=result["wer"], bleu=result["bleu"]
            )


class StopOnSignal(pl.Callback):
    """SIGTERM sets ctx.stop; finishing the current step lets exp_manager's checkpoint
    callback write a `-last.ckpt` at train end, which the next run resumes from."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self.stopped = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Every rank stops at the same step when any rank got SIGTERM (one collective).
        if trainer.strategy.reduce_boolean_decision(self._stop.is_set(), all=False):
            self.stopped = True
            trainer.should_stop = True
