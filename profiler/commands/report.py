"""`migprof report`: analyse QEMU trace logs (and QMP captures, recordings) offline."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from typing import Any

from profiler.errors import EXIT_OK, EXIT_USAGE, InputError, MigprofError

EPILOG = """\
examples:
  migprof report src.log                      # every migration in a source-side trace log
  migprof report src.log dst.log              # source and destination merged on one timeline
  migprof report --side source --side destination a.log b.log   # say which side each file is
  migprof report --all-checks src.log         # do not trim the pre-copy check table
  migprof report --json src.log | jq '.migrations[] | {outcome, downtime_ms, verdict}'

QEMU must log the migration trace events, with timestamps, e.g.
  -msg timestamp=on -D qemu-trace.log -trace enable='migrate_*' -trace enable='vfio_*'
  -trace enable='migration_bitmap_sync_*' -trace enable='migration_thread_*'
  -trace enable='vmstate_downtime_*' -trace enable=savevm_state_setup
(not 'migration_*' wholesale: migration_transferred_bytes prints a line per byte-count query).
exit status: 0 ok, 2 unusable input (the sound inputs are still reported)."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report", help="Analyse QEMU trace logs: checks, passes, devices, downtime, verdict",
        description="Report every migration in QEMU trace logs: each pre-copy check against the "
        "switch-over threshold, dirty-bitmap passes, per-device bytes, VFIO state transitions, "
        "the stop-and-copy downtime split per device, and a convergence verdict.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="QEMU trace log (log or simple back end), "
                   "QMP capture or recording")
    p.add_argument("--json", action="store_true", help="print one migprof.report/1 JSON object")
    p.add_argument("--side", action="append", choices=["source", "destination"], default=None,
                   help="side of each INPUT, in order (give it once per input; default: judged "
                   "from the events each file holds)")
    p.add_argument("--all-checks", action="store_true", help="show every check, not a trimmed table")
    return p


def _load(paths: list[str], sides: list[str] | None) -> tuple[Any, list[str]]:
    """Load the usable inputs; returns (Loaded or None, errors of the unusable ones)."""
    from profiler import pipeline

    errors: list[str] = []
    good: list[str] = []
    side_of: dict[str, str] = {}
    for i, p in enumerate(paths):
        if not os.path.exists(p):
            errors.append(f"{p}: no such file")
        elif os.path.isdir(p):
            errors.append(f"{p}: is a directory")
        else:
            good.append(p)
            if sides:
                side_of[p] = sides[i]
    while good:
        kw = {}
        if side_of and "sides" in inspect.signature(pipeline.load).parameters:
            kw["sides"] = [side_of[p] for p in good]
        try:
            loaded = pipeline.load(good, **kw)
        except InputError as e:
            errors.append(str(e))
            bad = [p for p in good if os.path.abspath(p) == os.path.abspath(e.path)]
            if not bad:
                return None, errors
            good = [p for p in good if p not in bad]
            continue
        if side_of and not kw:
            _force_sides(loaded.events, side_of)
        errors += _empty_inputs(loaded.events, good)
        return loaded, errors
    return None, errors


def _force_sides(ev, side_of: dict[str, str]) -> None:
    files = ev["file"].astype("string")
    for p, side in side_of.items():
        m = files.isin([p, os.path.abspath(p)]).fillna(False).to_numpy(dtype=bool)
        if m.any():
            ev.loc[m, "side"] = side


def _empty_inputs(ev, paths: list[str]) -> list[str]:
    """Inputs that gave no event at all (binary junk, an empty file, no trace lines)."""
    files = set(ev["file"].dropna().astype(str))
    if not files and len(ev):
        return []  # events carry no file name (e.g. a recording): cannot tell per input
    absf = {os.path.abspath(f) for f in files}
    return [f"{p}: no trace events found" for p in paths
            if p not in files and os.path.abspath(p) not in absf]


def run(args: argparse.Namespace) -> int:
    from profiler.model import build_report

    if args.side and len(args.side) != len(args.inputs):
        raise MigprofError(f"--side given {len(args.side)} times for {len(args.inputs)} inputs; "
                           "give it once per INPUT, in order")
    loaded, errors = _load(list(args.inputs), args.side)
    for e in errors:
        print(f"migprof: {e}", file=sys.stderr)
    if loaded is None:
        return EXIT_USAGE
    report = build_report(loaded.events, inputs=tuple(loaded.inputs), malformed=loaded.malformed,
                          skipped=loaded.skipped, warnings=tuple(loaded.warnings))
    for w in report.warnings:
        print(f"migprof: {w}", file=sys.stderr)
    _print(report, args)
    return EXIT_USAGE if errors or not report.migrations else EXIT_OK


def _print(report, args: argparse.Namespace) -> None:
    from profiler.views import report as view

    if args.json:
        json.dump(view.to_json(report), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    from rich.console import Console

    view.render(report, Console(file=sys.stdout, highlight=False), all_checks=args.all_checks)
