"""speechbrain-ctc pieces that need no training: batching, settings, tokenizers, the
learning-rate schedule."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from speechtune.engines.speechbrain_ctc import batching, schedule, settings
from speechtune.engines.speechbrain_ctc import tokenizer as tokenizers
from typed_specs import typed


def durations(n: int = 200, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(1.0, 12.0) for _ in range(n)]


def test_length_batches_cover_every_utterance_once_within_budget() -> None:
    d = durations()
    batches = batching.length_batches(d, batch_seconds=60, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(d)))
    for batch in batches:
        assert len(batch) == 1 or max(d[i] for i in batch) * len(batch) <= 60


def test_length_batches_pad_far_less_than_random_batches() -> None:
    d = durations()
    bucketed = batching.length_batches(d, batch_seconds=60, seed=1, epoch=0)
    naive = batching.random_batches(len(d), batch_size=8, seed=1, epoch=0)
    mean = lambda bs: sum(batching.padding_ratio(d, b) for b in bs) / len(bs)  # noqa: E731
    assert mean(bucketed) < 0.1 < mean(naive)


def test_length_batches_are_reproducible_per_epoch_and_differ_between_epochs() -> None:
    d = durations()
    first = batching.length_batches(d, batch_seconds=60, seed=1, epoch=0)
    assert first == batching.length_batches(d, batch_seconds=60, seed=1, epoch=0)
    assert first != batching.length_batches(d, batch_seconds=60, seed=1, epoch=1)


def test_max_batch_size_and_shards() -> None:
    batches = batching.length_batches([1.0] * 10, batch_seconds=math.inf, seed=0, epoch=0, max_batch_size=3)
    assert [len(b) for b in sorted(batches, key=len)] == [1, 3, 3, 3]
    shards = [batching.shard(batches, rank=r, world_size=2) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 2


def test_settings_from_overrides_and_errors_naming_the_key() -> None:
    overrides = {"num_layers": 2, "d_model": 64, "lr_schedule": "linear", "dropout": 0}
    model, train = settings.from_overrides(overrides)
    assert (model.num_layers, model.d_model, train.lr_schedule, model.dropout) == (2, 64, "linear", 0.0)
    for overrides, words in (({"layers": 2}, "overrides.layers: unknown key"),
                             ({"d_model": "big"}, "overrides.d_model: expected int"),
                             ({"d_model": 100, "nhead": 3}, "not divisible"),
                             ({"tokenizer": "bpe"}, "overrides.tokenizer")):
        with pytest.raises(ValueError, match=words):
            settings.from_overrides(overrides)


def test_check_spec_refuses_adapters() -> None:
    with pytest.raises(ValueError, match="spec.training.peft.method"):
        settings.check_spec(typed({"engine": "speechbrain-ctc", "training": {"peft": {"method": "adapters"}}}))
    assert "conformer 12x256" in settings.check_spec(typed({"engine": "speechbrain-ctc"}))[0]


def test_char_tokenizer_round_trip(tmp_path: Path) -> None:
    tok = tokenizers.CharTokenizer.from_texts(["CLIMB FL", "TURN LEFT"])
    assert tok.vocab[0] == tokenizers.BLANK
    ids = tok.encode("TURN LEFT?")  # '?' is not in the vocabulary: dropped
    assert 0 not in ids and tok.decode(ids) == "TURN LEFT"
    tok.save(tmp_path)
    assert tokenizers.load(tmp_path).vocab == tok.vocab


def test_sentencepiece_tokenizer_keeps_blank_free(tmp_path: Path) -> None:
    texts = [f"CLIMB FLIGHT LEVEL {a} {b}" for a in ("ONE", "TWO", "THREE") for b in ("FOUR", "FIVE", "SIX")]
    tok = tokenizers.SentencePieceTokenizer.train(texts * 5, tmp_path / "spm", vocab_size=40)
    ids = tok.encode("CLIMB FLIGHT LEVEL TWO SIX")
    assert min(ids) >= 1 and tok.decode(ids) == "CLIMB FLIGHT LEVEL TWO SIX"
    tok.save(tmp_path)
    assert tokenizers.load(tmp_path).encode("TWO") == tok.encode("TWO")


def test_learning_rate_schedule() -> None:
    lr = lambda step, kind="cosine": schedule.learning_rate(  # noqa: E731
        step, peak=1.0, warmup=10, total=110, schedule=kind, floor=0.1)
    assert lr(5) == pytest.approx(0.5)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)
    assert lr(110) == pytest.approx(0.1)
    assert lr(60, "linear") == pytest.approx(0.55)
    assert lr(100, "constant") == 1.0


def test_check_spec_refuses_a_hub_name_as_validate_and_run_agree() -> None:
    with pytest.raises(ValueError, match=r"spec\.model\.pretrained: speechbrain-ctc starts from a checkpoint folder"):
        settings.check_spec(typed({"engine": "speechbrain-ctc",
                                   "model": {"pretrained": "speechbrain/asr-conformer-transformerlm-librispeech"}}))
