"""The FinetuneJob spec as frozen dataclasses: what engines and the runtime read.

`speechtune.spec.validate` applies the CRD's defaults and checks the schema; `build` then
turns that mapping into these values once. No default is declared here: every field is
required, so a value comes either from the job file or from the CRD's `default:` (one
source of truth; tests/unit/trainers/test_spec_typed.py checks every CRD default arrives
and that every CRD property has a field). Fields the CRD leaves optional without a
default are `X | None`. Field names are the CRD's camelCase keys in snake case.

Free-form on purpose: `training.overrides` (engine-native keys, validated by each
engine's catalogue) and the Kubernetes pass-through objects the operator copies into the
pod template unread (`pod`, `resources.tolerations`): their schema is core/v1's.
Imports no framework (the operator's admission webhook parses through it)."""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import types
import typing
from typing import Any, Literal, Mapping


class Unexpected(ValueError):
    """The mapping does not fit the dataclasses (a field path and why); after `validate`
    this is a bug: a CRD property without a field here."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.detail = message


def key(name: str) -> Any:
    """A field whose CRD key is not the camelCase of its name (gpuMemoryGiB)."""
    return dataclasses.field(metadata={"key": name})


@dataclasses.dataclass(frozen=True)
class Volume:
    claim_name: str


@dataclasses.dataclass(frozen=True)
class Init:
    include: tuple[str, ...] | None
    exclude: tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class Model:
    pretrained: str | None
    path: str | None
    volume: Volume | None
    init: Init | None


@dataclasses.dataclass(frozen=True)
class MixEntry:
    manifest: str
    weight: float


Normalization = Literal["none", "lower", "atc", "banglish"]


@dataclasses.dataclass(frozen=True)
class Data:
    volume: Volume
    train: str
    validation: str
    test: str | None
    source_lang: str | None
    target_lang: str | None
    pnc: Literal["yes", "no"]
    normalization: Normalization
    absolute_audio_paths: bool | None
    mix: tuple[MixEntry, ...] | None


PeftMethod = Literal["none", "lora", "adapters"]


@dataclasses.dataclass(frozen=True)
class Peft:
    method: PeftMethod
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...] | None


Precision = Literal["fp32", "bf16", "fp16"]


@dataclasses.dataclass(frozen=True)
class Training:
    max_steps: int | None
    epochs: int | None
    learning_rate: float
    warmup_steps: int
    batch_duration: float | None
    batch_size: int | None
    grad_accumulation: int
    precision: Precision
    gradient_clip_val: float | None
    val_check_interval: int | None
    limit_val_batches: int | None
    seed: int
    peft: Peft
    # Engine-native keys, checked by the engine's catalogue (read-only at the top level;
    # nested values are this spec's own copies).
    overrides: Mapping[str, Any] | None


Quantity = int | str  # a Kubernetes quantity: 4, "500m", "16Gi"


@dataclasses.dataclass(frozen=True)
class Resources:
    nodes: int
    gpus_per_node: int
    gpu_resource: str
    gpu_memory_gib: int | None = key("gpuMemoryGiB")
    cpu: Quantity = key("cpu")
    memory: Quantity = key("memory")
    shm_size: Quantity = key("shmSize")
    node_selector: Mapping[str, str] | None = key("nodeSelector")
    tolerations: tuple[Mapping[str, Any], ...] | None = key("tolerations")  # core/v1 Toleration
    priority_class_name: str | None = key("priorityClassName")


BestBy = Literal["wer", "cer", "val_loss"]


@dataclasses.dataclass(frozen=True)
class Output:
    volume: Volume
    save_top_k: int
    best_by: BestBy | None  # None: the engine's default (cer for character-level tasks, else wer)
    resume: bool
    sweep_csv: str | None


@dataclasses.dataclass(frozen=True)
class SchedulingPolicy:
    min_available: int | None
    queue: str | None
    priority_class: str | None
    schedule_timeout_seconds: int | None


@dataclasses.dataclass(frozen=True)
class RunPolicy:
    suspend: bool
    backoff_limit: int
    active_deadline_seconds: int | None
    ttl_seconds_after_finished: int | None
    clean_pod_policy: Literal["None", "Running", "All"]
    queue_name: str | None
    scheduling_policy: SchedulingPolicy | None


Engine = Literal["nemo-canary", "speechbrain-ctc", "hf-ctc"]


@dataclasses.dataclass(frozen=True)
class FinetuneSpec:
    """A FinetuneJob's `.spec`, validated, with the CRD's defaults."""

    engine: Engine
    image: str | None
    model: Model | None  # None: train from scratch (architecture from training.overrides)
    data: Data
    training: Training
    resources: Resources
    pod: Mapping[str, Any] | None  # core/v1 pod settings the operator applies; trainers never read them
    output: Output
    run_policy: RunPolicy


def build(spec: Mapping[str, Any]) -> FinetuneSpec:
    """The typed spec of a mapping that has the CRD's defaults applied (spec.validate or
    spec.parse); raises Unexpected naming the field when it does not fit."""
    built: FinetuneSpec = _build(FinetuneSpec, spec, "spec")
    return built


def crd_key(field: dataclasses.Field[Any]) -> str:
    """The CRD property a field reads: metadata `key`, else the name in camelCase."""
    named = field.metadata.get("key")
    if named:
        return str(named)
    head, *rest = field.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _build(cls: type[Any], value: Any, path: str) -> Any:
    if not isinstance(value, Mapping):
        raise Unexpected(path, f"expected a mapping, got {type(value).__name__}")
    fields = dataclasses.fields(cls)
    hints = typing.get_type_hints(cls)
    known = {crd_key(field) for field in fields}
    unknown = sorted(str(name) for name in value if name not in known)
    if unknown:
        raise Unexpected(path, f"unknown field(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for field in fields:
        name = crd_key(field)
        values[field.name] = _convert(hints[field.name], value.get(name), f"{path}.{name}", present=name in value)
    return cls(**values)


def _convert(hint: Any, value: Any, path: str, *, present: bool) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if type(None) in args and (value is None or not present):
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, path, present=present)
        if not any(_fits(option, value) for option in options):  # int | str quantities
            raise Unexpected(path, f"want {' or '.join(_name(o) for o in options)}, got {value!r}")
        return value
    if not present:
        raise Unexpected(path, "required (and the CRD has no default for it)")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in args:
            raise Unexpected(path, f"want one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise Unexpected(path, f"want a list, got {value!r}")
        return tuple(_convert(args[0], item, f"{path}[{index}]", present=True) for index, item in enumerate(value))
    if origin is collections.abc.Mapping:
        if not isinstance(value, Mapping):
            raise Unexpected(path, f"want a mapping, got {value!r}")
        return types.MappingProxyType(copy.deepcopy(dict(value)))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # YAML `learningRate: 1` is an int; the schema's `number` admits it
    if not _fits(hint, value):
        raise Unexpected(path, f"want {_name(hint)}, got {value!r}")
    return value


def _fits(hint: Any, value: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))

