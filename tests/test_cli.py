"""The command line: every command listed and documented without importing the others' modules."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from profiler import cli

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiler.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)


def _subparsers(p: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))


def test_listed_help_is_what_each_module_says() -> None:
    """`migprof --help` shows cli.COMMANDS' lines without importing the modules: they must
    be the lines each module's add_parser gives."""
    full = _subparsers(cli.build_parser())
    said = {a.dest: a.help for a in full._choices_actions}
    assert said == {name: help_ for name, (_, help_) in cli.COMMANDS.items()}


def test_help_lists_every_command_without_heavy_imports() -> None:
    code = ("import sys\nfrom profiler import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nheavy = [m for m in ('pandas', 'numpy', 'pyarrow', 'rich', 'textual') "
            "if m in sys.modules]\nprint('HEAVY', heavy)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # argparse wraps at the terminal width
    for name, (_, help_) in cli.COMMANDS.items():
        assert f"{name} {help_}" in text
    assert "HEAVY []" in r.stdout


def test_version() -> None:
    r = _run("--version")
    assert r.returncode == 0 and r.stdout.strip().startswith("migprof ")


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_help(name: str) -> None:
    r = _run(name, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: migprof {name}")
    assert "--debug" in r.stdout


@pytest.mark.parametrize("argv,debug", [
    (["report", "x.log"], False),
    (["--debug", "report", "x.log"], True),
    (["report", "--debug", "x.log"], True),
    (["report", "x.log", "--debug"], True),
])
def test_debug_before_or_after_the_command(argv: list[str], debug: bool) -> None:
    args = cli.build_parser(argv).parse_args(argv)
    assert args.debug is debug and args.command == "report"


def test_unknown_command_is_a_usage_error() -> None:
    r = _run("no-such-command")
    assert r.returncode == 2 and "invalid choice" in r.stderr
