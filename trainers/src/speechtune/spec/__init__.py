"""Load a FinetuneJob YAML and validate it against the CRD's own openAPIV3Schema.

The trainer has no schema of its own: `finetunejob.crd.yaml` (a link to crds/, copied into
wheels by setuptools) is read at run time, so the CRD and the trainer cannot drift. Like
the API server we apply the schema's defaults, check the structural schema (jsonschema,
draft 4 as OpenAPI v3.0 uses it) and evaluate the `x-kubernetes-validations` CEL rules
(cel-python). Unlike the API server we reject unknown fields instead of pruning them:
a typo in a local job file should fail loudly, not be dropped.

`validate` then parses the spec once into frozen dataclasses (`speechtune.spec.typed`),
`Job.typed`: what the runtime and the engines read."""

from __future__ import annotations

import copy
import dataclasses
import errno
import functools
import importlib.resources
import math
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import jsonschema
import yaml

from speechtune import strict_yaml
from speechtune.spec import typed
from speechtune.spec.typed import FinetuneSpec as FinetuneSpec

CRD_RESOURCE = "finetunejob.crd.yaml"
API_VERSION = "speechtune.dev/v1alpha1"
KIND = "FinetuneJob"


class SpecError(ValueError):
    """A job file that does not satisfy the CRD; the message names the field path."""

    def __init__(self, source: str, path: str, message: str) -> None:
        super().__init__(f"{source}: {path}: {message}")
        self.source = source
        self.path = path
        self.detail = message


@dataclasses.dataclass(frozen=True)
class Job:
    """A validated FinetuneJob with the CRD's defaults applied."""

    name: str
    namespace: str
    spec: Mapping[str, Any]  # the validated mapping (the operator's builders read it)
    typed: FinetuneSpec  # the same spec, parsed once: what the runtime and engines read
    uid: str | None = None
    source: str = "<memory>"

    def to_object(self) -> dict[str, Any]:
        """The whole object again (what the operator mounts at /etc/speechtune/job.yaml)."""
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.uid:
            metadata["uid"] = self.uid
        return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": copy.deepcopy(dict(self.spec))}


@functools.cache
def crd_schema() -> Mapping[str, Any]:
    """The openAPIV3Schema of the served version of the packaged CRD."""
    text = importlib.resources.files("speechtune").joinpath(CRD_RESOURCE).read_text()
    crd = yaml.safe_load(text)
    versions = crd["spec"]["versions"]
    version = next(v for v in versions if f"{crd['spec']['group']}/{v['name']}" == API_VERSION)
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def load(path: str | Path) -> Job:
    """Reads and validates a job file; raises SpecError naming the file and field."""
    return validate(read_document(path), source=str(path))


def read_document(path: str | Path) -> Any:
    """The job file's one YAML document (strict_yaml: no duplicate keys, bounded size);
    every failure is a SpecError, never an OSError or a YAML traceback."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(strict_yaml.MAX_BYTES + 1)  # /dev/zero or a huge file stop here
    except FileNotFoundError:
        raise SpecError(source, "(file)", "no such file") from None
    except IsADirectoryError:
        raise SpecError(source, "(file)", "is a directory, not a job file") from None
    except OSError as error:
        raise SpecError(source, "(file)", f"cannot read: {os_error(error)}") from None
    try:
        return strict_yaml.load(raw)
    except strict_yaml.YamlProblem as problem:
        raise SpecError(f"{source}:{problem.line}" if problem.line else source, "(yaml)", problem.message) from None


def os_error(error: OSError) -> str:
    """`Permission denied (EACCES)`: the reason and the errno's name, without a traceback."""
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    return f"{error.strerror or error} ({name})"


