"""Builds the NeMo training config (model / trainer / exp_manager) from a FinetuneJob spec.

Pure functions over plain dicts: no NeMo import, so `speechtune validate` can check
`training.overrides` without loading torch. The shape follows NeMo's
`examples/asr/conf/speech_multitask/fast-conformer_aed.yaml` (which is not shipped in the
wheel, hence the copy below); with a pretrained model, "Approach A" of the Canary guide
replaces `model` by the pretrained model's own config and only re-points data, tokenizers,
optimizer and trainer.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechtune.engines.kit import precision
from speechtune.engines.nemo_canary import tokenizers
from speechtune.spec import typed

PROMPT_FORMATS = ("canary2", "canary")

# Prompt slots a manifest row may carry (canary2); the prompt formatter fills the rest.
OPTIONAL_SLOTS = ("decodercontext", "emotion", "pnc", "itn", "timestamp", "diarize")

# Top-level keys of the full config that are ours, not NeMo's: how tokenizers are built
# when training from scratch (NeMo's own example reads `spl_tokens` the same way).
SPEECHTUNE_KEYS = ("spl_tokens", "lang_tokenizers")


def _model_section() -> dict[str, Any]:
    """`model:` of fast-conformer_aed.yaml with interpolations resolved to plain values,
    so dotted overrides of e.g. `model.model_defaults.lm_dec_hidden` reach every user."""
    return {
        "sample_rate": 16000,
        "label_smoothing": 0.0,
        "context_len_for_AR_decoding": 5,
        "log_prediction": False,
        "prompt_format": "canary2",
        "prompt_defaults": None,
        # Masking the prompt from the loss keeps an undertrained model from emitting
        # prompt tokens (field notes); NeMo's canary-180m-flash trains with it too.
        "use_loss_mask_for_prompt": True,
        # True would look for a forced-alignment model inside the .nemo we restore from.
        "restore_timestamps_model": False,
        "model_defaults": {"asr_enc_hidden": 1024, "lm_enc_hidden": 512, "lm_dec_hidden": 1024},
        "train_ds": _dataset_section(shuffle=True),
        "validation_ds": _dataset_section(shuffle=False),
        "test_ds": _dataset_section(shuffle=False),
        "tokenizer": {
            "dir": None,
            "type": "agg",
            "langs": {},
            "custom_tokenizer": {
                "_target_": "nemo.collections.common.tokenizers.canary_tokenizer.CanaryTokenizer",
                "tokenizer": None,
            },
        },
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000,
            "normalize": "per_feature",
            "window_size": 0.025,
            "window_stride": 0.01,
            "window": "hann",
            "features": 128,
            "n_fft": 512,
            "log": True,
            "frame_splicing": 1,
            "dither": 1e-05,
            "pad_to": 0,
            "pad_value": 0.0,
        },
        "spec_augment": {
            "_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
            "freq_masks": 2,
            "time_masks": 10,
            "freq_width": 27,
            "time_width": 0.05,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": None,  # = preprocessor.features
            "feat_out": -1,
            "n_layers": 24,
            "d_model": None,  # = model_defaults.asr_enc_hidden
            "subsampling": "dw_striding",
            "subsampling_factor": 8,
            "subsampling_conv_channels": 256,
            "causal_downsampling": False,
            "reduction": None,
            "reduction_position": None,
            "reduction_factor": 1,
            "ff_expansion_factor": 4,
            "self_attention_model": "rel_pos",
            "n_heads": 8,
            "att_context_size": [-1, -1],
            "xscaling": False,
            "untie_biases": True,
            "pos_emb_max_len": 5000,
            "conv_kernel_size": 9,
            "conv_norm_type": "batch_norm",
            "conv_context_size": None,
            "dropout": 0.1,
            "dropout_pre_encoder": 0.1,
            "dropout_emb": 0.0,
            "dropout_att": 0.1,
        },
        "transf_encoder": {
            "_target_": "nemo.collections.asr.modules.transformer.transformer_encoders.TransformerEncoder",
            "num_layers": 0,
            "hidden_size": None,  # = model_defaults.lm_enc_hidden
            "inner_size": None,  # = 4 * hidden_size
            "num_attention_heads": 8,
            "ffn_dropout": 0.1,
            "attn_score_dropout": 0.1,
            "attn_layer_dropout": 0.1,
            "mask_future": False,
            "pre_ln": True,
            "pre_ln_final_layer_norm": True,
        },
        "transf_decoder": {
            "_target_": "nemo.collections.asr.modules.transformer.get_nemo_transformer",
            "model_name": None,
            "pretrained": False,
            "encoder": None,
            "pre_ln_final_layer_norm": True,
            "config_dict": {
                "max_sequence_length": 512,
                "num_token_types": 0,
                "embedding_dropout": 0.1,
                "learn_positional_encodings": False,
                "hidden_size": None,  # = model_defaults.lm_dec_hidden
                "inner_size": None,  # = 4 * hidden_size
                "num_layers": 24,
                "num_attention_heads": 8,
                "ffn_dropout": 0.1,
                "attn_score_dropout": 0.1,
                "attn_layer_dropout": 0.1,
                "hidden_act": "relu",
                "pre_ln": True,
                "vocab_size": None,  # set by the model from the tokenizer
            },
        },
        "head": {
            "_target_": "nemo.collections.asr.parts.submodules.token_classifier.TokenClassifier",
            "num_layers": 1,
            "activation": "relu",
            "log_softmax": True,
            "hidden_size": None,  # = transf_decoder hidden_size
            "num_classes": None,  # set by the model from the tokenizer
            "dropout": 0.0,
            "use_transformer_init": True,
        },
        "decoding": {
            "strategy": "beam",
            "return_best_hypothesis": True,
            "beam": {"beam_size": 1, "len_pen": 0.0, "max_generation_delta": 50},
        },
        "loss": {
            "_target_": "nemo.collections.common.losses.smoothed_cross_entropy.SmoothedCrossEntropyLoss",
            "label_smoothing": 0.0,
            "pad_id": None,
        },
        # WER on ASR rows, BLEU on translation rows (the constraint reads the cut's custom fields).
        "multitask_metrics_cfg": _metrics_section(),
        "optim": {
            "name": "adamw",
            "lr": 3e-4,
            "betas": [0.9, 0.98],
            "weight_decay": 1e-3,
            "sched": {
                "name": "InverseSquareRootAnnealing",
                "warmup_steps": 2500,
                "warmup_ratio": None,
                "min_lr": 1e-6,
                "max_steps": None,
            },
        },
    }


def _metrics_section() -> dict[str, Any]:
    return {
        "log_predictions": False,
        "metrics": {
            "wer": {"_target_": "nemo.collections.asr.metrics.WER", "constraint": ".source_lang==.target_lang"},
            "bleu": {"_target_": "nemo.collections.asr.metrics.BLEU", "constraint": ".source_lang!=.target_lang"},
        },
    }


def _dataset_section(*, shuffle: bool) -> dict[str, Any]:
    """The lhotse keys a user may want to override; NeMo's LhotseDataLoadingConfig has more."""
    return {
        "use_lhotse": True,
        "manifest_filepath": None,
        "input_cfg": None,
        "sample_rate": 16000,
        "prompt_format": None,
        "text_field": "text",
        # The aggregate tokenizer picks the sub-tokenizer by this field (default `lang` fails).
        "lang_field": "target_lang",
        "shuffle": shuffle,
        "num_workers": 0,
        "pin_memory": False,
        "batch_size": None,
        "batch_duration": None,
        "quadratic_duration": None,
        "min_duration": 0.1,
        "max_duration": 40.0,
        "use_bucketing": False,
        "num_buckets": 30,
        "bucket_duration_bins": None,
        "bucket_batch_size": None,
        "bucket_buffer_size": 10000,
        "concurrent_bucketing": True,  # a background thread fills buckets (off on CPU, see engine)
        "shuffle_buffer_size": 10000,
        "seed": 0,
    }


