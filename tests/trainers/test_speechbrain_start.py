"""Where speechbrain-ctc may start from: its own exports, not a SpeechBrain hub folder."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_speechbrain_hub_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    """The files speechbrain/asr-conformer-transformerlm-librispeech's Pretrainer
    collects (hyperparams.yaml, asr.ckpt, normalizer.ckpt, tokenizer.ckpt, lm.ckpt)."""
    from speechtune.engines.speechbrain_ctc import engine

    for name in ("hyperparams.yaml", "asr.ckpt", "normalizer.ckpt", "tokenizer.ckpt", "lm.ckpt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError) as refused:
        engine._checkpoint_folder(tmp_path)
    message = str(refused.value)
    assert message.startswith("spec.model.path: ") and "hub model folder (hyperparams.yaml)" in message
    assert "\n" not in message
