"""`migprof import`: Turn QEMU logs or simpletrace files into a recording."""

from __future__ import annotations

import argparse

from profiler.errors import MigprofError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("import", help="Turn QEMU logs or simpletrace files into a recording")
    return p


def run(args: argparse.Namespace) -> int:
    raise MigprofError("'migprof import' is not implemented yet")
