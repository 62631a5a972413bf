"""The checkpoint guarantees of kit/checkpoints.py for engines that keep Lightning's
Trainer and ModelCheckpoint (nemo-canary): the same finiteness check, atomic files, and
a resume that falls back past an unreadable newest checkpoint.

Lightning writes `.ckpt` files in place (TorchCheckpointIO -> _atomic_save, which is
atomic only for the in-memory buffer, not the file) and NeMo's exp_manager resumes
only from `*last.ckpt`, raising when that one is unfinished: a kill mid-save would make
every later pod exit 1 although older good checkpoints exist.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins import io as pl_io

from speechtune.engines.kit import checkpoints

CORRUPT = ".corrupt"
UNFINISHED = "-unfinished"  # NeMoModelCheckpoint's marker beside a checkpoint being written
_STEP = re.compile(r"step=(\d+)")


class AtomicCheckpointIO(pl_io.TorchCheckpointIO):
    """torch.save to `<file>.partial`, fsync, rename: a kill or a full disk leaves the
    previous file set untouched."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            with partial.open("wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


class RefuseNonFinite(pl.Callback):
    """Runs before ModelCheckpoint (Lightning orders checkpoint callbacks last) and raises
    NonFiniteCheckpoint when the validation loss or any weight is NaN/inf, so no
    checkpoint, `last` included, is written from a diverged model."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val_loss")
        self._check(trainer, pl_module, float(loss) if loss is not None else None)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, pl_module, None)

    @staticmethod
    def _check(trainer: pl.Trainer, pl_module: pl.LightningModule, val_loss: float | None) -> None:
        checkpoints.check_finite(step=trainer.global_step, weights=dict(pl_module.state_dict()),
                                 metrics={checkpoints.VALIDATION_LOSS: val_loss})


def readable(path: Path) -> bool:
    """A whole torch zip archive whose every member's CRC matches (a truncated or
    half-written file fails), and no unfinished marker beside it."""
    if _marker(path).exists():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def prepare_resume(checkpoint_dir: Path, log: Callable[[str], None]) -> Path | None:
    """Before exp_manager looks for `*last.ckpt`: unreadable checkpoints are moved aside
    (a warning names each); when no readable `last` remains, the newest readable one is
    linked as `...-last.ckpt` so the run continues from it. Returns what resume will use."""
    if not checkpoint_dir.is_dir():
        return None
    for path in sorted(checkpoint_dir.glob("*.ckpt")):
        if not readable(path):
            log(f"checkpoints: WARNING skipping {path.name}, it cannot be read (unfinished or truncated); "
                "falling back to the previous checkpoint")
            with contextlib.suppress(FileNotFoundError):  # every rank runs this; one moves it
                path.rename(path.with_name(path.name + CORRUPT))
            _marker(path).unlink(missing_ok=True)
    good = sorted(checkpoint_dir.glob("*.ckpt"), key=_order)
    last = [p for p in good if p.name.endswith("last.ckpt")]
    if last:
        return last[-1]
    if not good:
        return None
    newest = good[-1]
    link = newest.with_name(newest.stem + "-last.ckpt")
    try:
        os.link(newest, link)
    except FileExistsError:  # another rank linked it first
        pass
    except OSError:  # a volume without hard links
        shutil.copyfile(newest, link)
    log(f"checkpoints: resuming from {newest.name}, the newest readable checkpoint")
    return link


def _order(path: Path) -> tuple[int, float]:
    match = _STEP.search(path.name)
    return (int(match.group(1)) if match else -1, path.stat().st_mtime)


def _marker(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".ckpt") + UNFINISHED)
