"""Engine registry: one row per engine, everything the runtime, the CLI and the operator's
admission webhook need to know about it.

A row names its modules as "module:attribute" strings, imported on first use: the nemo
image has no speechbrain, the hf image has no NeMo, and the webhook imports only the
torch-free spec checks. Each engine module states its conformance to `base.Engine` with a
static line (`_: type[base.Engine] = XEngine`) that mypy checks."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, cast

from speechtune.engines import base
from speechtune.spec import typed


@dataclasses.dataclass(frozen=True)
class Command:
    """A CLI command group an engine adds: `module.register(subparsers)`."""

    module: str
    group: str | None = None  # None: top level (`speechtune export`); "data": `speechtune data bins`


@dataclasses.dataclass(frozen=True)
class Row:
    name: str  # spec.engine
    factory: str  # "module:Class" implementing base.Engine
    # "module:function" run by `speechtune validate`, before training and by the webhook:
    # takes the spec, returns notes, raises ValueError("spec.field: why"). Torch-free.
    spec_checks: str
    data_needs: base.DataNeeds  # what the engine's data loader requires of every manifest row
    commands: tuple[Command, ...] = ()

    def engine(self) -> base.Engine:
        """A fresh engine instance (imports the engine's framework)."""
        return cast(base.Engine, _attribute(self.factory)())

    def check_spec(self) -> Callable[[typed.FinetuneSpec], list[str]]:
        return cast(Callable[[typed.FinetuneSpec], list[str]], _attribute(self.spec_checks))


ROWS: tuple[Row, ...] = (
    Row(
        name="speechbrain-ctc",
        factory="speechtune.engines.speechbrain_ctc.engine:SpeechBrainCTCEngine",
        spec_checks="speechtune.engines.speechbrain_ctc.settings:check_spec",
        data_needs=base.DataNeeds(),
    ),
    Row(
        name="nemo-canary",
        factory="speechtune.engines.nemo_canary.engine:NemoCanaryEngine",
        spec_checks="speechtune.engines.nemo_canary.preflight:check_spec",
        # Canary's prompt is built from the languages of every row.
        data_needs=base.DataNeeds(fields=("source_lang", "target_lang")),
        commands=(Command("speechtune.engines.nemo_canary.export"),
                  Command("speechtune.engines.nemo_canary.bins", group="data")),
    ),
    Row(
        name="hf-ctc",
        factory="speechtune.engines.hf_ctc.engine:HFCTCEngine",
        spec_checks="speechtune.engines.hf_ctc.settings:check_spec",
        data_needs=base.DataNeeds(),
    ),
)

NAMES: tuple[str, ...] = tuple(row.name for row in ROWS)


def row(name: str) -> Row:
    """The row of `spec.engine`; ValueError naming the known engines otherwise."""
    for candidate in ROWS:
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown engine {name!r}; known: {', '.join(sorted(NAMES))}")


def data_needs() -> dict[str, base.DataNeeds]:
    """Each engine's data needs by name (`speechtune data check --engine`)."""
    return {candidate.name: candidate.data_needs for candidate in ROWS}


def load(name: str) -> base.Engine:
    """Returns a fresh engine instance for `spec.engine`."""
    return row(name).engine()


def _attribute(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
