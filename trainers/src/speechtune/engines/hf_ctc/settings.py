"""The hf-ctc engine's settings, read once from a validated FinetuneJob spec.

The CRD has already checked types and applied defaults; this module adds what only the
engine knows: which `training.overrides` keys it understands, the adapter language code
and the fall-backs for a CPU run of a GPU job file.
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
from pathlib import Path
from typing import Any, Literal, Mapping

from speechtune.spec import typed

Mode = Literal["none", "lora", "adapters"]
VocabularyPolicy = Literal["auto", "build", "extend"]

# MMS names its language adapters and nested vocabularies by ISO 639-3 codes; jobs usually
# say ISO 639-1 (`targetLang: bn`). Only codes MMS has adapters for are worth listing.
ISO639_3 = {
    "bn": "ben", "en": "eng", "de": "deu", "fr": "fra", "es": "spa", "hi": "hin", "ur": "urd",
    "ar": "ara", "zh": "cmn", "pt": "por", "ru": "rus", "ja": "jpn", "it": "ita", "nl": "nld",
    "ta": "tam", "te": "tel", "mr": "mar", "gu": "guj", "pa": "pan", "ne": "npi", "as": "asm",
}

# Characters the guide adds to MMS's vocabulary for phone numbers, IDs and English words.
DEFAULT_EXTRA_CHARACTERS = string.digits + string.ascii_lowercase

# Engine-native keys of `spec.training.overrides`, with what each one does.
OVERRIDE_KEYS: Mapping[str, str] = {
    "adapterLang": "language code of the MMS adapter (default: spec.data.targetLang as ISO 639-3)",
    "vocabulary": "auto (extend the model's tokenizer if it has one, else build), build or extend",
    "extraCharacters": "characters added to an extended vocabulary (default: digits and a-z)",
    "freezeFeatureEncoder": "keep the convolutional feature encoder frozen (default true)",
    "gradientCheckpointing": "recompute activations in backward to save memory (default false)",
    "modelConfig": "Wav2Vec2Config keys passed to from_pretrained (dropouts, mask_time_prob, ...)",
    "weightDecay": "AdamW weight decay (default 0.0)",
    "evalBatchSize": "utterances per batch when validating and decoding (default: batchSize)",
    "numWorkers": "data-loader worker processes (default 0)",
}


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where the starting weights come from: a hub name or a local folder."""

    name_or_path: str  # passed to from_pretrained
    local_dir: Path | None  # set when the source is a folder on disk


@dataclasses.dataclass(frozen=True)
class HFSettings:
    mode: Mode
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    lora_targets: tuple[str, ...]
    adapter_lang: str
    normalization: str
    vocabulary: VocabularyPolicy
    extra_characters: str
    freeze_feature_encoder: bool
    gradient_checkpointing: bool
    model_config: Mapping[str, Any]
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    max_steps: int | None
    epochs: int | None
    batch_size: int
    batch_duration: float | None
    eval_batch_size: int
    grad_accumulation: int
    precision: Literal["fp32", "bf16", "fp16"]
    gradient_clip: float | None
    val_check_interval: int | None
    limit_val_batches: int | None
    seed: int
    save_top_k: int
    num_workers: int


