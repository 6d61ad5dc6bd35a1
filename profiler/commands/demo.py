"""`migprof demo`: Run a lab migration and profile it live."""

from __future__ import annotations

import argparse

from profiler.errors import MigprofError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="Run a lab migration and profile it live")
    return p


def run(args: argparse.Namespace) -> int:
    raise MigprofError("'migprof demo' is not implemented yet")
