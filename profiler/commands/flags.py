"""One meaning per short flag in every command, and the older spellings that still work.

The short flags follow bcc's tools where they overlap (-p PID, -d DURATION, -i INTERVAL,
-j JSON); ``tests/test_cli_flags.py`` holds every command's parser to ``SHORT``. Two
spellings of older releases meant something else and keep working, with a warning on
stderr, where nothing else can be meant: ``replay -s N`` (now ``--speed N``; -s is
--scenario) and ``compare -j N`` with N a number that is not a path (now ``--jobs N``;
-j is --json). ``--debug`` is taken after the command too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

# short flag -> the long option(s) it stands for, whichever command has it
SHORT = {
    "-h": ("--help",),
    "-p": ("--pid",),
    "-d": ("--duration",),
    "-i": ("--interval",),
    "-j": ("--json",),
    "-c": ("--connect",),  # a libvirt URI, as virsh -c
    "-o": ("--output",),  # where the command writes: a file, or lab's run directory
    "-s": ("--scenario",),
    "-n": ("--name",),  # only what matches a name, as bcc tools' -n
}


def _command(argv: Sequence[str]) -> int | None:
    """Index of the subcommand in ``argv``: the first word that is not an option (the
    top-level options take no value)."""
    for i, word in enumerate(argv):
        if word == "--":
            return None
        if not word.startswith("-"):
            return i
    return None


def _warn(old: str, new: str, why: str) -> None:
    print(f"migprof: warning: {old} is deprecated, use {new} ({why})", file=sys.stderr)


def upgrade_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the older spellings rewritten to today's, each said once on stderr."""
    out = list(argv)
    at = _command(out)
    if at is None:
        return out
    if "--debug" in out[at + 1:]:  # a top-level flag, also accepted after the command
        out = ["--debug", *out[:at], *(w for w in out[at:] if w != "--debug")]
        at += 1
    cmd = out[at]
    if cmd == "replay":
        return out[:at + 1] + _rewrite(out[at + 1:], "-s", "--speed", r"\d*\.?\d+",
                                       "-s is --scenario in every command")
    if cmd == "compare":
        return out[:at + 1] + _rewrite(out[at + 1:], "-j", "--jobs", r"\d+",
                                       "-j is --json in every command")
    return out


def _rewrite(words: list[str], short: str, long: str, value: str, why: str) -> list[str]:
    """``short N`` / ``shortN`` -> ``long N`` where N matches ``value`` and names no file."""
    out: list[str] = []
    i = 0
    said = False
    while i < len(words):
        w = words[i]
        if w == short and i + 1 < len(words) and _old_value(words[i + 1], value):
            out += [long, words[i + 1]]
            i += 2
        elif w.startswith(short) and len(w) > len(short) and _old_value(w[len(short):], value):
            out += [long, w[len(short):]]
            i += 1
        else:
            out.append(w)
            i += 1
            continue
        if not said:
            _warn(f"{short} {out[-1]}", f"{long} {out[-1]}", why)
            said = True
    return out


def _old_value(word: str, value: str) -> bool:
    return re.fullmatch(value, word) is not None and not os.path.exists(word)
