"""The ``migprof`` command line: one subcommand per module in profiler.commands."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from profiler import __version__
from profiler.commands.flags import upgrade_argv
from profiler.errors import EXIT_USAGE, MigprofError

# subcommand -> (module in profiler.commands, its one-line help). Each module defines
#   add_parser(subparsers) -> argparse.ArgumentParser   and   run(args) -> int
# Only the module of the command being run is imported (several import pandas, BPF or the
# TUI at the top); the others appear in `migprof --help` by these lines, which
# tests/test_cli.py keeps equal to what each module's add_parser says.
COMMANDS = {
    "report": ("report", "Analyse QEMU trace logs: checks, passes, devices, downtime, verdict"),
    "live": ("live", "Profile a running QEMU live (BPF on VFIO fds, QEMU trace, QMP)"),
    "record": ("record", "Record a live migration without the TUI"),
    "lab": ("lab", "Run a real migration between two local QEMUs"),
    "demo": ("demo", "Run a lab migration and profile it live"),
    "replay": ("replay", "Replay a recording or traces in the TUI"),
    "import": ("import_", "Turn QEMU logs or simpletrace files into a recording"),
    "compare": ("compare", "Compare migrations run against run"),
    "whatif": ("whatif", "Predict a recorded migration under other settings"),
    "query": ("query", "SQL over a fleet dataset (DuckDB)"),
    "top": ("top", "Every QEMU on this host: migration status, pass, pending vs threshold"),
}
DEBUG_HELP = "show tracebacks and debug logging"


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option), if any: the
    top-level options take no value, so the first other word is the command."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the full subparser of the command named in ``argv`` (all of them when
    ``argv`` is None) and a one-line entry for each other command."""
    p = argparse.ArgumentParser(
        prog="migprof",
        description="Profile QEMU live migration with VFIO devices: pre-copy iterations, "
        "stop-and-copy, per-device bytes and downtime, convergence against the threshold.",
    )
    p.add_argument("--version", action="version", version=f"migprof {__version__}")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    want = _command_in(argv) if argv is not None else None
    for name, (mod, help_text) in COMMANDS.items():
        if argv is not None and name != want:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(f"profiler.commands.{mod}")
        sp = module.add_parser(sub)
        sp.set_defaults(_run=module.run)
        if "--debug" not in sp._option_string_actions:  # argparse has no public lookup
            # SUPPRESS: absent after the command, it leaves the top-level value alone
            sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``argv`` None = this process's command line (then a command that
    asks for it, ``exit_at_once``, ends the process as soon as its output is written)."""
    whole_process = argv is None
    argv = upgrade_argv(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="migprof: %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    rc = _run(args)
    if whole_process and getattr(args, "exit_at_once", False):
        _exit_now(rc)
    return rc


def _run(args: argparse.Namespace) -> int:
    try:
        rc = int(args._run(args) or 0)
        sys.stdout.flush()  # a reader gone (`| head`) shows here, not at exit
        return rc
    except MigprofError as e:
        if args.debug:
            raise
        print(f"migprof: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        from profiler.pipes import reader_gone

        reader_gone()  # what is still buffered goes nowhere, with no error at exit
        return 0


def _exit_now(rc: int) -> None:
    """End the process without the interpreter's teardown (freeing a large report object by
    object costs a tenth of a second), output flushed first."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError, ValueError):  # a reader gone, a closed stream
            stream.flush()
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
