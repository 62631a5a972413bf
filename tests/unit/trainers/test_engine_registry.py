"""The engine registry: one row per engine, agreeing with the CRD, the operator and the
engines' own modules; the webhook's part of it imports no framework."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

from speechtune import cli, engines, spec
from speechtune.engines import base
from speechtune_operator import settings as operator_settings

ROWS = {row.name: row for row in engines.ROWS}


def test_one_row_per_engine_the_crd_and_the_operator_know() -> None:
    crd_engines = spec.crd_schema()["properties"]["spec"]["properties"]["engine"]["enum"]
    assert len(engines.NAMES) == len(set(engines.NAMES))
    assert set(engines.NAMES) == set(crd_engines) == set(operator_settings.ENGINES)


def test_an_unknown_engine_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown engine 'whisper'; known: hf-ctc, nemo-canary, speechbrain-ctc"):
        engines.row("whisper")


@pytest.mark.parametrize("name", sorted(ROWS))
def test_factory_names_the_class_with_its_conformance_line(name: str) -> None:
    """`_: type[base.Engine] = XEngine` (checked by mypy) sits next to the class the row builds."""
    module_name, _, class_name = ROWS[name].factory.partition(":")
    module = importlib.import_module(module_name)
    engine_class = getattr(module, class_name)
    assert inspect.isclass(engine_class)
    assert getattr(module, "_") is engine_class
    for method in ("prepare", "train", "evaluate", "export"):
        assert callable(getattr(engine_class, method))


@pytest.mark.parametrize("name", sorted(ROWS))
def test_spec_checks_take_the_spec_and_load_no_framework(name: str) -> None:
    """The operator's admission webhook calls them: a fresh interpreter imports the
    registry and the row's check module without torch, NeMo, SpeechBrain or transformers."""
    module_name = ROWS[name].spec_checks.partition(":")[0]
    code = (f"import sys; from speechtune import engines; import {module_name}; "
            f"engines.row({name!r}).check_spec(); "
            "loaded = sorted(m for m in ('torch', 'nemo', 'speechbrain', 'transformers', 'lightning', 'numpy') "
            "if m in sys.modules); print(','.join(loaded))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == ""


def test_data_needs_reach_data_check() -> None:
    assert ROWS["nemo-canary"].data_needs == base.DataNeeds(fields=("source_lang", "target_lang"))
    parser = cli.build_parser()
    for name in engines.NAMES:
        args = parser.parse_args(["data", "check", "m.json", "--engine", name])
        assert args.engine_needs[args.engine] == ROWS[name].data_needs
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "check", "m.json", "--engine", "whisper"])


def test_engine_commands_are_registered_where_their_row_says() -> None:
    """nemo-canary's `export` (top level) and `data bins` live in its own package."""
    assert [(c.module, c.group) for c in ROWS["nemo-canary"].commands] == [
        ("speechtune.engines.nemo_canary.export", None), ("speechtune.engines.nemo_canary.bins", "data")]
    parser = cli.build_parser()
    export = parser.parse_args(["export", "run/checkpoints", "-o", "a.nemo"])
    assert export.func.__module__ == "speechtune.engines.nemo_canary.export"
    bins = parser.parse_args(["data", "bins", "t.json", "--tokenizers", "tok", "--batch-duration", "30"])
    assert bins.func.__module__ == "speechtune.engines.nemo_canary.bins"
