"""`migprof compare`: Compare migrations run against run."""

from __future__ import annotations

import argparse

from profiler.errors import MigprofError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="Compare migrations run against run")
    return p


def run(args: argparse.Namespace) -> int:
    raise MigprofError("'migprof compare' is not implemented yet")
