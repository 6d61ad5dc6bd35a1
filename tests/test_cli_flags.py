"""Flags mean the same in every command; the older spellings still work, with a warning."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from conftest import REAL, ROOT

from profiler.cli import build_parser
from profiler.commands.flags import SHORT, upgrade_argv

MIGPROF = [sys.executable, "-m", "profiler.cli"]
RUN = str(REAL / "7.2-converges")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> list[list[str]]:
    return [a.option_strings for a in parser._actions if a.option_strings]


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_each_short_flag_has_its_one_meaning(command: str) -> None:
    """A short flag is the long option SHORT gives it, in whichever command has it; a
    command with that long option has the short one too."""
    for names in _options(_subparsers()[command]):
        shorts = [n for n in names if len(n) == 2]
        longs = [n for n in names if n.startswith("--")]
        for s in shorts:
            assert s in SHORT, f"{command}: {s} ({longs}) is not in flags.SHORT"
            assert set(SHORT[s]) & set(longs), f"{command}: {s} is {longs}, elsewhere {SHORT[s]}"
        for s, meaning in SHORT.items():
            if set(meaning) & set(longs):
                assert s in shorts, f"{command}: {longs} without {s}"


def _migprof(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MIGPROF, *args], cwd=ROOT, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)


def test_j_is_json_everywhere() -> None:
    for args in (["report", "-j", RUN], ["compare", "-j", RUN, "--", RUN],
                 ["whatif", "-j", str(REAL / "7.2-downtime-raise")]):
        r = _migprof(*args)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["schema"].startswith("migprof."), args
        assert "deprecated" not in r.stderr


@pytest.mark.parametrize("old", [["-j", "1"], ["-j1"]])
def test_compare_j_number_is_still_jobs(old: list[str]) -> None:
    """`compare -j N` (N not a path) meant --jobs N: it still does, said once on stderr;
    the output is that of --jobs N."""
    new = _migprof("compare", RUN, "--", RUN, "--jobs", "1")
    got = _migprof("compare", RUN, "--", RUN, *old)
    assert got.returncode == new.returncode == 0, got.stderr
    assert got.stdout == new.stdout
    warn = [ln for ln in got.stderr.splitlines() if "deprecated" in ln]
    assert warn == ["migprof: warning: -j 1 is deprecated, use --jobs 1 (-j is --json in every command)"]
    # before the inputs too, and -j before a path is JSON
    assert upgrade_argv(["compare", "-j", "2", "a", "--", "b"]) == ["compare", "--jobs", "2", "a", "--", "b"]
    assert upgrade_argv(["compare", "-j", RUN, "--", RUN]) == ["compare", "-j", RUN, "--", RUN]


def test_replay_s_number_is_still_speed() -> None:
    """`replay -s N` meant --speed N (-s is --scenario now): a bad N is refused as --speed,
    after the warning, so the old spelling reaches the same check."""
    r = _migprof("replay", RUN, "-s", "0")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "migprof: warning: -s 0 is deprecated, use --speed 0 (-s is --scenario in every command)",
        "migprof: error: --speed 0: use a factor between 0.01 and 10000"]
    ns = build_parser().parse_args(upgrade_argv(["--debug", "replay", RUN, "-s10"]))
    assert ns.speed == 10.0 and ns.inputs == [RUN]


def test_debug_after_the_command() -> None:
    """`migprof report --debug X` is `migprof --debug report X`: a bad input shows the
    traceback instead of the one line."""
    r = _migprof("compare", RUN, "--", "--debug", RUN, "--alpha", "2")
    assert r.returncode != 0 and "Traceback" in r.stderr and "MigprofError" in r.stderr
    plain = _migprof("compare", RUN, "--", RUN, "--alpha", "2")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert build_parser().parse_args(upgrade_argv(["report", "--debug", "x"])).debug


def test_long_options_unchanged() -> None:
    """--jobs, --speed, --out and --output parse as before."""
    p = build_parser()
    assert p.parse_args(["compare", "--jobs", "3", "a", "--", "b"]).jobs == 3
    assert p.parse_args(["replay", "x", "--speed", "4"]).speed == 4.0
    assert str(p.parse_args(["lab", "--out", "d1"]).out) == "d1"
    assert str(p.parse_args(["lab", "--output", "d2"]).out) == "d2"
    assert str(p.parse_args(["demo", "-o", "d3"]).out) == "d3"