def base_config() -> dict[str, Any]:
    """The full from-scratch config: `model`, `trainer`, `exp_manager` and our tokenizer keys."""
    return {
        "name": "canary",
        "model": _model_section(),
        "trainer": {
            "devices": 1,
            "num_nodes": 1,
            "max_epochs": -1,
            "max_steps": 100000,
            "val_check_interval": 400,
            # Required with lhotse: its iterable datasets have no epoch length.
            "check_val_every_n_epoch": None,
            "limit_val_batches": 1.0,
            "accelerator": "auto",
            "strategy": "auto",
            "accumulate_grad_batches": 1,
            "gradient_clip_val": 0.0,
            "precision": 32,
            "log_every_n_steps": 10,
            "enable_progress_bar": False,
            "num_sanity_val_steps": 0,
            "sync_batchnorm": False,
            "use_distributed_sampler": False,  # lhotse shards by rank itself
            # exp_manager owns checkpointing and logging.
            "enable_checkpointing": False,
            "logger": False,
        },
        "exp_manager": {
            "exp_dir": None,
            "explicit_log_dir": None,
            "name": "canary",
            "create_tensorboard_logger": False,
            "create_checkpoint_callback": True,
            "checkpoint_callback_params": {
                "dirpath": None,
                "monitor": "val_loss",
                "mode": "min",
                "save_top_k": 5,
                "save_last": True,
                "always_save_nemo": True,
                "filename": "canary--{val_loss:.4f}-{step}",
            },
            "resume_if_exists": True,
            "resume_ignore_no_checkpoint": True,
            "create_wandb_logger": False,
        },
        "spl_tokens": {"extra_tokens": []},
        # add_languages: target languages a pretrained model gets a new tokenizer for
        # (tutorial 001), built from the training transcripts with vocab_size and type.
        "lang_tokenizers": {"vocab_size": 1024, "type": "bpe", "add_languages": []},
    }


