"""Unit tests of the hf-ctc engine's pieces: vocabulary growth, the head, batching, the
CTC collator, settings validation and decoding. No training; a second or two in all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pretrained import mms
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from speechtune.engines.hf_ctc import batches, decoding, modelling, settings, vocab
from typed_specs import typed


# The MMS fixture's shape; no layer drop, so every layer's weights get gradients.
TINY = {**mms.CONFIG, "layerdrop": 0.0}


def tiny_model(vocab_size: int = 8) -> Wav2Vec2ForCTC:
    torch.manual_seed(0)
    return Wav2Vec2ForCTC(Wav2Vec2Config(**{**TINY, "vocab_size": vocab_size}))


def test_built_vocabulary_starts_with_blank_and_maps_spaces_to_the_delimiter() -> None:
    built = vocab.build(["আমি 017", "ok আমি"])
    assert list(built)[:5] == ["<pad>", "<s>", "</s>", "<unk>", "|"]
    assert {"আ", "ম", "ি", "0", "1", "7", "o", "k"} <= set(built)
    assert " " not in built and sorted(built.values()) == list(range(len(built)))


def test_extension_keeps_every_existing_id_and_appends_missing_characters() -> None:
    base = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "আ": 5, "ম": 6}
    grown, added = vocab.extend(base, ["আম 12 ab"], extra="0123")
    assert {k: grown[k] for k in base} == base
    assert added == ["1", "2", "a", "b", "0", "3"]
    assert [grown[c] for c in added] == list(range(7, 13))


def test_pretrained_vocabulary_of_an_mms_style_nested_tokenizer(tmp_path: Path) -> None:
    nested = {"ben": {"<pad>": 0, "অ": 1}, "eng": {"<pad>": 0, "a": 1}}
    (tmp_path / "vocab.json").write_text(__import__("json").dumps(nested), encoding="utf-8")
    tokenizer = vocab.Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), target_lang="eng")
    assert vocab.pretrained_vocabulary(tokenizer, "ben") == {"<pad>": 0, "অ": 1}
    assert vocab.pretrained_vocabulary(tokenizer, "fra") is None


def test_grown_head_keeps_trained_rows_and_the_model_runs() -> None:
    model = tiny_model(8)
    old = model.lm_head.weight.detach().clone()
    vocab.resize_head(model, 12, keep_rows=True)
    assert model.lm_head.weight.shape[0] == 12 and model.config.vocab_size == 12
    assert torch.equal(model.lm_head.weight[:8], old)
    logits = model(torch.randn(1, 8000)).logits
    assert logits.shape[-1] == 12


def test_tokenizer_round_trip_with_mixed_scripts(tmp_path: Path) -> None:
    tokenizer = vocab.save_tokenizer(vocab.build(["আমার phone 017"]), tmp_path)
    ids = tokenizer("আমার phone 017").input_ids
    assert vocab.UNK not in tokenizer.convert_ids_to_tokens(ids)
    assert tokenizer.decode(ids, group_tokens=False) == "আমার phone 017"


def test_length_grouped_batches_are_deterministic_complete_and_respect_duration() -> None:
    durations = [float(d) for d in np.random.default_rng(0).uniform(1, 10, size=50)]
    first = batches.length_grouped_batches(durations, batch_size=8, batch_duration=30.0, seed=1)
    assert first == batches.length_grouped_batches(durations, batch_size=8, batch_duration=30.0, seed=1)
    assert first != batches.length_grouped_batches(durations, batch_size=8, batch_duration=30.0, seed=2)
    assert sorted(i for b in first for i in b) == list(range(50))
    for batch in first:
        assert len(batch) <= 8
        assert len(batch) == 1 or max(durations[i] for i in batch) * len(batch) <= 30.0
    largest = max(max(durations[i] for i in b) * len(b) for b in first)
    assert max(durations[i] for i in first[0]) * len(first[0]) == largest  # out of memory at step one


def test_collator_pads_audio_masks_label_padding_and_measures_padding(tmp_path: Path) -> None:
    tokenizer = vocab.save_tokenizer(vocab.build(["ab", "abc abc"]), tmp_path)
    collate = batches.CTCCollator(modelling.default_feature_extractor(), tokenizer)
    batch = collate([
        {"audio": np.ones(16000, dtype=np.float32), "text": "ab", "index": 0},
        {"audio": np.ones(8000, dtype=np.float32), "text": "abc abc", "index": 1},
    ])
    inputs = batch["inputs"]
    assert inputs["input_values"].shape == (2, 16000)
    assert inputs["attention_mask"].sum(-1).tolist() == [16000, 8000]
    assert inputs["labels"][0].tolist()[2:] == [-100] * 5
    assert batch["audio_seconds"] == pytest.approx(1.5)
    assert batch["padding_ratio"] == pytest.approx(0.25)


def test_unknown_override_is_refused_by_name() -> None:
    spec = {"model": {"pretrained": "facebook/mms-1b-all"}, "training": {"maxSteps": 5, "overrides": {"lora_rank": 4}}}
    with pytest.raises(ValueError, match=r"spec.training.overrides.lora_rank"):
        settings.from_spec(typed(spec), max_steps=None, model_dir=None)


def test_relative_model_path_needs_a_model_volume() -> None:
    spec = {"model": {"path": "models/base"}, "training": {"maxSteps": 5}}
    with pytest.raises(ValueError, match=r"spec.model.path"):
        settings.from_spec(typed(spec), max_steps=None, model_dir=None)
    _, source = settings.from_spec(typed(spec), max_steps=None, model_dir=Path("/models"))
    assert source.local_dir == Path("/models/models/base")


def test_adapter_language_defaults_to_iso_639_3() -> None:
    spec = {"model": {"pretrained": "facebook/mms-1b-all"}, "data": {"targetLang": "bn"}, "training": {"maxSteps": 5}}
    hf, source = settings.from_spec(typed(spec), max_steps=3, model_dir=None)
    assert hf.adapter_lang == "ben" and hf.max_steps == 3 and source.local_dir is None


def test_adapters_mode_refuses_a_model_without_attention_adapters() -> None:
    model = Wav2Vec2ForCTC(Wav2Vec2Config(**{**TINY, "adapter_attn_dim": None, "vocab_size": 8}))
    hf, _ = settings.from_spec(typed({"model": {"pretrained": "x"}, "training": {"maxSteps": 1, "peft": {"method": "adapters"}}}),
                               max_steps=None, model_dir=None)
    with pytest.raises(ValueError, match="spec.training.peft.method"):
        modelling.make_trainable(model, hf, fresh_adapter=True)


def test_adapters_mode_trains_only_adapter_layers_and_head() -> None:
    model = tiny_model()
    hf, _ = settings.from_spec(typed({"model": {"pretrained": "x"}, "training": {"maxSteps": 1, "peft": {"method": "adapters"}}}),
                               max_steps=None, model_dir=None)
    modelling.make_trainable(model, hf, fresh_adapter=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(modelling.adapter_parameters(model))
    assert any("adapter_layer" in n for n in trainable) and "lm_head.weight" in trainable
    # No backward through the convolutions for a waveform gradient nobody uses.
    assert model.wav2vec2.feature_extractor._requires_grad is False


@pytest.mark.parametrize("method", ["adapters", "lora"])
def test_half_precision_frozen_weights_train_under_autocast(method: str) -> None:
    """The GPU fp16/bf16 path of the PEFT modes (frozen weights in half precision, trainable
    ones fp32), exercised with CPU bf16 autocast."""
    model = tiny_model()
    hf, _ = settings.from_spec(typed({"model": {"pretrained": "x"}, "training": {"maxSteps": 1, "peft": {"method": method}}}),
                               max_steps=None, model_dir=None)
    trainable = modelling.make_trainable(model, hf, fresh_adapter=False)
    modelling.store_frozen_in(trainable, torch.bfloat16)
    assert model.wav2vec2.encoder.layers[0].attention.k_proj.weight.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = trainable(input_values=torch.randn(2, 16000), labels=torch.tensor([[5, 6, 7], [6, 7, -100]])).loss
    loss.backward()
    grads = [p.grad for p in trainable.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("method", ["adapters", "lora"])
def test_gradient_checkpointing_still_reaches_the_trainable_weights(method: str) -> None:
    """With the encoder frozen, the checkpointed layers' inputs need no grad; the
    non-reentrant checkpoint the engine asks for must still backpropagate into them."""
    model = tiny_model()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    hf, _ = settings.from_spec(typed({"model": {"pretrained": "x"}, "training": {"maxSteps": 1, "peft": {"method": method}}}),
                               max_steps=None, model_dir=None)
    trainable = modelling.make_trainable(model, hf, fresh_adapter=False)
    trainable.train()
    trainable(input_values=torch.randn(2, 16000), labels=torch.tensor([[5, 6, 7], [6, 7, -100]])).loss.backward()
    inside_layers = [p for n, p in trainable.named_parameters() if p.requires_grad and "encoder.layers" in n]
    assert inside_layers and all(p.grad is not None for p in inside_layers)
    # (LoRA's A matrices get zero gradients at first: B starts at zero. B's are not zero.)
    assert sum(float(p.grad.abs().sum()) for p in inside_layers if p.grad is not None) > 0


def test_model_init_is_refused_not_ignored() -> None:
    spec = {"engine": "hf-ctc", "model": {"path": "mms", "init": {"exclude": ["lm_head"]}},
            "training": {"maxSteps": 5}}
    with pytest.raises(ValueError, match=r"spec\.model\.init: not supported by hf-ctc"):
        settings.check_spec(typed(spec))


@pytest.mark.parametrize("lang", ["deu", "fra"])
def test_an_existing_mms_language_loads_its_own_adapter_not_the_default(tmp_path: Path, lang: str) -> None:
    """mms-1b-all's config.json carries `target_lang`; transformers 5 then takes
    from_pretrained's `target_lang=` for a config update, never reaches the model, and the
    default (English) adapter in model.safetensors stays in place."""
    import safetensors.torch

    folder = mms.random_layout(tmp_path / "mms-1b-all")
    source = settings.ModelSource(str(folder), folder)
    model, loaded = modelling.load_model(source, adapter_lang=lang, model_config={}, cache_dir=None)
    expected = safetensors.torch.load_file(str(folder / f"adapter.{lang}.safetensors"))
    default = safetensors.torch.load_file(str(folder / "adapter.eng.safetensors"))
    got = modelling.adapter_parameters(model)
    assert loaded and set(got) == set(expected)
    assert any(not torch.equal(default[k], expected[k]) for k in expected if default[k].shape == expected[k].shape)
    for name, tensor in expected.items():
        assert torch.equal(got[name].detach(), tensor), name