def from_spec(spec: typed.FinetuneSpec, *, max_steps: int | None, model_dir: Path | None) -> tuple[HFSettings, ModelSource]:
    """Reads the engine's settings; raises ValueError naming the offending field."""
    training, peft = spec.training, spec.training.peft
    overrides = dict(training.overrides or {})
    check_overrides(overrides)
    target_lang = spec.data.target_lang or "en"
    vocabulary = overrides.get("vocabulary", "auto")
    model_config = overrides.get("modelConfig") or {}
    batch_size = training.batch_size or 8  # no CRD default: the engine's own
    settings = HFSettings(
        mode=peft.method,
        lora_r=peft.r,
        lora_alpha=peft.alpha,
        lora_dropout=peft.dropout,
        lora_targets=peft.target_modules or ("q_proj", "v_proj"),
        adapter_lang=str(overrides.get("adapterLang") or ISO639_3.get(target_lang, target_lang)),
        normalization=spec.data.normalization,
        vocabulary=vocabulary,
        extra_characters=str(overrides.get("extraCharacters", DEFAULT_EXTRA_CHARACTERS)),
        freeze_feature_encoder=_flag(overrides, "freezeFeatureEncoder", True),
        gradient_checkpointing=_flag(overrides, "gradientCheckpointing", False),
        model_config=dict(model_config),
        learning_rate=training.learning_rate,
        weight_decay=float(overrides.get("weightDecay", 0.0)),
        warmup_steps=training.warmup_steps,
        max_steps=max_steps if max_steps is not None else training.max_steps,
        epochs=training.epochs,
        batch_size=batch_size,
        batch_duration=training.batch_duration,
        eval_batch_size=int(overrides.get("evalBatchSize", batch_size)),
        grad_accumulation=training.grad_accumulation,
        precision=training.precision,
        gradient_clip=training.gradient_clip_val or None,
        val_check_interval=training.val_check_interval,
        limit_val_batches=training.limit_val_batches,
        seed=training.seed,
        save_top_k=spec.output.save_top_k,
        num_workers=int(overrides.get("numWorkers", 0)),
    )
    if settings.max_steps is None and settings.epochs is None:
        raise ValueError("spec.training.maxSteps: set maxSteps or epochs")
    return settings, model_source(spec.model, overrides, model_dir)


# Wav2Vec2Config values a job may set (modelConfig): probabilities and
# dropouts are in [0, 1]; sizes and counts are positive integers.
_PROBABILITY_SUFFIXES = ("dropout", "_prob", "layerdrop")
_COUNT_KEYS = frozenset({
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "adapter_attn_dim", "vocab_size",
    "mask_time_length", "mask_feature_length", "num_adapter_layers", "output_hidden_size",
})
_COUNT_LIST_KEYS = frozenset({"conv_dim", "conv_stride", "conv_kernel"})


# What modelConfig may set: Wav2Vec2Config's own model settings. They
# reach from_pretrained as keyword arguments, where loader options (trust_remote_code,
# use_safetensors, cache_dir, revision, ...) would choose what is loaded and run.
WAV2VEC2_CONFIG_KEYS = frozenset({
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout", "activation_dropout", "attention_dropout", "feat_proj_dropout",
    "feat_quantizer_dropout", "final_dropout", "layerdrop", "initializer_range", "layer_norm_eps",
    "feat_extract_norm", "feat_extract_activation", "conv_dim", "conv_stride", "conv_kernel", "conv_bias",
    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "do_stable_layer_norm", "apply_spec_augment",
    "mask_time_prob", "mask_time_length", "mask_time_min_masks", "mask_feature_prob", "mask_feature_length",
    "mask_feature_min_masks", "ctc_loss_reduction", "ctc_zero_infinity", "use_weighted_layer_sum",
    "pad_token_id", "bos_token_id", "eos_token_id", "add_adapter", "adapter_kernel_size", "adapter_stride",
    "num_adapter_layers", "output_hidden_size", "adapter_attn_dim",
})


def check_overrides(overrides: Mapping[str, Any]) -> None:
    """Keys, types and ranges of every hf-ctc override; ValueError naming
    `spec.training.overrides.<key>`. Torch-free: `speechtune validate` runs it."""
    path = "spec.training.overrides"
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise ValueError(f"{path}.{unknown[0]}: not an hf-ctc setting (known: {', '.join(OVERRIDE_KEYS)})")
    for key in ("freezeFeatureEncoder", "gradientCheckpointing"):
        if key in overrides:
            _flag(overrides, key, False)
    if "vocabulary" in overrides and overrides["vocabulary"] not in ("auto", "build", "extend"):
        raise ValueError(f"{path}.vocabulary: want auto, build or extend, got {overrides['vocabulary']!r}")
    for key in ("adapterLang", "extraCharacters"):
        if key in overrides and not isinstance(overrides[key], str):
            raise ValueError(f"{path}.{key}: want a string, got {overrides[key]!r}")
    if "adapterLang" in overrides and not re.fullmatch(r"[a-z]{2,3}([-_][A-Za-z0-9]{2,8})?", overrides["adapterLang"]):
        raise ValueError(f"{path}.adapterLang: want a language code such as ben or eng, got {overrides['adapterLang']!r}")
    _number(overrides, "weightDecay", minimum=0, integer=False)
    _number(overrides, "evalBatchSize", minimum=1, integer=True)
    _number(overrides, "numWorkers", minimum=0, integer=True, maximum=64)
    if "modelConfig" in overrides and overrides["modelConfig"] is not None:
        _check_config(overrides["modelConfig"], f"{path}.modelConfig")
        shaped = sorted(set(overrides["modelConfig"]) & (_COUNT_KEYS | _COUNT_LIST_KEYS))
        if shaped:
            # from_pretrained with ignore_mismatched_sizes would re-initialise those weights.
            raise ValueError(f"{path}.modelConfig.{shaped[0]}: changes the pretrained model's shape; "
                             "a new shape is a new base model, trained before it is fine-tuned")


