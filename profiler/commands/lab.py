"""`migprof lab`: Run a real migration between two local QEMUs."""

from __future__ import annotations

import argparse

from profiler.errors import MigprofError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("lab", help="Run a real migration between two local QEMUs")
    return p


def run(args: argparse.Namespace) -> int:
    raise MigprofError("'migprof lab' is not implemented yet")
