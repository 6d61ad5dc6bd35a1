"""The ``migprof`` command line: one subcommand per module in profiler.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from profiler import __version__
from profiler.errors import EXIT_USAGE, MigprofError

# subcommand -> module in profiler.commands; each module defines
#   add_parser(subparsers) -> argparse.ArgumentParser   and   run(args) -> int
COMMANDS = {
    "report": "report",
    "live": "live",
    "record": "record",
    "lab": "lab",
    "demo": "demo",
    "replay": "replay",
    "import": "import_",
    "compare": "compare",
    "whatif": "whatif",
    "query": "query",
    "top": "top",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="migprof",
        description="Profile QEMU live migration with VFIO devices: pre-copy iterations, "
        "stop-and-copy, per-device bytes and downtime, convergence against the threshold.",
    )
    p.add_argument("--version", action="version", version=f"migprof {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMANDS.values():
        module = importlib.import_module(f"profiler.commands.{mod}")
        sp = module.add_parser(sub)
        sp.set_defaults(_run=module.run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="migprof: %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except MigprofError as e:
        if args.debug:
            raise
        print(f"migprof: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
