"""Spec checks for `nemo-canary` that need no data and no NeMo import (`speechtune validate`).
Manifest checks (languages, prompt fields) run in the engine's prepare, before training."""

from __future__ import annotations

from typing import Any, Mapping

from speechtune.engines.nemo_canary import config as nemo_config
from speechtune.spec import typed

# Top-level sections an override may address when the model comes from a checkpoint whose
# config we cannot see without loading it (its `model.*` keys are checked in prepare).
_SECTIONS = ("model", "trainer", "exp_manager", *nemo_config.SPEECHTUNE_KEYS)


def check_spec(spec: typed.FinetuneSpec) -> list[str]:
    """Returns notes; raises ValueError naming the spec field when the job cannot run."""
    notes: list[str] = []
    training, model = spec.training, spec.model
    if training.max_steps is None:  # the CRD keeps a given one >= 1
        raise ValueError("spec.training.maxSteps: required (> 0) for nemo-canary (lhotse has no epoch length)")
    if training.epochs is not None:
        # Refused rather than ignored: the CRD promises a stop at whichever comes first.
        raise ValueError("spec.training.epochs: not supported by nemo-canary (lhotse streams the data without an "
                         "epoch length); remove it and size the run with maxSteps")
    if training.peft.method != "none":
        raise ValueError(f"spec.training.peft.method: {training.peft.method!r} is not supported by nemo-canary (use none)")

    overrides = nemo_config.flatten(training.overrides or {})
    for key, value in overrides.items():
        message = owned_key_problem(key, value)
        if message:
            raise ValueError(f"spec.training.overrides['{key}']: {message}")
    from_checkpoint = bool(model and (model.path or model.pretrained))
    base = nemo_config.base_config()
    if from_checkpoint:  # the model section is the checkpoint's own; trainer/exp_manager are ours
        unknown = [key for key in overrides if key.split(".")[0] not in _SECTIONS
                   or (not key.startswith("model.") and not nemo_config._has_path(base, key.split(".")))]
    else:
        unknown = nemo_config.unknown_override_keys(overrides, base)
    if unknown:
        raise ValueError(
            "spec.training.overrides: unknown NeMo config key(s) " + ", ".join(repr(k) for k in unknown)
        )
    for key, message in override_problems(overrides, nemo_config.base_config()):
        raise ValueError(f"spec.training.overrides['{key}']: {message}")
    prompt_format = overrides.get("model.prompt_format", "canary2" if not from_checkpoint else None)
    if prompt_format is not None and prompt_format not in nemo_config.PROMPT_FORMATS:
        raise ValueError(
            f"spec.training.overrides['model.prompt_format']: {prompt_format!r}, supported: "
            + ", ".join(nemo_config.PROMPT_FORMATS)
        )
    if not from_checkpoint:
        notes.append("nemo-canary: no spec.model: training from scratch with tokenizers built from the data")
    if model and model.init and (model.init.include is not None or model.init.exclude is not None) and not from_checkpoint:
        raise ValueError("spec.model.init: include/exclude need spec.model.path or spec.model.pretrained")
    if training.precision in ("bf16", "fp16"):
        notes.append(f"nemo-canary: precision {training.precision} applies on GPU; CPU runs use fp32")
    return notes


# Ranges by the last part of a dotted key, for keys whose value is a number; None: open.
_RANGES: dict[str, tuple[float, float | None]] = {
    "label_smoothing": (0, 1), "num_workers": (0, 64), "n_layers": (0, 1024), "num_layers": (0, 1024),
    "n_heads": (1, 1024), "num_attention_heads": (1, 1024), "d_model": (1, 65536),
    "hidden_size": (1, 65536), "inner_size": (1, 262144), "features": (1, 1024),
    "max_sequence_length": (1, 1_000_000), "subsampling_conv_channels": (1, 65536),
    "subsampling_factor": (1, 64), "conv_kernel_size": (1, 1023), "min_duration": (0, None),
    "max_duration": (0, None), "batch_size": (1, None), "batch_duration": (0, None),
    "log_every_n_steps": (1, None), "sample_rate": (1, 384_000), "beam_size": (1, 1000),
    "save_top_k": (-1, None), "lr": (0, None), "weight_decay": (0, None), "warmup_steps": (0, None),
    "min_lr": (0, None), "num_buckets": (1, 10_000), "freq_masks": (0, 100), "time_masks": (0, 1000),
    "freq_width": (0, 1024), "time_width": (0, None), "ff_expansion_factor": (1, 64),
}


