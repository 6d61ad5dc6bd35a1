"""`migprof replay`: Replay a recording or traces in the TUI."""

from __future__ import annotations

import argparse

from profiler.errors import MigprofError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("replay", help="Replay a recording or traces in the TUI")
    return p


def run(args: argparse.Namespace) -> int:
    raise MigprofError("'migprof replay' is not implemented yet")
