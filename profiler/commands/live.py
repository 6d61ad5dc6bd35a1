"""`migprof live`: Profile a running QEMU live."""

from __future__ import annotations

import argparse

from profiler.errors import MigprofError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("live", help="Profile a running QEMU live")
    return p


def run(args: argparse.Namespace) -> int:
    raise MigprofError("'migprof live' is not implemented yet")