def _number(overrides: Mapping[str, Any], key: str, *, minimum: float, integer: bool,
            maximum: float | None = None) -> None:
    if key not in overrides:
        return
    value = overrides[key]
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int))
            or not math.isfinite(value)):
        raise ValueError(f"spec.training.overrides.{key}: want {'an integer' if integer else 'a number'}, got {value!r}")
    number = float(value)
    if number < minimum or (maximum is not None and number > maximum):
        bound = f">= {minimum:g}" if maximum is None else f"in [{minimum:g}, {maximum:g}]"
        raise ValueError(f"spec.training.overrides.{key}: must be {bound}, got {value!r}")


def _check_config(config: Any, path: str) -> None:
    """A mapping of Wav2Vec2Config keys with plain values in range."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{path}: want a mapping of Wav2Vec2Config keys")
    for key, value in config.items():
        where = f"{path}.{key}"
        if key not in WAV2VEC2_CONFIG_KEYS:
            raise ValueError(f"{where}: not a Wav2Vec2Config model setting (loader options such as "
                             "trust_remote_code are not settable)")
        if key.endswith(_PROBABILITY_SUFFIXES):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{where}: want a number in [0, 1], got {value!r}")
        elif key in _COUNT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}: want a positive integer, got {value!r}")
        elif key in _COUNT_LIST_KEYS:
            if (not isinstance(value, list) or not value
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
                raise ValueError(f"{where}: want a list of positive integers, got {value!r}")
    merged = dict(config)
    lists = [merged[key] for key in sorted(_COUNT_LIST_KEYS) if key in merged]
    if len({len(v) for v in lists}) > 1:
        raise ValueError(f"{path}.conv_dim: conv_dim, conv_stride and conv_kernel need the same length")
    hidden = merged.get("hidden_size")
    for divisor in ("num_attention_heads", "num_conv_pos_embedding_groups"):
        count = merged.get(divisor)
        if isinstance(hidden, int) and isinstance(count, int) and count > 0 and hidden % count:
            raise ValueError(f"{path}.hidden_size: {hidden} is not divisible by {divisor}={count}")


def check_spec(spec: typed.FinetuneSpec) -> list[str]:
    """The registry row's spec checks: the override catalogue, then the memory estimate."""
    init = spec.model.init if spec.model else None
    if init and (init.include is not None or init.exclude is not None):
        # from_pretrained loads every weight the folder has; what is trained is chosen by
        # spec.training.peft (adapters, LoRA) or overrides.freezeFeatureEncoder.
        raise ValueError("spec.model.init: not supported by hf-ctc (every pretrained weight is loaded; choose what "
                         "trains with spec.training.peft)")
    check_overrides(dict(spec.training.overrides or {}))
    from speechtune.engines.hf_ctc import memory as hf_memory  # torch-free

    return hf_memory.check_spec(spec)


def model_source(model: typed.Model | None, overrides: Mapping[str, Any], model_dir: Path | None) -> ModelSource:
    """Resolves spec.model against the model volume (relative paths live on it)."""
    if model and model.pretrained:
        return ModelSource(model.pretrained, None)
    if not (model and model.path):
        raise ValueError("spec.model: hf-ctc needs model.pretrained or model.path (a Hugging Face model folder)")
    path = Path(model.path)
    if not path.is_absolute():
        if model_dir is None:
            raise ValueError(f"spec.model.path: {path} is relative but no model volume is mounted (spec.model.volume)")
        path = model_dir / path
    return ModelSource(str(path), path)


def _flag(overrides: Mapping[str, Any], key: str, default: bool) -> bool:
    value = overrides.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"spec.training.overrides.{key}: want true or false, got {value!r}")
    return value
