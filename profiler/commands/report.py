"""`migprof report`: Analyse QEMU trace logs and recordings."""

from __future__ import annotations

import argparse

from profiler.errors import MigprofError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="Analyse QEMU trace logs and recordings")
    return p


def run(args: argparse.Namespace) -> int:
    raise MigprofError("'migprof report' is not implemented yet")
