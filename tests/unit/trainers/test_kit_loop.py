"""The shared training loop (engines/kit/loop.py) on a two-parameter regression task: the
loop's own guarantees (accumulation, schedule, stop, NaN, resume, best at the end) in
well under a second; tests/trainers/test_engine_contract.py runs the same guarantees
through every real engine."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pytest
import torch

from speechtune import spec as specs
from speechtune.engines import base
from speechtune.engines.kit import checkpoints, loop

Batch = tuple[torch.Tensor, torch.Tensor]


class Regression:
    """y = 3x - 1 from 12 noisy points in batches of 4 (3 batches per epoch)."""

    def __init__(self, *, poison_at: int | None = None) -> None:
        torch.manual_seed(0)
        self.net = torch.nn.Linear(1, 1)
        self.x = torch.linspace(-1, 1, 12).unsqueeze(1)
        self.y = 3 * self.x - 1 + 0.01 * torch.randn(12, 1)
        self.poison_at = poison_at
        self.calls = 0

    @property
    def model(self) -> torch.nn.Module:
        return self.net

    def weights(self) -> dict[str, torch.Tensor]:
        return dict(self.net.state_dict())

    def load_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        self.net.load_state_dict(weights)

    def states(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_states(self, states: Mapping[str, Any]) -> None:
        self.calls = int(states["calls"])

    def plans(self, epoch: int) -> list[list[int]]:
        order = torch.randperm(12, generator=torch.Generator().manual_seed(epoch)).tolist()
        return [order[i : i + 4] for i in range(0, 12, 4)]

    def load(self, plans: Sequence[Sequence[int]]) -> Iterator[Batch]:
        return ((self.x[list(p)], self.y[list(p)]) for p in plans)

    def facts(self, batch: Batch) -> loop.Facts:
        return loop.Facts(audio_seconds=float(len(batch[0])), samples=len(batch[0]), padding_ratio=0.0)

    def loss(self, forward: loop.Forward, batch: Batch, *, epoch: int) -> torch.Tensor:
        self.calls += 1
        loss = torch.nn.functional.mse_loss(forward(batch[0]), batch[1])
        return loss * math.nan if self.poison_at is not None and self.calls >= self.poison_at else loss

    def validate(self, forward: loop.Forward) -> tuple[float | None, list[base.Hypothesis]]:
        return float(torch.nn.functional.mse_loss(forward(self.x), self.y)), []


class Recorder:
    def __init__(self, stop: threading.Event, stop_at: int | None = None) -> None:
        self.stop, self.stop_at = stop, stop_at
        self.steps: list[dict[str, Any]] = []
        self.max_steps: int | None = None

    def set_max_steps(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def train_step(self, **values: Any) -> None:
        self.steps.append(values)
        if values["step"] == self.stop_at:
            self.stop.set()

    def validation(self, **values: Any) -> base.Validation:
        return base.Validation(val_loss=values["val_loss"], wer=values["val_loss"])  # lowest loss = best

    def log(self, message: str) -> None:
        pass


# The loop reads its settings, not the spec; a valid spec fills the context.
SPEC = specs.parse({"engine": "hf-ctc", "training": {"maxSteps": 6}, "output": {"volume": {"claimName": "o"}},
                    "data": {"volume": {"claimName": "d"}, "train": "t.json", "validation": "v.json"}})


def build(tmp_path: Path, task: Regression, *, stop_at: int | None = None, max_steps: int = 6,
          accumulation: int = 1, interval: int | None = 2) -> tuple[loop.Loop[Batch], Recorder]:
    stop = threading.Event()
    recorder = Recorder(stop, stop_at)
    ctx = base.RunContext(
        name="t", namespace="default", spec=SPEC, data=base.DataPaths(tmp_path, tmp_path, tmp_path, None),
        model_dir=None, run_dir=tmp_path, checkpoint_dir=tmp_path / "checkpoints", max_steps=max_steps, resume=True,
        device="cpu", world_size=1, rank=0, stop=stop, reporter=recorder)
    settings = loop.Settings(learning_rate=0.1, weight_decay=0.0, max_steps=max_steps, epochs=None,
                             grad_accumulation=accumulation, gradient_clip=1.0, val_check_interval=interval,
                             save_top_k=1, best_by="wer")
    built = loop.Loop(task, settings, ctx, schedule=lambda optimizer, total: torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: 1.0 - k / total))
    built.resume()
    return built, recorder


def saved_steps(tmp_path: Path) -> list[int]:
    return [c.step for c in checkpoints.Store(tmp_path / "checkpoints", keep_top_k=1, writer=False).listed()]


def test_trains_validates_on_cadence_and_reports_every_step(tmp_path: Path) -> None:
    task = Regression()
    trained, recorder = build(tmp_path, task, max_steps=7, accumulation=2, interval=3)
    result = trained.train()
    assert recorder.max_steps == 7 and [s["step"] for s in recorder.steps] == list(range(1, 8))
    assert task.calls == 11  # 3 batches an epoch: groups of 2 and 1 (a group never spans an epoch end)
    assert recorder.steps[0]["learning_rate"] == pytest.approx(0.1)  # the rate the step used
    assert recorder.steps[-1]["samples"] == 8 and result.steps == 7 and not result.stopped_early
    assert recorder.steps[-1]["loss"] < recorder.steps[0]["loss"]
    assert saved_steps(tmp_path)[-1] == 7  # validated at 3, 6 and the last step


def test_stop_saves_and_resume_is_exact(tmp_path: Path) -> None:
    straight, _ = build(tmp_path / "straight", Regression())
    straight.train()
    stopped, _ = build(tmp_path / "killed", Regression(), stop_at=3)
    first = stopped.train()
    assert first.stopped_early and first.steps == 3 and saved_steps(tmp_path / "killed")[-1] == 3
    resumed, recorder = build(tmp_path / "killed", Regression())
    second = resumed.train()
    assert [s["step"] for s in recorder.steps] == [4, 5, 6] and second.steps == 6
    for name, tensor in straight.task.weights().items():
        assert torch.equal(resumed.task.weights()[name], tensor), name


def test_non_finite_loss_raises_before_the_update_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    task = Regression(poison_at=5)
    trained, recorder = build(tmp_path, task)
    before = {k: v.clone() for k, v in task.weights().items()}
    with pytest.raises(base.NonFiniteLoss, match="at step 5"):
        trained.train()
    assert saved_steps(tmp_path) == [4]
    assert all(torch.isfinite(v).all() for v in task.weights().values())
    assert any(not torch.equal(before[k], v) for k, v in task.weights().items())
    assert math.isnan(recorder.steps[-1]["loss"])  # the runtime heard about the NaN step first
