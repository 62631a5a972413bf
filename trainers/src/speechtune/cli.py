"""`speechtune` command line: each command group lives in its own module with a
`register(subparsers)` function; this file only wires them together: the runtime's
commands, the data commands, then the commands each engine's registry row names."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from speechtune.runtime import openmp

# Command groups, imported at start-up (not at import time of this module). Each module's
# register() adds its subcommands and sets `func` on them.
COMMAND_MODULES = (
    "speechtune.runtime.commands",  # run, train, validate, eval, status, watch, sweep, demo
    "speechtune.runtime.model_commands",  # model fetch (the operator's model initializer)
)


def build_parser() -> argparse.ArgumentParser:
    from speechtune import engines
    from speechtune.data import commands as data_commands

    parser = argparse.ArgumentParser(
        prog="speechtune", description="Fine-tune speech-recognition models from one FinetuneJob spec.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        _register(name, subparsers)
    # data synth|convert|check|from-hf; `data check --engine` knows each engine's data needs
    groups = {None: subparsers, "data": data_commands.register(subparsers, engines.data_needs())}
    for row in engines.ROWS:  # the engines' own commands (nemo-canary: export, data bins)
        for command in row.commands:
            _register(command.module, groups[command.group])
    return parser


def _register(name: str, subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:  # a broken import inside the module is a real error
            raise
        return  # a command group this installation does not ship
    module.register(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP wait policy by machine load (runtime/openmp.py); before torch loads libgomp.
    openmp.apply()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handling: one line, not a traceback
        _say("speechtune: interrupted")
        return 130
    except OSError as error:  # any command: the path and the errno, not a traceback
        from speechtune import spec

        _say(f"speechtune: {str(error.filename) + ': ' if error.filename else ''}{spec.os_error(error)}")
        return 1
    finally:
        _flush_or_drop_stdout()


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr)
    except (OSError, ValueError, AttributeError):
        pass


def _flush_or_drop_stdout() -> None:
    """A closed stdout (`speechtune ... | head -0`, `>&-`) must not end in Python's
    "Exception ignored ... BrokenPipeError" at exit: flush now, else point it at /dev/null."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        finally:
            os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
