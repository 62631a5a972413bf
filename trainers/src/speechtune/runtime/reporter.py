"""The runtime's side of `engines.base.Reporter`: one object that turns the engine's
callbacks into Prometheus metrics, the console progress, train_log.txt and the numbers
metrics.json keeps. Non-finite losses stop the run here, the same way for every engine."""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Deque, Sequence, TextIO

from speechtune.data import normalize
from speechtune.engines import base
from speechtune.runtime import console as consoles
from speechtune.runtime import metrics as run_metrics
from speechtune.runtime import scoring


@dataclasses.dataclass
class Summary:
    """What the run reported, for metrics.json and the sweep row."""

    steps: int = 0
    max_steps: int | None = None
    last_loss: float | None = None
    first_loss: float | None = None
    audio_seconds: float = 0.0
    samples: int = 0
    # Throughput, one definition for every engine: wall-clock between consecutive step
    # reports (data loading, forward/backward, optimizer, checkpoint writes), leaving out
    # validation passes and everything before the first step (model build, warm-up).
    train_seconds: float = 0.0
    timed_audio_seconds: float = 0.0  # speech of the timed steps (all but the first)
    padding_ratios: list[float] = dataclasses.field(default_factory=list)
    losses: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (step, loss), thinned
    validations: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def mean_padding_ratio(self) -> float | None:
        return sum(self.padding_ratios) / len(self.padding_ratios) if self.padding_ratios else None

    @property
    def audio_seconds_per_second(self) -> float | None:
        return self.timed_audio_seconds / self.train_seconds if self.train_seconds > 0 else None


