"""speechtune.spec.typed: the validated spec as frozen dataclasses, with the CRD as the one
source of every default and every field."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest

from speechtune import spec
from speechtune.spec import typed

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def spec_schema() -> Mapping[str, Any]:
    return spec.crd_schema()["properties"]["spec"]  # type: ignore[no-any-return]


def minimal() -> dict[str, Any]:
    """Only what the CRD requires (plus one mix entry, so the defaults of array items show)."""
    return {
        "engine": "nemo-canary",
        "data": {"volume": {"claimName": "d"}, "train": "t.json", "validation": "v.json",
                 "mix": [{"manifest": "m.json"}]},
        "training": {"maxSteps": 10},
        "output": {"volume": {"claimName": "o"}},
    }


def as_mapping(value: Any) -> Any:
    """A typed value back in the CRD's shape (camelCase keys, absent for None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {typed.crd_key(f): as_mapping(getattr(value, f.name))
                for f in dataclasses.fields(value) if getattr(value, f.name) is not None}
    if isinstance(value, tuple):
        return [as_mapping(item) for item in value]
    if isinstance(value, Mapping):
        return {name: as_mapping(item) for name, item in value.items()}
    return value


def defaults(schema: Mapping[str, Any], path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """(path below spec, default) of every `default:` in the spec's schema."""
    for name, sub in (schema.get("properties") or {}).items():
        if "default" in sub:
            yield (*path, name), sub["default"]
        yield from defaults(sub, (*path, name))
    if isinstance(schema.get("items"), dict):
        yield from defaults(schema["items"], (*path, 0))


CRD_DEFAULTS = list(defaults(spec_schema()))


def test_the_crd_has_defaults_to_check() -> None:
    paths = {".".join(map(str, path)) for path, _ in CRD_DEFAULTS}
    assert {"training.peft.dropout", "training.seed", "output.saveTopK", "data.mix.0.weight"} <= paths


@pytest.mark.parametrize(("path", "default"), CRD_DEFAULTS, ids=[".".join(map(str, p)) for p, _ in CRD_DEFAULTS])
def test_every_crd_default_arrives_in_the_typed_spec(path: tuple[str | int, ...], default: Any) -> None:
    node: Any = spec.parse(minimal())
    for part in path:
        if isinstance(part, int):
            node = node[part]
        else:
            field = next(f for f in dataclasses.fields(node) if typed.crd_key(f) == part)
            node = getattr(node, field.name)
    if default == {}:  # an object defaulted to {}: present, its own defaults are rows of their own
        assert dataclasses.is_dataclass(node)
    else:
        assert as_mapping(node) == default


def test_lora_dropout_default_is_the_crds() -> None:
    """Once re-declared as 0.0 in an engine while the CRD said 0.05 (issue 16)."""
    crd = spec_schema()["properties"]["training"]["properties"]["peft"]["properties"]["dropout"]["default"]
    assert spec.parse(minimal()).training.peft.dropout == crd


def dataclasses_in(hint: Any) -> Iterator[type[Any]]:
    """The dataclasses a field's type names (X, X | None, tuple[X, ...])."""
    if dataclasses.is_dataclass(hint):
        yield hint  # type: ignore[misc]
    for arg in typing.get_args(hint):
        yield from dataclasses_in(arg)


def object_schemas(cls: type[Any], schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, type[Any], Mapping[str, Any]]]:
    """(path, dataclass, its schema) for the dataclass and every dataclass below it."""
    yield path, cls, schema
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        sub = schema["properties"][typed.crd_key(field)]
        for inner_cls in dataclasses_in(hints[field.name]):
            inner = sub["items"] if sub.get("type") == "array" else sub
            yield from object_schemas(inner_cls, inner, f"{path}.{typed.crd_key(field)}")


OBJECTS = list(object_schemas(typed.FinetuneSpec, spec_schema(), "spec"))


@pytest.mark.parametrize(("path", "cls", "schema"), OBJECTS, ids=[path for path, _, _ in OBJECTS])
def test_every_crd_property_has_a_field(path: str, cls: type[Any], schema: Mapping[str, Any]) -> None:
    assert {typed.crd_key(f) for f in dataclasses.fields(cls)} == set(schema["properties"]), path
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):  # Literal types list exactly the CRD's enum
        literals = [arg for arg in (hints[field.name], *typing.get_args(hints[field.name]))
                    if typing.get_origin(arg) is typing.Literal]
        enum = schema["properties"][typed.crd_key(field)].get("enum")
        assert bool(literals) == bool(enum), f"{path}.{typed.crd_key(field)}"
        if enum:
            assert set(typing.get_args(literals[0])) == set(enum), f"{path}.{typed.crd_key(field)}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_parses_to_the_validated_values(path: Path) -> None:
    job = spec.load(path)
    assert isinstance(job.typed, typed.FinetuneSpec)
    assert as_mapping(job.typed) == job.spec  # nothing lost, nothing invented


def test_typed_values_are_frozen() -> None:
    document = {"apiVersion": spec.API_VERSION, "kind": spec.KIND, "metadata": {"name": "j"}, "spec": minimal()}
    document["spec"]["training"]["overrides"] = {"a": {"b": 1}}
    job = spec.validate(document)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(job.typed.training, "max_steps", 5)
    overrides = job.typed.training.overrides
    assert overrides is not None
    with pytest.raises(TypeError):
        typing.cast(dict[str, Any], overrides)["a"] = 2
    overrides["a"]["b"] = 2  # nested values are the typed spec's own copies
    assert job.spec["training"]["overrides"]["a"]["b"] == 1


def test_numbers_the_schema_admits_as_integers_become_floats() -> None:
    document = minimal()
    document["training"].update(learningRate=1, gradientClipVal=2)
    training = spec.parse(document).training
    assert (training.learning_rate, training.gradient_clip_val) == (1.0, 2.0)
    assert isinstance(training.learning_rate, float)


def test_unknown_keys_never_reach_the_parser() -> None:
    """validate refuses an unknown field before parsing; the parser refuses one too."""
    document = {"apiVersion": spec.API_VERSION, "kind": spec.KIND, "metadata": {"name": "j"}, "spec": minimal()}
    document["spec"]["training"]["maxStep"] = 3
    with pytest.raises(spec.SpecError, match="unknown field") as caught:
        spec.validate(document)
    assert caught.value.path == "spec.training"
    with pytest.raises(spec.SpecError) as parsed:
        spec.parse(document["spec"])
    assert (parsed.value.path, parsed.value.detail) == ("spec.training", "unknown field(s): maxStep")


def test_a_missing_required_field_is_named() -> None:
    document = minimal()
    del document["data"]["train"]
    with pytest.raises(spec.SpecError) as caught:
        spec.parse(document)
    assert caught.value.path == "spec.data.train"
