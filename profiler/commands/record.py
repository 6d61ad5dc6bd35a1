"""`migprof record`: Record a live migration without the TUI."""

from __future__ import annotations

import argparse

from profiler.errors import MigprofError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("record", help="Record a live migration without the TUI")
    return p


def run(args: argparse.Namespace) -> int:
    raise MigprofError("'migprof record' is not implemented yet")
