"""The CLI wires every command group of ARCHITECTURE.md."""

from __future__ import annotations

import subprocess
import sys

from speechtune import cli


def test_every_documented_command_is_registered() -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None
    for name in ("run", "train", "validate", "data", "eval", "status", "watch", "sweep", "demo", "export"):
        assert name in commands, name
    data = next(a for a in commands["data"]._actions if a.dest and a.choices and "synth" in a.choices)
    assert {"synth", "convert", "check", "bins", "from-hf"} <= set(data.choices)


def test_the_installed_entry_point_answers_help() -> None:
    done = subprocess.run([sys.executable, "-m", "speechtune.cli", "run", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--volume" in done.stdout