def override_problems(overrides: Mapping[str, Any], config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(dotted key, message) for override values whose type differs from the config's own
    value there (an int where NeMo has an int, ...) or that are out of range. Keys the
    base config does not have (a pretrained model's own) are checked when it is loaded."""
    problems = []
    for key, value in overrides.items():
        found, default = _lookup(config, key.split("."))
        if found:
            message = _type_problem(key, value, default)
            if message:
                problems.append((key, message))
                continue
        message = _range_problem(key.rsplit(".", 1)[-1], value)
        if message:
            problems.append((key, message))
    return problems


def _lookup(tree: Mapping[str, Any], parts: list[str]) -> tuple[bool, Any]:
    node: Any = tree
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


# Sections NeMo builds only when present: null switches them off.
_NULLABLE = ("model.spec_augment",)


def _type_problem(key: str, value: Any, default: Any) -> str | None:
    if default is None:
        return None  # NeMo's null: any value
    if value is None:
        return None if key in _NULLABLE else f"must not be null (NeMo's default is {default!r})"
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, Mapping):
        ok = isinstance(value, Mapping)
    else:
        ok = isinstance(value, list)
    if ok:
        return None
    want = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return f"want {want.get(type(default), 'a mapping')} (as NeMo's {default!r}), got {value!r}"


def _range_problem(leaf: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, high = _RANGES.get(leaf, (None, None)) if not _is_dropout(leaf) else (0, 1)
    if low is None:
        return None
    if value < low or (high is not None and value > high):
        return f"must be {'at least ' + format(low, 'g') if high is None else f'in [{low:g}, {high:g}]'}, got {value!r}"
    return None


def _is_dropout(leaf: str) -> bool:
    return leaf.startswith("dropout") or leaf.endswith("dropout")


# Keys the runtime sets for every run (where it writes, what it reads): an override there
# would write outside the run folder or read manifests preflight never saw.
RUNTIME_OWNED = (
    "exp_manager.explicit_log_dir", "exp_manager.exp_dir", "exp_manager.checkpoint_callback_params.dirpath",
    "exp_manager.resume_if_exists", "exp_manager.resume_ignore_no_checkpoint",
    "model.train_ds.manifest_filepath", "model.train_ds.input_cfg", "model.validation_ds.manifest_filepath",
    "model.validation_ds.input_cfg", "model.test_ds.manifest_filepath", "model.test_ds.input_cfg",
    "model.tokenizer.dir", "model.tokenizer.langs", "model.tokenizer.custom_tokenizer",
    "trainer.default_root_dir", "trainer.callbacks", "trainer.plugins", "trainer.logger",
    "model.init_from_nemo_model", "model.init_from_pretrained_model", "model.init_from_ptl_ckpt",
)


def owned_key_problem(key: str, value: Any) -> str | None:
    """Why a job may not set this key: it names code (`_target_`: NeMo instantiates any
    importable callable there) or a path the runtime owns."""
    if "_target_" in key.split(".") or _names_code(value):
        return "_target_ picks the code NeMo instantiates; a job cannot choose it"
    if any(key == owned or key.startswith(owned + ".") or owned.startswith(key + ".") for owned in RUNTIME_OWNED):
        return "set by the runtime for every run (run folder, manifests, tokenizers); not an override"
    return None


def _names_code(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "_target_" in value or any(_names_code(v) for v in value.values())
    if isinstance(value, list):
        return any(_names_code(v) for v in value)
    return False
