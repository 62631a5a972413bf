"""The shared checkpoint store under faults: NaN weights after a finite loss, a kill or a
full disk mid-save, a half-written newest checkpoint, saveTopK 1."""

from __future__ import annotations

import errno
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from speechtune.engines import base
from speechtune.engines.kit import checkpoints, layout


def weights(value: float = 1.0) -> dict[str, torch.Tensor]:
    return {"layer.weight": torch.full((4, 3), value), "layer.bias": torch.zeros(4), "steps": torch.tensor(3)}


def save(store: checkpoints.Store, step: int, *, wer: float | None = None, val_loss: float | None = 1.0,
         value: float = 1.0) -> Path | None:
    model = torch.nn.Linear(3, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    return store.save(step=step, weights=weights(value), states={"optimizer": optimizer.state_dict()},
                      state={"epoch": 0, "batch_in_epoch": step}, metrics={"wer": wer, "val_loss": val_loss})


def names(store: checkpoints.Store) -> list[str]:
    return [c.path.name for c in store.listed()]


def test_saves_restore_everything_with_weights_only(tmp_path: Path) -> None:
    store = checkpoints.Store(tmp_path, keep_top_k=3)
    save(store, 2, wer=0.5, value=2.0)
    random.seed(7)
    expected = random.random()
    restored = store.restore_newest()
    assert restored is not None and restored.checkpoint.step == 2
    assert restored.checkpoint.metrics == {"wer": 0.5, "val_loss": 1.0}
    assert restored.checkpoint.state == {"epoch": 0, "batch_in_epoch": 2}
    assert torch.equal(restored.weights["layer.weight"], torch.full((4, 3), 2.0))
    assert "state" in restored.states["optimizer"]
    checkpoints.set_rng_states(restored.states["rng"])
    random.seed(7)
    assert random.random() == expected


def test_nan_weights_after_a_finite_loss_are_refused_and_the_last_good_one_stays(tmp_path: Path) -> None:
    store = checkpoints.Store(tmp_path, keep_top_k=1)
    save(store, 2, wer=0.4)
    with pytest.raises(checkpoints.NonFiniteCheckpoint, match="layer.weight"):
        save(store, 4, wer=0.1, value=math.nan)  # the finite-loss step that poisoned the weights
    with pytest.raises(base.NonFiniteLoss, match="validation loss is nan"):  # the runtime's "failed"
        save(store, 4, wer=0.1, val_loss=math.nan)
    assert names(store) == ["step-00000002"]
    assert not list(tmp_path.glob(".*"))


def test_every_rank_refuses_only_the_writer_writes(tmp_path: Path) -> None:
    other_rank = checkpoints.Store(tmp_path, keep_top_k=1, writer=False)
    with pytest.raises(checkpoints.NonFiniteCheckpoint):
        save(other_rank, 2, value=math.inf)
    assert save(other_rank, 2) is None and list(tmp_path.iterdir()) == []


def test_save_top_k_1_keeps_the_best_and_the_newest(tmp_path: Path) -> None:
    store = checkpoints.Store(tmp_path, keep_top_k=1)
    save(store, 2, wer=0.3)
    save(store, 4, wer=0.5)
    assert names(store) == ["step-00000002", "step-00000004"]  # best, newest
    save(store, 6, wer=0.2)
    assert names(store) == ["step-00000006"]
    save(store, 8, wer=None, val_loss=None)  # a SIGTERM save, not validated
    assert names(store) == ["step-00000006", "step-00000008"]
    assert store.best() is not None and store.best().step == 6  # type: ignore[union-attr]


def test_ties_on_the_key_go_to_the_lower_validation_loss(tmp_path: Path) -> None:
    store = checkpoints.Store(tmp_path, keep_top_k=5, key="cer")
    store.save(step=1, weights=weights(), states={}, state={}, metrics={"cer": 0.2, "val_loss": 3.0})
    store.save(step=2, weights=weights(), states={}, state={}, metrics={"cer": 0.2, "val_loss": 2.0})
    assert store.best().step == 2  # type: ignore[union-attr]


def test_kill_mid_save_leaves_the_previous_checkpoint_newest(tmp_path: Path) -> None:
    store = checkpoints.Store(tmp_path, keep_top_k=2)
    save(store, 2, wer=0.4)
    (tmp_path / ".step-00000004.partial").mkdir()  # what SIGKILL mid-write leaves
    (tmp_path / ".step-00000004.partial" / checkpoints.WEIGHTS).write_bytes(b"\0" * 10)
    lines: list[str] = []
    store = checkpoints.Store(tmp_path, keep_top_k=2, log=lines.append)
    assert not (tmp_path / ".step-00000004.partial").exists() and "unfinished save" in lines[0]
    restored = store.restore_newest()
    assert restored is not None and restored.checkpoint.step == 2


def test_full_disk_mid_save_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = checkpoints.Store(tmp_path, keep_top_k=2)
    save(store, 2, wer=0.4)

    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", no_space)
    with pytest.raises(OSError, match="No space"):
        save(store, 4, wer=0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002"]


def test_a_half_written_newest_checkpoint_is_skipped_with_a_warning(tmp_path: Path) -> None:
    lines: list[str] = []
    store = checkpoints.Store(tmp_path, keep_top_k=5, log=lines.append)
    save(store, 2, wer=0.4)
    newest = save(store, 4, wer=0.3)
    assert newest is not None
    data = (newest / checkpoints.WEIGHTS).read_bytes()
    (newest / checkpoints.WEIGHTS).write_bytes(data[: len(data) // 2])  # truncated in place
    (tmp_path / "step-00000006").mkdir()  # a folder that was never finished (no manifest)
    restored = store.restore_newest()
    assert restored is not None and restored.checkpoint.step == 2
    assert "skipping step-00000006" in lines[0] and "skipping step-00000004" in lines[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000002", "step-00000004.corrupt", "step-00000006.corrupt"]


def test_states_that_need_unpickling_code_are_not_loaded(tmp_path: Path) -> None:
    store = checkpoints.Store(tmp_path, keep_top_k=5)
    store.save(step=2, weights=weights(), states={"evil": Path("/etc/passwd")}, state={}, metrics={})
    with pytest.raises(checkpoints.CorruptCheckpoint, match="Weights only load failed"):
        store.restore(tmp_path / "step-00000002")


def test_a_resave_of_the_same_step_survives_a_kill_between_the_renames(tmp_path: Path) -> None:
    store = checkpoints.Store(tmp_path, keep_top_k=5)
    save(store, 2, wer=0.4)
    save(store, 2, wer=None, val_loss=None)  # SIGTERM right after the validation save
    assert names(store) == ["step-00000002"]
    (tmp_path / "step-00000002").rename(tmp_path / ".step-00000002.old")  # died between the renames
    store = checkpoints.Store(tmp_path, keep_top_k=5)
    assert names(store) == ["step-00000002"]


def test_run_folders_with_any_engines_checkpoints_count_as_resumable(tmp_path: Path) -> None:
    assert not layout.has_checkpoints(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".step-00000002.partial").mkdir()
    assert not layout.has_checkpoints(tmp_path / "a")
    (tmp_path / "a" / "step-00000002").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "canary--last.ckpt").write_text("")
    assert layout.has_checkpoints(tmp_path / "a") and layout.has_checkpoints(tmp_path / "b")