class RunReporter:
    """Implements engines.base.Reporter for rank 0 (metrics, console, log file) and, with
    `primary=False`, for other ranks (only the non-finite loss check)."""

    def __init__(self, *, metrics: run_metrics.TrainingMetrics | None, log_file: Path | None,
                 console: consoles.Console | None = None, primary: bool = True, log_every: int = 10,
                 normalizer: Callable[[str], str] = normalize.get("none")) -> None:
        self.metrics = metrics
        self.normalizer = normalizer  # spec.data.normalization: validation scores like the final ones
        self.primary = primary
        self.console = console or consoles.Console(sys.stderr)
        self.log_every = log_every
        self.summary = Summary()
        self._log: TextIO | None = log_file.open("a", encoding="utf-8") if log_file and primary else None
        self._recent: Deque[tuple[float, int]] = collections.deque(maxlen=50)  # (time, step)
        self._started = time.monotonic()
        self._clock: float | None = None  # when the last step report or validation ended

    # -- engines.base.Reporter ----------------------------------------------------------

    def set_max_steps(self, max_steps: int) -> None:
        self.summary.max_steps = max_steps
        if self.metrics:
            self.metrics.max_steps.set(max_steps)

    def train_step(self, *, step: int, loss: float, learning_rate: float | None = None,
                   epoch: float | None = None, audio_seconds: float = 0.0, samples: int = 0,
                   padding_ratio: float | None = None) -> None:
        if not math.isfinite(loss):
            raise base.NonFiniteLoss(
                f"training loss is {loss} at step {step}: stopping; the newest checkpoint is the last good one "
                "(lower training.learningRate or set training.gradientClipVal)")
        if not self.primary:
            return
        summary = self.summary
        summary.steps = step
        summary.last_loss = loss
        summary.first_loss = loss if summary.first_loss is None else summary.first_loss
        summary.audio_seconds += audio_seconds
        summary.samples += samples
        now = time.monotonic()
        step_seconds = now - self._clock if self._clock is not None else None
        if step_seconds is not None:
            summary.train_seconds += step_seconds
            summary.timed_audio_seconds += audio_seconds
        self._clock = now
        if padding_ratio is not None:
            summary.padding_ratios.append(padding_ratio)
        if step <= 10 or step % max(1, self.log_every) == 0:
            summary.losses.append((step, round(loss, 5)))
        self._recent.append((time.monotonic(), step))
        self._update_metrics(step=step, loss=loss, learning_rate=learning_rate, epoch=epoch,
                             audio_seconds=audio_seconds, samples=samples, padding_ratio=padding_ratio,
                             step_seconds=step_seconds)
        text = consoles.progress_line(step=step, max_steps=summary.max_steps or step, loss=loss,
                                      eta_seconds=self.eta_seconds(), audio_per_second=summary.audio_seconds_per_second)
        self.console.progress(text)
        if step % max(1, self.log_every) == 0 or step == summary.max_steps:
            lr = f" lr {learning_rate:.3g}" if learning_rate is not None else ""
            pad = f" padding {padding_ratio:.2f}" if padding_ratio is not None else ""
            self._write(f"step {step}/{summary.max_steps} loss {loss:.4f}{lr}{pad} "
                        f"ETA {consoles.format_eta(self.eta_seconds())}", show=not self.console.live)

    def validation(self, *, step: int, val_loss: float | None, hypotheses: Sequence[base.Hypothesis] | None = None,
                   wer: float | None = None, cer: float | None = None, bleu: float | None = None) -> base.Validation:
        if hypotheses is not None:  # every rank scores alike, so all rank checkpoints alike
            result = scoring.validation(hypotheses, self.normalizer, val_loss=val_loss)
        else:
            result = base.Validation(val_loss=val_loss, wer=wer, cer=cer, bleu=bleu)
        if not self.primary:
            return result
        val_loss, wer, cer, bleu = result.val_loss, result.wer, result.cer, result.bleu
        record = {"step": step, "val_loss": val_loss, "wer": wer, "cer": cer, "bleu": bleu}
        self.summary.validations.append({k: v for k, v in record.items() if v is not None})
        if self.metrics:
            for gauge, value in ((self.metrics.val_loss, val_loss), (self.metrics.val_wer, wer),
                                 (self.metrics.val_cer, cer), (self.metrics.val_bleu, bleu)):
                if value is not None:
                    gauge.set(value)
        parts = [f"{name} {value:.4f}" for name, value in record.items() if name != "step" and value is not None]
        self._write(f"validation at step {step}: {', '.join(parts)}")
        self._clock = time.monotonic() if self._clock is not None else None  # validation is not a step
        return result

    def log(self, message: str) -> None:
        if self.primary:
            self._write(message)

    def best_checkpoint(self, path: Path | None) -> None:
        """Exported for the operator's status.bestCheckpoint once training has ended."""
        if self.primary and self.metrics and path is not None:
            self.metrics.best_checkpoint.info({"path": str(path)})

    # -- runtime side ---------------------------------------------------------------------

    def eta_seconds(self) -> float | None:
        """Seconds to max_steps at the step rate of the recent window."""
        if len(self._recent) < 2 or not self.summary.max_steps:
            return None
        (t0, s0), (t1, s1) = self._recent[0], self._recent[-1]
        if s1 <= s0 or t1 <= t0:
            return None
        return (self.summary.max_steps - s1) * (t1 - t0) / (s1 - s0)

    def close(self) -> None:
        self.console.close()
        if self._log:
            self._log.close()
            self._log = None

    def _update_metrics(self, *, step: int, loss: float, learning_rate: float | None, epoch: float | None,
                        audio_seconds: float, samples: int, padding_ratio: float | None,
                        step_seconds: float | None) -> None:
        m = self.metrics
        if m is None:
            return
        m.step.set(step)
        m.train_loss.set(loss)
        if learning_rate is not None:
            m.learning_rate.set(learning_rate)
        if epoch is not None:
            m.epoch.set(epoch)
        m.audio_seconds.inc(audio_seconds)
        m.samples.inc(samples)
        if padding_ratio is not None:
            m.padding_ratio.set(padding_ratio)
        if step_seconds is not None:
            m.step_duration.observe(step_seconds)
        peak = peak_gpu_memory_bytes()
        if peak is not None:
            m.gpu_memory.set(peak)

    def _write(self, message: str, *, show: bool = True) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if self._log:
            self._log.write(f"{stamp} {message}\n")
            self._log.flush()
        if show:
            self.console.line(message)


def peak_gpu_memory_bytes() -> int | None:
    """Peak CUDA memory of this process, when the engine uses torch on a GPU."""
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())