# ---------------------------------------------------------------------------------------
# Overrides: dotted NeMo keys from spec.training.overrides


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, prefix=f"{path}."))
        else:
            flat[path] = value
    return flat


def unknown_override_keys(overrides: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose parent path does not lead to an existing key of `config`.
    A key may replace a whole sub-tree (`model.train_ds.bucket_duration_bins: [...]`)."""
    return [key for key in overrides if not _has_path(config, key.split("."))]


def _has_path(tree: Mapping[str, Any], parts: Sequence[str]) -> bool:
    node: Any = tree
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def apply_overrides(config: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Returns a copy with each dotted key set; raises ValueError naming unknown keys."""
    unknown = unknown_override_keys(overrides, config)
    if unknown:
        raise ValueError(
            "spec.training.overrides: unknown NeMo config key(s) "
            + ", ".join(repr(k) for k in unknown)
            + " (keys are dotted paths into the model/trainer/exp_manager config)"
        )
    result = copy.deepcopy(config)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            node = node[part]
        node[leaf] = copy.deepcopy(value)
    return result


def fill_derived_sizes(model: dict[str, Any]) -> None:
    """Resolves what the YAML expresses as interpolations, after overrides were applied."""
    defaults = model["model_defaults"]
    encoder = model["encoder"]
    encoder["feat_in"] = encoder["feat_in"] or model["preprocessor"]["features"]
    encoder["d_model"] = encoder["d_model"] or defaults["asr_enc_hidden"]
    model["preprocessor"]["sample_rate"] = model["sample_rate"]
    t_enc = model["transf_encoder"]
    t_enc["hidden_size"] = t_enc["hidden_size"] or defaults["lm_enc_hidden"]
    t_enc["inner_size"] = t_enc["inner_size"] or 4 * t_enc["hidden_size"]
    dec = model["transf_decoder"]["config_dict"]
    dec["hidden_size"] = dec["hidden_size"] or defaults["lm_dec_hidden"]
    dec["inner_size"] = dec["inner_size"] or 4 * dec["hidden_size"]
    model["head"]["hidden_size"] = model["head"]["hidden_size"] or dec["hidden_size"]
    model["loss"]["label_smoothing"] = model["label_smoothing"]


# ---------------------------------------------------------------------------------------
# From the spec


@dataclasses.dataclass(frozen=True)
class ManifestInput:
    """One training manifest of the data mix, with its sampling weight and the prompt slot
    defaults (NeMo lhotse `tags`) its rows do not carry themselves."""

    path: Path
    weight: float = 1.0
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Where the NeMo run writes, and how it runs (all from the RunContext)."""

    log_dir: Path
    checkpoint_dir: Path
    max_steps: int
    device: str
    world_size: int
    nodes: int
    resume: bool


def input_cfg(inputs: Sequence[ManifestInput]) -> list[dict[str, Any]]:
    """NeMo lhotse `input_cfg`: weighted manifests (the data mix) with per-manifest tags."""
    return [
        {
            "type": "nemo",
            "manifest_filepath": str(item.path),
            "weight": float(item.weight),
            "text_field": "text",
            "lang_field": "target_lang",
            **({"tags": dict(item.tags)} if item.tags else {}),
        }
        for item in inputs
    ]


def apply_spec(config: dict[str, Any], spec: typed.FinetuneSpec, layout: RunLayout) -> dict[str, Any]:
    """Points trainer, optimizer, data loading and exp_manager at the job; returns a copy."""
    cfg = copy.deepcopy(config)
    training = spec.training
    model, trainer, exp = cfg["model"], cfg["trainer"], cfg["exp_manager"]

    trainer["max_steps"] = layout.max_steps
    trainer["max_epochs"] = -1
    trainer["check_val_every_n_epoch"] = None
    if training.val_check_interval is not None:
        trainer["val_check_interval"] = training.val_check_interval
    trainer["val_check_interval"] = min(int(trainer["val_check_interval"]), layout.max_steps)
    if training.limit_val_batches is not None:
        trainer["limit_val_batches"] = training.limit_val_batches
    if training.gradient_clip_val is not None:
        trainer["gradient_clip_val"] = training.gradient_clip_val
    trainer["accumulate_grad_batches"] = training.grad_accumulation
    trainer["precision"] = precision.lightning(training.precision, layout.device)
    if layout.device.startswith("cuda"):
        trainer.update(accelerator="gpu", devices=max(1, layout.world_size // max(1, layout.nodes)),
                       num_nodes=max(1, layout.nodes))
        trainer["strategy"] = "ddp" if layout.world_size > 1 else "auto"
        trainer["sync_batchnorm"] = layout.world_size > 1
    else:
        trainer.update(accelerator="cpu", devices=1, num_nodes=1, strategy="auto", sync_batchnorm=False)

    optim = model["optim"]
    optim["lr"] = training.learning_rate
    sched = optim.setdefault("sched", {})
    sched["warmup_steps"] = training.warmup_steps
    sched.pop("warmup_ratio", None)
    sched["max_steps"] = layout.max_steps

    train_ds = model["train_ds"]
    if training.batch_duration is not None:
        train_ds["batch_duration"] = training.batch_duration
        train_ds["batch_size"] = None
    elif training.batch_size is not None:
        train_ds["batch_size"] = training.batch_size
        train_ds["batch_duration"] = None
    train_ds["seed"] = training.seed

    exp["explicit_log_dir"] = str(layout.log_dir)
    exp["exp_dir"] = None
    exp["resume_if_exists"] = layout.resume
    exp["resume_ignore_no_checkpoint"] = True
    params = exp["checkpoint_callback_params"]
    params["dirpath"] = str(layout.checkpoint_dir)
    params["save_top_k"] = spec.output.save_top_k
    return cfg


def point_datasets(
    model: dict[str, Any],
    *,
    train: Sequence[ManifestInput],
    validation: ManifestInput,
    test: ManifestInput | None,
) -> None:
    """Train on the weighted mix; validation and test read one manifest each. Evaluation
    batches are three times the training batch duration (as in the guide) with the
    prompt format and duration limits set, which are easy to miss on test_ds."""
    prompt_format = model["prompt_format"]
    train_ds = model["train_ds"]
    train_ds.update(manifest_filepath=None, input_cfg=input_cfg(train), prompt_format=prompt_format)
    train_ds.setdefault("lang_field", "target_lang")
    for key, item in (("validation_ds", validation), ("test_ds", test)):
        if item is None:
            model[key] = None  # NeMo sets up every *_ds section that is not null
            continue
        ds = model.get(key) or _dataset_section(shuffle=False)
        model[key] = ds
        ds.update(
            use_lhotse=True,
            manifest_filepath=None,
            input_cfg=input_cfg([item]),
            prompt_format=prompt_format,
            shuffle=False,
            use_bucketing=False,
            lang_field="target_lang",
            text_field="text",
        )
        ds.setdefault("sample_rate", model.get("sample_rate", 16000))
        ds.setdefault("min_duration", 0.1)
        ds.setdefault("max_duration", 40.0)
        ds.setdefault("quadratic_duration", train_ds.get("quadratic_duration"))
        if train_ds.get("batch_duration"):
            ds["batch_duration"] = 3 * float(train_ds["batch_duration"])
            ds["batch_size"] = None
        elif not ds.get("batch_size"):
            ds["batch_size"] = train_ds.get("batch_size") or 8


def point_tokenizers(model: dict[str, Any], tokenizer: tokenizers.ModelTokenizer) -> None:
    """Points the config at the extracted (or freshly built) tokenizer files: a unified
    SentencePiece folder with its wrapper class (canary-1b-v2), or the aggregate's
    `spl_tokens` plus one folder per language. Vocab and head sizes stay automatic."""
    if tokenizer.unified is not None:
        model["tokenizer"] = {"dir": str(tokenizer.unified), "type": "bpe",
                              "custom_tokenizer": {"_target_": tokenizer.custom_tokenizer}}
    else:
        tok = model["tokenizer"]
        for key in ("model_path", "vocab_path", "spe_tokenizer_vocab"):
            tok.pop(key, None)  # `nemo:` entries of a monolingual tokenizer
        tok["dir"] = None
        tok["type"] = "agg"
        tok["langs"] = {lang: {"dir": str(path), "type": "bpe"} for lang, path in tokenizer.langs.items()}
        tok.setdefault("custom_tokenizer", {"_target_": _AGGREGATE_CLASS, "tokenizer": None})
    model["transf_decoder"]["config_dict"]["vocab_size"] = None
    model["head"]["num_classes"] = None


_AGGREGATE_CLASS = "nemo.collections.common.tokenizers.canary_tokenizer.CanaryTokenizer"


def ensure_sequence_length(model: dict[str, Any], needed_tokens: int) -> None:
    """Raises max_sequence_length when prompt + transcript + EOS would not fit."""
    cfg_dict = model["transf_decoder"]["config_dict"]
    if needed_tokens > int(cfg_dict.get("max_sequence_length") or 0):
        # Rounded up so a slightly longer validation row does not hit the limit again.
        cfg_dict["max_sequence_length"] = 128 * (-(-needed_tokens // 128))
