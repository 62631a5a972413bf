"""The one training loop of speechbrain-ctc and hf-ctc (nemo-canary keeps NeMo's Lightning
Trainer and plugs the same policies in through callbacks).

Why in-house and not Lightning Fabric: measured side by side on speechbrain-ctc's
Conformer-CTC (tests/bench/bench_fabric.py, alternating rounds, 2 CPU cores), Fabric ran
at 0.795x this loop's optimizer-step throughput, above the 3 % the issue allows; the
policies (precision, DDP, stop/NaN agreement, checkpoints) are still written once, here
and in kit/policies.py and kit/checkpoints.py.

The loop owns: device placement, the optimizer (AdamW over the trainable parameters),
precision (autocast around the network's forward, GradScaler for fp16), DDP wrapping,
sharding batches across ranks, gradient accumulation (no all-reduce on the inner
micro-batches), clipping, the LR schedule step, agreement across ranks on the loss and
on stopping, validation cadence, reporting to the runtime, checkpoints (save, resume,
best at the end). An engine supplies a `Task`: the model, which weights a checkpoint
holds, batches, the loss and validation decoding.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
from typing import Any, Callable, Generic, Iterator, Mapping, Protocol, Sequence, TypeVar

import torch

from speechtune.engines import base
from speechtune.engines.kit import checkpoints, policies

LOSS_WINDOW = 20  # optimizer steps averaged into TrainResult.train_loss

BatchT = TypeVar("BatchT")
Forward = Callable[..., Any]  # the network's forward under the run's autocast


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the loop reads from the spec (the engine maps its own settings onto it)."""

    learning_rate: float
    weight_decay: float
    max_steps: int | None  # spec.training.maxSteps or --max-steps; with epochs, the lower wins
    epochs: int | None
    grad_accumulation: int = 1
    gradient_clip: float = 0.0  # 0: no clipping
    val_check_interval: int | None = None  # None: once per epoch (Lightning's default)
    precision: str = "fp32"
    save_top_k: int = 5
    best_by: str = "wer"


@dataclasses.dataclass(frozen=True)
class Facts:
    """Per training batch, for the runtime's throughput and padding figures."""

    audio_seconds: float
    samples: int
    padding_ratio: float | None


