"""nemo-canary's checkpoint guarantees on a real Lightning Trainer and ModelCheckpoint
(a two-layer module, seconds): NaN weights refused, atomic files, resume fallback."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from speechtune.engines.kit import checkpoints, lightning_checkpoints


class Tiny(pl.LightningModule):
    def __init__(self, poison_at: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.poison_at = poison_at

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.poison_at is not None and self.global_step >= self.poison_at:
            with torch.no_grad():  # a finite loss, then NaN weights (an overflowing update)
                self.layer.weight.fill_(math.nan)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        # Finite even with a NaN weight, so only the weight check can catch it.
        self.log("val_loss", batch[0].abs().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(folder: Path, *, poison_at: int | None = None, max_steps: int = 4, resume: Path | None = None) -> pl.Trainer:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=2)
    saver = pl.callbacks.ModelCheckpoint(dirpath=folder, monitor="val_loss", save_top_k=1, save_last=True,
                                         filename="tiny-{step}", every_n_train_steps=None)
    trainer = pl.Trainer(max_steps=max_steps, val_check_interval=2, check_val_every_n_epoch=None, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         accelerator="cpu", callbacks=[saver, lightning_checkpoints.RefuseNonFinite()],
                         plugins=[lightning_checkpoints.AtomicCheckpointIO()])
    trainer.fit(Tiny(poison_at), data, data, ckpt_path=resume)
    return trainer


def test_nan_weights_after_a_finite_loss_write_no_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(checkpoints.NonFiniteCheckpoint, match="layer.weight"):
        fit(tmp_path, poison_at=3, max_steps=8)
    saved = sorted(p.name for p in tmp_path.glob("*.ckpt"))
    assert saved == ["last.ckpt", "tiny-step=2.ckpt"]  # step 4's validation saw NaN weights
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 2
    assert not list(tmp_path.glob(".*partial"))


def test_resume_moves_an_unreadable_last_aside_and_continues_from_the_newest_good(tmp_path: Path) -> None:
    fit(tmp_path)
    last = tmp_path / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # killed mid-write by an in-place writer
    lines: list[str] = []
    chosen = lightning_checkpoints.prepare_resume(tmp_path, lines.append)
    assert "skipping last.ckpt" in lines[0] and (tmp_path / "last.ckpt.corrupt").exists()
    assert chosen is not None and chosen.name.endswith("-last.ckpt")
    assert lightning_checkpoints.readable(chosen)
    assert fit(tmp_path, max_steps=6, resume=chosen).global_step == 6


def test_resume_skips_a_checkpoint_with_nemos_unfinished_marker(tmp_path: Path) -> None:
    fit(tmp_path)
    (tmp_path / "last-unfinished").write_text("")
    chosen = lightning_checkpoints.prepare_resume(tmp_path, lambda line: None)
    assert chosen is not None and chosen.name == "tiny-step=2-last.ckpt"  # the best, the only other one
    assert not (tmp_path / "last-unfinished").exists()
    assert lightning_checkpoints.prepare_resume(tmp_path / "missing", lambda line: None) is None
