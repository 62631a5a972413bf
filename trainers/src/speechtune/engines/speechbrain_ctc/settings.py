"""Engine settings: `spec.training.overrides` keys of speechbrain-ctc, validated once.

Imports no torch: `speechtune validate` runs `check_spec` on machines without it."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from speechtune.spec import typed

TOKENIZERS = ("char", "spm")
LR_SCHEDULES = ("cosine", "linear", "constant")
BATCHING = ("length", "random")


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Architecture: what a checkpoint needs to be rebuilt (saved next to the weights)."""

    n_mels: int = 80  # Fbank at 16 kHz, 25 ms window, 10 ms hop
    num_layers: int = 12  # Conformer encoder layers
    d_model: int = 256
    nhead: int = 4
    d_ffn: int = 1024
    kernel_size: int = 31  # Conformer depthwise convolution
    dropout: float = 0.1
    frontend_channels: int = 64  # two stride-2 conv blocks: 4x fewer frames than Fbank
    tokenizer: str = "char"  # char | spm
    spm_model: str | None = None  # SentencePiece .model (relative: against the model volume)
    spm_vocab_size: int = 256  # when training a SentencePiece model on the train text


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Optimisation and augmentation knobs that do not change the checkpoint's shape."""

    lr_schedule: str = "cosine"  # after warmup: cosine | linear | constant
    min_lr_ratio: float = 0.05  # floor of the decay, as a fraction of learningRate
    weight_decay: float = 0.01
    time_masks: int = 2  # SpecAugment: time masks per utterance (0 turns it off)
    time_mask_width: int = 20  # frames (10 ms each)
    freq_masks: int = 2
    freq_mask_width: int = 10  # mel bins
    batching: str = "length"  # length: duration-sorted dynamic batches; random: naive fixed-size
    beam_size: int = 1  # 1: greedy CTC decoding; >1: SpeechBrain's CTCBeamSearcher
    log_interval: int = 10  # steps between log lines when not on a terminal


_MODEL_KEYS = {f.name for f in dataclasses.fields(ModelSettings)}
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainSettings)}

# Numeric overrides and their ranges; mask widths start at 2 because SpeechBrain's
# SpectrogramDrop draws a width from [1, width) and fails on an empty range ([low, high]; None: no upper bound). The upper bounds
# keep a typo (d_model: 25600) from allocating a model that cannot exist on any machine.
RANGES: dict[str, tuple[float, float | None]] = {
    "n_mels": (1, 512), "num_layers": (1, 128), "d_model": (1, 8192), "nhead": (1, 256),
    "d_ffn": (1, 65536), "kernel_size": (1, 255), "dropout": (0, 1), "frontend_channels": (2, 4096),
    "spm_vocab_size": (4, 1_000_000), "min_lr_ratio": (0, 1), "weight_decay": (0, None),
    "time_masks": (0, 100), "time_mask_width": (2, 10_000), "freq_masks": (0, 100),
    "freq_mask_width": (2, 512), "beam_size": (1, 1000), "log_interval": (1, None),
}