@dataclasses.dataclass
class Position:
    """Where training stands, saved in every checkpoint: a restart continues at the same
    optimizer step and the same batch of the same epoch."""

    step: int = 0
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of `epoch` already consumed (this rank's share)


class Task(Protocol, Generic[BatchT]):
    """What an engine hands the loop."""

    @property
    def model(self) -> torch.nn.Module:
        """The network; the loop moves it to the device and wraps it in DDP."""
        ...

    def weights(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds (everything, or the trainable weights of a PEFT mode)."""
        ...

    def load_weights(self, weights: Mapping[str, torch.Tensor]) -> None: ...

    def states(self) -> dict[str, Any]:
        """Engine state a checkpoint keeps beside the weights (plain containers, tensors)."""
        ...

    def load_states(self, states: Mapping[str, Any]) -> None: ...

    def plans(self, epoch: int) -> Sequence[Sequence[int]]:
        """Every batch of `epoch` (all ranks), the same on every resume: seeded by epoch."""
        ...

    def load(self, plans: Sequence[Sequence[int]]) -> Iterator[BatchT]:
        """The planned batches, loaded (lazily: a data loader or a generator)."""
        ...

    def facts(self, batch: BatchT) -> Facts: ...

    def loss(self, forward: Forward, batch: BatchT, *, epoch: int) -> torch.Tensor:
        """This batch's mean loss; `forward` is the (DDP-wrapped) network under autocast."""
        ...

    def validate(self, forward: Forward) -> tuple[float | None, list[base.Hypothesis]]:
        """Validation loss and hypotheses (the model is in eval mode, gradients off)."""
        ...


ScheduleFactory = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


def shard(batches: Sequence[Sequence[int]], *, rank: int, world_size: int) -> list[Sequence[int]]:
    """Every rank takes the same number of batches (DDP steps must line up)."""
    usable = len(batches) - len(batches) % world_size if len(batches) >= world_size else len(batches)
    return list(batches[rank:usable:world_size])


class Loop(Generic[BatchT]):
    """Built by an engine's prepare(); train() runs it."""

    def __init__(self, task: Task[BatchT], settings: Settings, ctx: base.RunContext, *,
                 schedule: ScheduleFactory) -> None:
        self.task = task
        self.settings = settings
        self.ctx = ctx
        self.device = torch.device(ctx.device)
        task.model.to(self.device)
        self.precision = policies.precision_for(settings.precision, ctx.device, ctx.reporter.log)
        self.trainable = [p for p in task.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=settings.learning_rate,
                                           weight_decay=settings.weight_decay)
        self.scaler = self.precision.grad_scaler()
        self.batches_per_epoch = len(self._epoch(0))
        self.total_steps = self._total_steps()
        self.scheduler = schedule(self.optimizer, self.total_steps)
        self.position = Position()
        self.store = checkpoints.Store(ctx.checkpoint_dir, keep_top_k=settings.save_top_k, key=settings.best_by,
                                       writer=ctx.rank == 0, log=ctx.reporter.log)
        self.network: torch.nn.Module = task.model  # what training steps call: DDP-wrapped when distributed
        self.train_loss: float | None = None
        self.val_loss: float | None = None
        self._scores: Mapping[str, float | None] = {}  # the current step's validation, if it ran
        ctx.reporter.set_max_steps(self.total_steps)

    # -- preparation -----------------------------------------------------------------------

    def resume(self) -> checkpoints.Restored | None:
        """Continues from the newest readable checkpoint (the store skips broken ones)."""
        restored = self.store.restore_newest()
        if restored is None:
            return None
        self.task.load_weights(restored.weights)
        self.task.load_states(restored.states)
        self.optimizer.load_state_dict(restored.states["optimizer"])
        self.scheduler.load_state_dict(restored.states["scheduler"])
        if self.scaler.is_enabled() and "scaler" in restored.states:
            self.scaler.load_state_dict(restored.states["scaler"])
        checkpoints.set_rng_states(restored.states["rng"])
        fields = {f.name for f in dataclasses.fields(Position)}
        self.position = Position(**{k: v for k, v in restored.checkpoint.state.items() if k in fields})
        self.ctx.reporter.log(f"resumed from {restored.checkpoint.path} at step {self.position.step}")
        return restored

    def distribute(self) -> None:
        """DDP over torchrun's process group (one process per GPU); every rank holds the
        same weights (same seed, or the same checkpoint), rank 0 alone writes."""
        if self.ctx.world_size <= 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        ids = [self.device.index] if self.device.type == "cuda" and self.device.index is not None else None
        self.network = torch.nn.parallel.DistributedDataParallel(self.task.model, device_ids=ids)

    def _epoch(self, epoch: int) -> list[Sequence[int]]:
        return shard(self.task.plans(epoch), rank=self.ctx.rank, world_size=self.ctx.world_size)

    def _total_steps(self) -> int:
        """maxSteps or epochs x optimizer steps per epoch, whichever ends first; 0 means
        evaluation only (`speechtune eval`)."""
        limits = [self.settings.max_steps] if self.settings.max_steps is not None else []
        if self.settings.epochs:
            limits.append(self.settings.epochs * self.steps_per_epoch)
        if not limits:
            raise ValueError("spec.training: set maxSteps or epochs")
        return min(limits)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.batches_per_epoch / self.settings.grad_accumulation))

    # -- training --------------------------------------------------------------------------

    def train(self) -> base.TrainResult:
        ctx, settings = self.ctx, self.settings
        interval = settings.val_check_interval or self.steps_per_epoch
        recent: collections.deque[float] = collections.deque(maxlen=LOSS_WINDOW)
        stopped = False
        self.network.train()
        while self.position.step < self.total_steps and not stopped:
            plans = self._epoch(self.position.epoch)
            data = self.task.load(plans[self.position.batch_in_epoch :])
            while self.position.batch_in_epoch < len(plans) and self.position.step < self.total_steps:
                take = min(settings.grad_accumulation, len(plans) - self.position.batch_in_epoch)
                loss = self._step([next(data) for _ in range(take)], epoch_size=len(plans))
                recent.append(loss)
                self.train_loss = sum(recent) / len(recent)
                step = self.position.step
                if step % interval == 0 or step == self.total_steps:
                    self._validate()
                if ctx.stop.is_set():
                    self._save()
                    ctx.reporter.log(f"stop requested: checkpoint saved at step {step}")
                    stopped = True
                    break
            if self.position.batch_in_epoch >= len(plans):
                self.position.epoch += 1
                self.position.batch_in_epoch = 0
        if ctx.world_size > 1:  # rank 0 may still be writing the last checkpoint
            torch.distributed.barrier()
        best = self.store.best()
        if not stopped and best is not None and best.step != self.position.step:
            # Like load_best_model_at_end: evaluate and export the best validated weights.
            restored = self.store.restore(best)
            self.task.load_weights(restored.weights)
            self.task.load_states(restored.states)
            ctx.reporter.log(f"restored the best checkpoint {best.path.name} ({settings.best_by}) "
                             "for evaluation and export")
        return base.TrainResult(
            steps=self.position.step,
            epochs=self.position.epoch + self.position.batch_in_epoch / max(1, self.batches_per_epoch),
            train_loss=self.train_loss, val_loss=self.val_loss, best_checkpoint=best.path if best else None,
            stopped_early=stopped)

    def _step(self, micro_batches: Sequence[BatchT], *, epoch_size: int) -> float:
        """Forward/backward over the micro-batches, agreement, one optimizer step, one report."""
        forward = self.forward(self.network)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for index, batch in enumerate(micro_batches):
            # DDP all-reduces gradients on the last micro-batch only.
            inner = index < len(micro_batches) - 1 and isinstance(self.network, torch.nn.parallel.DistributedDataParallel)
            with self.network.no_sync() if inner else contextlib.nullcontext():  # type: ignore[operator]
                loss = self.task.loss(forward, batch, epoch=self.position.epoch) / len(micro_batches)
                self.scaler.scale(loss).backward()
            total += float(loss.detach())
        step = self.position.step + 1
        facts = [self.task.facts(b) for b in micro_batches]
        # Every rank sees the mean loss (a NaN on one rank stops all at the same step) and
        # any rank's stop request (a rank that stops alone leaves the others in all-reduce).
        total, stop = policies.agree(total, self.ctx.stop.is_set(), world_size=self.ctx.world_size, device=self.device)
        if stop:
            self.ctx.stop.set()
        learning_rate = float(self.optimizer.param_groups[0]["lr"])
        epoch = self.position.epoch + (self.position.batch_in_epoch + len(micro_batches)) / max(1, epoch_size)

        def report() -> None:
            self.ctx.reporter.train_step(
                step=step, loss=total, learning_rate=learning_rate, epoch=epoch,
                # Ranks see equal shares of batches; the runtime wants the job-wide amount.
                audio_seconds=sum(f.audio_seconds for f in facts) * self.ctx.world_size,
                samples=sum(f.samples for f in facts) * self.ctx.world_size,
                padding_ratio=_mean([f.padding_ratio for f in facts]))

        if not math.isfinite(total):  # before the optimizer applies a poisoned update
            report()  # the runtime raises NonFiniteLoss with its own message
            raise base.NonFiniteLoss(f"loss is {total} at step {step}")
        if self.settings.gradient_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, self.settings.gradient_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.position.step = step
        self.position.batch_in_epoch += len(micro_batches)
        self._scores = {}
        report()  # once the step is applied: the runtime times steps
        return total

    def _validate(self) -> None:
        """Validation loss and hypotheses; the runtime scores them; then a checkpoint."""
        self.task.model.eval()
        try:
            with torch.no_grad():
                val_loss, hypotheses = self.task.validate(self.forward(self.task.model))
        finally:
            self.network.train()
        scores = self.ctx.reporter.validation(step=self.position.step, val_loss=val_loss, hypotheses=hypotheses)
        self.val_loss = val_loss
        self._scores = scores.metrics()
        self._save()

    def _save(self) -> None:
        """Every rank checks the weights (a NaN stops all ranks alike); rank 0 writes and
        prunes to saveTopK. A stop right after a validation keeps that validation's scores."""
        states: dict[str, Any] = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                                  **self.task.states()}
        if self.scaler.is_enabled():
            states["scaler"] = self.scaler.state_dict()
        self.store.save(step=self.position.step, weights=self.task.weights(), states=states,
                        state=dataclasses.asdict(self.position), metrics=self._scores)

    def forward(self, network: torch.nn.Module) -> Forward:
        """`network`'s forward under the run's autocast (training, validation, decoding)."""
        def forward(*args: Any, **kwargs: Any) -> Any:
            with self.precision.autocast():
                return network(*args, **kwargs)

        return forward


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None
