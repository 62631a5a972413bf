"""Loading a wav2vec2 CTC model and making the chosen parameters trainable.

Three modes share one loaded model: MMS attention adapters (adapter layers + head),
peft LoRA (low-rank updates on attention projections + head) and full fine-tuning. The
convolutional feature encoder stays frozen by default in every mode, as the MMS recipe does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import peft
import torch
from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

from speechtune.engines.hf_ctc import settings as settings_mod
from speechtune.engines.hf_ctc import vocab as vocab_mod

SAMPLING_RATE = 16_000
ADAPTER_FILE = "adapter.{}.safetensors"  # what Wav2Vec2ForCTC.load_adapter looks for


def default_feature_extractor() -> Wav2Vec2FeatureExtractor:
    """MMS's preprocessing: 16 kHz, per-utterance zero mean / unit variance, and an
    attention mask (layer-norm models must not attend to padding)."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )


def load_feature_extractor(source: settings_mod.ModelSource, cache_dir: Path | None) -> Wav2Vec2FeatureExtractor:
    if source.local_dir is not None and not (source.local_dir / "preprocessor_config.json").exists():
        return default_feature_extractor()
    try:
        return Wav2Vec2FeatureExtractor.from_pretrained(source.name_or_path, cache_dir=_str(cache_dir))
    except OSError:
        return default_feature_extractor()


def load_pretrained_vocabulary(source: settings_mod.ModelSource, lang: str, cache_dir: Path | None) -> dict[str, int] | None:
    """The model's own character vocabulary (MMS: the one of `lang`), None when it has none."""
    if source.local_dir is not None and not (source.local_dir / "vocab.json").exists():
        return None
    try:
        tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(source.name_or_path, cache_dir=_str(cache_dir))
    except OSError:
        return None
    return vocab_mod.pretrained_vocabulary(tokenizer, lang)


def load_model(
    source: settings_mod.ModelSource, *, adapter_lang: str, model_config: Mapping[str, Any], cache_dir: Path | None
) -> tuple[Wav2Vec2ForCTC, bool]:
    """Loads the model; when it has attention adapters and an adapter for `adapter_lang`,
    that adapter (and its head) is loaded too. Returns (model, adapter_loaded)."""
    common: dict[str, Any] = {"cache_dir": _str(cache_dir), "ignore_mismatched_sizes": True, **model_config}
    model = Wav2Vec2ForCTC.from_pretrained(source.name_or_path, **common)
    if getattr(model.config, "adapter_attn_dim", None) is None:
        return model, False
    if source.local_dir is not None and not (source.local_dir / ADAPTER_FILE.format(adapter_lang)).exists():
        return model, False
    # Not from_pretrained(..., target_lang=...): mms-1b-all's config.json has a
    # `target_lang` key, so transformers 5 applies that argument to the config and never
    # passes it to the model, which then keeps the default (English) adapter of
    # model.safetensors. load_adapter reads adapter.<lang>.safetensors itself.
    try:
        model.load_adapter(adapter_lang, cache_dir=_str(cache_dir))
    except OSError:  # a hub model without an adapter for this language
        return model, False
    if hasattr(model.config, "target_lang"):
        model.config.target_lang = adapter_lang  # an export then names the adapter its weights hold
    return model, True


def fit_head(model: Wav2Vec2ForCTC, vocab: vocab_mod.Vocabulary, *, keep_rows: bool) -> None:
    """Sizes the CTC head to the vocabulary and points the loss at its blank."""
    if model.lm_head.out_features != len(vocab) or not keep_rows:
        vocab_mod.resize_head(model, len(vocab), keep_rows=keep_rows)
    model.config.pad_token_id = vocab[vocab_mod.PAD]
    # A label longer than the audio's frames gives an infinite CTC loss; zero it instead of
    # letting one bad utterance turn the step's loss (and the weights) into inf/NaN.
    model.config.ctc_zero_infinity = True


def make_trainable(
    model: Wav2Vec2ForCTC, hf: settings_mod.HFSettings, *, fresh_adapter: bool
) -> torch.nn.Module:
    """Freezes what the mode keeps fixed; returns the model to train (a peft model for lora).
    With `fresh_adapter` (adapters mode, nothing to continue from: no adapter for the
    language and a vocabulary built from scratch) the adapter layers and head start anew,
    as MMS does for a new language; otherwise training continues from the loaded adapter
    and the head's trained rows."""
    # The PEFT modes never train the feature encoder. freeze_feature_encoder() also clears
    # its _requires_grad flag; merely freezing its weights would leave the flag set, and the
    # encoder then asks autograd for gradients of the raw waveform (a backward pass through
    # every convolution, for nothing).
    if hf.freeze_feature_encoder or hf.mode != "none":
        model.freeze_feature_encoder()
    if hf.mode == "adapters":
        if getattr(model.config, "adapter_attn_dim", None) is None:
            raise ValueError(
                "spec.training.peft.method: adapters needs a model with MMS attention adapters "
                "(config.adapter_attn_dim); use lora or none for this model"
            )
        if fresh_adapter:
            model.init_adapter_layers()
        model.requires_grad_(False)
        for parameter in adapter_parameters(model).values():
            parameter.requires_grad_(True)
        return model
    if hf.mode == "lora":
        config = peft.LoraConfig(
            r=hf.lora_r, lora_alpha=hf.lora_alpha,  # type: ignore[arg-type]  # alpha / r: a float works
            lora_dropout=hf.lora_dropout,
            target_modules=list(hf.lora_targets), bias="none",
            # The head is new (a grown vocabulary) so it trains in full and is saved with
            # the LoRA weights. No task_type: peft has none for CTC models.
            modules_to_save=["lm_head"],
        )
        return peft.get_peft_model(model, config)
    return model


def store_frozen_in(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Keeps frozen weights in `dtype` (half precision under fp16/bf16 autocast), the
    guide's `torch_dtype=float16` for LoRA/adapters: MMS-1B's frozen weights take 1.9 GB
    instead of 3.9. Trainable weights stay fp32 for the optimizer; autocast casts per op
    (layer norms run in fp32 from their half weights)."""
    for parameter in model.parameters():
        if not parameter.requires_grad:
            parameter.data = parameter.data.to(dtype)


def adapter_parameters(model: Wav2Vec2ForCTC) -> dict[str, torch.nn.Parameter]:
    """Adapter layers + head under the names `load_adapter` expects in an adapter file.
    transformers exposes that naming only through this private helper; reusing it keeps the
    files we write loadable by `from_pretrained(..., target_lang=...)`."""
    return dict(model._get_adapters())


def unwrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel (checkpoints use its parameter names)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.module
    return model


def unwrap(model: torch.nn.Module) -> Wav2Vec2ForCTC:
    """The Wav2Vec2ForCTC inside DDP and/or peft wrappers."""
    model = unwrap_ddp(model)
    if isinstance(model, peft.PeftModel):
        model = model.get_base_model()
    assert isinstance(model, Wav2Vec2ForCTC)
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