def _coerce(cls: type, values: Mapping[str, Any], path: str) -> Any:
    defaults = cls()
    field_types = {f.name: f.type for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        default = getattr(defaults, key)
        expected: tuple[type, ...]
        if isinstance(default, bool):
            expected = (bool,)
        elif isinstance(default, int):
            expected = (int,)
        elif isinstance(default, float):
            expected = (int, float)
        elif isinstance(default, str):
            expected = (str,)
        else:  # optional fields ("str | None"): None or their own type
            hint = str(field_types[key])
            expected = ((str,) if hint.startswith("str") else (int,)) + (type(None),)
        if isinstance(value, bool) and bool not in expected:
            expected = ()
        if not isinstance(value, expected):
            raise ValueError(f"{path}.{key}: expected {expected[0].__name__ if expected else 'a number'}, got {value!r}")
        kwargs[key] = float(value) if expected == (int, float) and isinstance(value, (int, float)) else value
    return cls(**kwargs)


def from_overrides(given: Mapping[str, Any] | None) -> tuple[ModelSettings, TrainSettings]:
    """Splits `spec.training.overrides` into model and training settings; unknown keys and
    bad values raise ValueError naming `spec.training.overrides.<key>`."""
    overrides = dict(given or {})
    path = "spec.training.overrides"
    unknown = sorted(set(overrides) - _MODEL_KEYS - _TRAIN_KEYS)
    if unknown:
        known = ", ".join(sorted(_MODEL_KEYS | _TRAIN_KEYS))
        raise ValueError(f"{path}.{unknown[0]}: unknown key for speechbrain-ctc (known: {known})")
    model = _coerce(ModelSettings, {k: v for k, v in overrides.items() if k in _MODEL_KEYS}, path)
    train = _coerce(TrainSettings, {k: v for k, v in overrides.items() if k in _TRAIN_KEYS}, path)
    _check_values(model, train, path)
    return model, train


def _check_values(model: ModelSettings, train: TrainSettings, path: str) -> None:
    if model.tokenizer not in TOKENIZERS:
        raise ValueError(f"{path}.tokenizer: {model.tokenizer!r} is not one of {', '.join(TOKENIZERS)}")
    if train.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"{path}.lr_schedule: {train.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
    if train.batching not in BATCHING:
        raise ValueError(f"{path}.batching: {train.batching!r} is not one of {', '.join(BATCHING)}")
    for name, (low, high) in RANGES.items():
        value = getattr(model, name) if name in _MODEL_KEYS else getattr(train, name)
        if value is None:
            continue
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            bound = f"at least {low:g}" if high is None else f"in [{low:g}, {high:g}]"
            raise ValueError(f"{path}.{name}: must be {bound}, got {value}")
    if model.d_model % model.nhead:
        raise ValueError(f"{path}.d_model: {model.d_model} is not divisible by nhead={model.nhead}")
    if model.dropout >= 1.0:
        raise ValueError(f"{path}.dropout: must be in [0, 1), got {model.dropout}")
    if model.kernel_size % 2 == 0:
        # The Conformer's depthwise convolution pads (k - 1) // 2 per side: an even kernel
        # shortens every sequence by one frame and the residual sum fails at the first step.
        raise ValueError(f"{path}.kernel_size: must be odd, got {model.kernel_size}")
    if train.freq_masks and train.freq_mask_width > model.n_mels:
        raise ValueError(f"{path}.freq_mask_width: {train.freq_mask_width} is wider than n_mels={model.n_mels}")
    if model.spm_model is not None:
        if model.tokenizer != "spm":
            raise ValueError(f"{path}.spm_model: needs tokenizer: spm")
        if not isinstance(model.spm_model, str) or not model.spm_model:
            raise ValueError(f"{path}.spm_model: want a path to a SentencePiece .model file")
        parts = model.spm_model.split("/")
        if ".." in parts or "\0" in model.spm_model:
            raise ValueError(f"{path}.spm_model: must not contain '..' segments (it would leave the volume)")


def check_spec(spec: typed.FinetuneSpec) -> list[str]:
    """The registry row's spec checks: validates the overrides and notes what will run."""
    if spec.model and spec.model.pretrained:
        # The same refusal the engine makes at run time, so `validate` agrees with `run`.
        raise ValueError("spec.model.pretrained: speechbrain-ctc starts from a checkpoint folder of its own "
                         "(spec.model.path: a run's checkpoints or export), not a hub name")
    model, train = from_overrides(spec.training.overrides)
    if model.spm_model and not model.spm_model.startswith("/") and not (spec.model and spec.model.volume):
        raise ValueError("spec.training.overrides.spm_model: a relative path resolves against the model volume; "
                         "set spec.model.volume.claimName or give an absolute path")
    peft = spec.training.peft.method
    if peft not in ("none", "lora"):
        raise ValueError(f"spec.training.peft.method: speechbrain-ctc supports none or lora, got {peft!r}")
    decoding = "greedy" if train.beam_size == 1 else f"beam {train.beam_size}"
    return [
        f"speechbrain-ctc: conformer {model.num_layers}x{model.d_model} ({model.nhead} heads), "
        f"{model.tokenizer} tokenizer, {decoding} CTC decoding, peft {peft}"
    ]