def validate(document: Any, *, source: str = "<memory>") -> Job:
    """The CRD's structural schema, defaults and CEL rules, plus what the API server gets
    for free from JSON (string keys, finite numbers). No engine checks: see `check`."""
    if not isinstance(document, dict):
        raise SpecError(source, "(document)", "expected a FinetuneJob mapping")
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise SpecError(source, "apiVersion/kind",
                        f"expected {API_VERSION} {KIND}, got {document.get('apiVersion')} {document.get('kind')}")
    for path, message in json_value_problems(document, []):
        raise SpecError(source, path, message)
    schema = crd_schema()
    obj = apply_defaults(schema, copy.deepcopy(document))
    _check_structure(schema, obj, source)
    for path, message in cel_violations(schema, obj):
        raise SpecError(source, path, message)
    metadata = obj.get("metadata") or {}
    if not metadata.get("name"):
        raise SpecError(source, "metadata.name", "required")
    return Job(name=metadata["name"], namespace=metadata.get("namespace") or "default",
               spec=obj["spec"], typed=_typed(obj["spec"], source), uid=metadata.get("uid"), source=source)


def parse(spec: Mapping[str, Any], *, source: str = "<memory>") -> FinetuneSpec:
    """The typed spec of a `.spec` mapping, with the CRD's defaults applied first (for
    tests and tools holding a bare spec; job files go through `validate`, which also
    checks the schema and the CEL rules)."""
    defaulted = apply_defaults(crd_schema()["properties"]["spec"], copy.deepcopy(dict(spec)))
    return _typed(defaulted, source)


def _typed(spec: Mapping[str, Any], source: str) -> FinetuneSpec:
    try:
        return typed.build(spec)
    except typed.Unexpected as error:
        raise SpecError(source, error.path, error.detail) from None


@dataclasses.dataclass(frozen=True)
class Checked:
    """What `check` found: the job and the engine's notes (memory estimate, what will run)."""

    job: Job
    notes: list[str]


def check(document: Any, *, source: str = "<memory>", in_pod: bool = False) -> Checked:
    """The one entry point for everything `speechtune run/train` refuses before step 1
    that needs no data and no GPU: `validate`, then the engine's torch-free override
    catalogue and spec checks (the registry row's spec_checks), then, for a pod, that an absolute
    model.path lies on a mounted volume. Raises SpecError naming the field. Imports no
    torch and no engine implementation, so the operator's admission webhook can call it."""
    job = validate(document, source=source)
    notes = engine_checks(job.typed, source=source)
    if in_pod:
        check_pod_paths(job.typed, source=source)
    return Checked(job, notes)


def check_file(path: str | Path, *, in_pod: bool = False) -> Checked:
    return check(read_document(path), source=str(path), in_pod=in_pod)


def engine_checks(spec: FinetuneSpec, *, source: str = "<memory>") -> list[str]:
    """The engine's spec checks (a torch-free function its registry row names); its
    ValueError ("spec.field: why") becomes a SpecError with that field path."""
    from speechtune import engines  # the registry module imports no framework

    try:
        notes = engines.row(spec.engine).check_spec()(spec)
    except ValueError as error:
        raise spec_error(source, error) from None
    return list(notes or [])


def spec_error(source: str, error: ValueError) -> SpecError:
    """A SpecError from an engine's "spec.x.y: message" ValueError."""
    if isinstance(error, SpecError):
        return error
    text = str(error)
    field, sep, detail = text.partition(": ")
    if sep and field.startswith("spec") and " " not in field.replace("'", "").replace("[", ""):
        return SpecError(source, field, detail)
    return SpecError(source, "spec", text)


# Where a pod mounts volumes (the operator's builders use the same paths).
POD_VOLUMES = ("/data", "/output", "/models")


def check_pod_paths(spec: FinetuneSpec, *, source: str = "<memory>") -> None:
    """In a pod an absolute spec.model.path must lie on a mounted volume: elsewhere it
    reads the image's or the node's files, which no job should choose."""
    overrides = spec.training.overrides or {}
    for field, value in (("spec.model.path", spec.model.path if spec.model else None),
                         ("spec.training.overrides.spm_model", overrides.get("spm_model"))):
        path = str(value or "")
        if path.startswith("/") and not any(path == root or path.startswith(root + "/") for root in POD_VOLUMES):
            raise SpecError(source, field, f"{path} is outside the mounted volumes ({', '.join(POD_VOLUMES)}); "
                                           "give a path relative to the model volume")


RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_id(run_id: str, *, field: str = "--run-id") -> str:
    """A run id names one folder below <output>/<job>/: one path segment, no '..'."""
    if not RUN_ID.match(run_id) or ".." in run_id:
        raise ValueError(f"{field} {run_id!r}: want a folder name of letters, digits, '.', '_' "
                         "and '-' (at most 128, no '..', no '/')")
    return run_id


def json_value_problems(value: Any, path: list[Any]) -> Iterator[tuple[str, str]]:
    """What JSON (and so kubectl and the API server) cannot carry: non-string keys,
    NaN/infinity, timestamps, bytes and sets that YAML builds; as (field path, message)."""
    where = field_path(path) or "(document)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield where, f"key {key!r} is not a string (quote it)"
                return
            yield from json_value_problems(item, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_value_problems(item, [*path, index])
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield where, f"{value} is not a finite number"
    elif isinstance(value, str):
        if "\x00" in value:  # no file name, label or setting has one; paths would be cut there
            yield where, "contains a NUL character"
    elif value is not None and not isinstance(value, (str, int, bool)):
        yield where, f"a YAML {type(value).__name__} is not a JSON value (quote it)"


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """Fills absent properties that have a `default`, recursively (defaults of a defaulted
    object apply too, as the API server does)."""
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in value:
                if name not in (schema.get("properties") or {}):
                    value[name] = apply_defaults(extra, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def strict_schema(schema: Mapping[str, Any], *, closed: bool) -> dict[str, Any]:
    """A copy with `additionalProperties: false` on every declared object below `spec`
    (the structural schema prunes unknown fields; we report them instead)."""
    out = dict(schema)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        out["properties"] = {
            name: strict_schema(sub, closed=closed or name == "spec") for name, sub in properties.items()
        }
        if closed and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("items"), dict):
        out["items"] = strict_schema(schema["items"], closed=closed)
    return out


def _check_structure(schema: Mapping[str, Any], obj: Any, source: str) -> None:
    validator = jsonschema.Draft4Validator(strict_schema(schema, closed=False))
    errors = sorted(validator.iter_errors(obj), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        error = errors[0]
        raise SpecError(source, field_path(error.absolute_path) or "(document)", _message(error))


def field_path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return f"unknown field(s): {error.message.split('(')[-1].rstrip(')')}"
    return str(error.message)


def _rules(schema: Mapping[str, Any], value: Any, path: list[Any]) -> Iterator[tuple[list[Any], Mapping[str, Any], Any]]:
    """(path, rule, value) for every CEL rule whose field is present in the object."""
    for rule in schema.get("x-kubernetes-validations") or ():
        yield path, rule, value
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                yield from _rules(sub, value[name], [*path, name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _rules(schema["items"], item, [*path, index])


def cel_violations(schema: Mapping[str, Any], obj: Any) -> list[tuple[str, str]]:
    """(field path, message) of every failing CEL rule. Transition rules (those reading
    `oldSelf`) only apply to updates and are skipped: a job file is always a create."""
    import celpy  # cel-python; imported here so loading this module stays cheap

    environment = celpy.Environment()
    failures = []
    for path, rule, value in _rules(schema, obj, []):
        expression = rule["rule"]
        if "oldSelf" in expression:
            continue
        program = _program(environment, expression)
        try:
            result = program.evaluate({"self": celpy.json_to_cel(value)})  # type: ignore[attr-defined]
        except celpy.CELEvalError as error:  # type: ignore[attr-defined]  # e.g. a field the rule reads has no default
            result = error
        if isinstance(result, Exception) or not bool(result):
            where = field_path([*path, *_field_path_parts(rule.get("fieldPath", ""))])
            failures.append((where or "(document)", rule.get("message") or f"failed rule: {expression}"))
    return failures


@functools.cache
def _compiled(expression: str) -> Any:
    import celpy

    return celpy.Environment().compile(expression)


def _program(environment: Any, expression: str) -> Any:
    return environment.program(_compiled(expression))


def _field_path_parts(field: str) -> list[str]:
    return [part for part in field.split(".") if part]
