"""Engine settings: `spec.training.overrides` keys of speechbrain-ctc, validated once.

Imports no torch: `speechtune validate` runs `check_spec` on machines without it."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

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
    nan_after_step: int | None = None  # test hook: poison the loss after this step


_MODEL_KEYS = {f.name for f in dataclasses.fields(ModelSettings)}
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainSettings)}


def _coerce(cls: type, values: Mapping[str, Any], path: str) -> Any:
    defaults = cls()
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
        else:  # optional fields: None or their own type
            expected = (str, int, type(None))
        if isinstance(value, bool) and bool not in expected:
            expected = ()
        if not isinstance(value, expected):
            raise ValueError(f"{path}.{key}: expected {expected[0].__name__ if expected else 'a number'}, got {value!r}")
        kwargs[key] = float(value) if expected == (int, float) and isinstance(value, (int, float)) else value
    return cls(**kwargs)


def from_spec(spec: Mapping[str, Any]) -> tuple[ModelSettings, TrainSettings]:
    """Splits `spec.training.overrides` into model and training settings; unknown keys and
    bad values raise ValueError naming `spec.training.overrides.<key>`."""
    overrides = dict((spec.get("training") or {}).get("overrides") or {})
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
    if model.d_model % model.nhead:
        raise ValueError(f"{path}.d_model: {model.d_model} is not divisible by nhead={model.nhead}")
    positive = {name: getattr(model, name) for name in ("num_layers", "d_model", "nhead", "d_ffn", "n_mels")}
    positive.update(frontend_channels=model.frontend_channels, beam_size=train.beam_size)
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{path}.{name}: must be at least 1, got {value}")
    if not 0.0 <= model.dropout < 1.0:
        raise ValueError(f"{path}.dropout: must be in [0, 1), got {model.dropout}")


def check_spec(spec: Mapping[str, Any]) -> list[str]:
    """`SPEC_CHECKS` entry: validates the overrides and notes what will run."""
    model, train = from_spec(spec)
    training = spec.get("training") or {}
    peft = (training.get("peft") or {}).get("method", "none")
    if peft not in ("none", "lora"):
        raise ValueError(f"spec.training.peft.method: speechbrain-ctc supports none or lora, got {peft!r}")
    decoding = "greedy" if train.beam_size == 1 else f"beam {train.beam_size}"
    return [
        f"speechbrain-ctc: conformer {model.num_layers}x{model.d_model} ({model.nhead} heads), "
        f"{model.tokenizer} tokenizer, {decoding} CTC decoding, peft {peft}"
    ]
