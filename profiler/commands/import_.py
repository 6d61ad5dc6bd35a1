"""`migprof import`: turn QEMU logs, simpletrace files or run directories into a recording."""

from __future__ import annotations

import argparse
import sys

from profiler.errors import EXIT_OK, InputError, MigprofError

EXAMPLES = """examples:
    migprof import src.log dst.log -o run.parquet        # both sides of one migration
    migprof import trace-12345 -o run.parquet            # a simpletrace file
    migprof import /var/cache/migprof/runs/r1 -o r1.parquet   # a lab run directory
    migprof import run/ --dataset fleet/ --host hv17      # into a fleet dataset (docs/dataset.md)
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("import", help="Turn QEMU logs or simpletrace files into a recording",
                       description="Read QEMU trace logs, simpletrace files, QMP streams or lab "
                       "run directories and write them as one migprof recording (Parquet).",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", metavar="FILE", help="recording to write (optional with --dataset)")
    p.add_argument("--qemu-version", metavar="VER", help="note the QEMU version in the metadata")
    p.add_argument("--dataset", metavar="DIR", help="also add the recording to this fleet dataset")
    p.add_argument("--host", metavar="H", help="the dataset's host partition (default: this host)")
    return p


def run(args: argparse.Namespace) -> int:
    if args.dataset and not args.output:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="migprof-import-") as tmp:
            args.output, args.temp_output = f"{tmp}/recording.parquet", True
            return run(args)
    if not args.output:
        raise MigprofError("import: give -o FILE, --dataset DIR, or both")
    from profiler import store
    from profiler.pipeline import load

    loaded = load(list(args.inputs))
    events = loaded.events
    for w in loaded.warnings:
        print(f"migprof: warning: {w}", file=sys.stderr)
    if not len(events):
        raise InputError(", ".join(args.inputs), "no events to import")
    meta = dict(loaded.meta or {})
    meta.setdefault("imported_from", [str(x) for x in args.inputs])
    meta.setdefault("sources", sorted({str(o) for o in events["origin"].dropna().unique()}))
    meta["malformed_lines"] = int(loaded.malformed)
    meta["skipped_lines"] = int(loaded.skipped)
    qv = args.qemu_version or store.qemu_version_of(meta)
    if qv:
        meta["qemu_version"] = qv
    try:
        path = store.write_recording(args.output, events, meta)
    except OSError as e:
        raise InputError(args.output, f"cannot write the recording: {e}") from None
    if not getattr(args, "temp_output", False):
        print(f"migprof: wrote {path}: {len(events)} events from {len(args.inputs)} input(s) "
              f"({loaded.malformed} malformed, {loaded.skipped} skipped lines)", file=sys.stderr)
    if args.dataset:
        from profiler.dataset import add_recording

        a = add_recording(args.dataset, path, host=args.host)
        print(f"migprof: added to {args.dataset}: host={a.host} date={a.date} recording {a.unit}: "
              f"{a.migrations} migration(s), {a.events} events from {len(args.inputs)} input(s)",
              file=sys.stderr)
    return EXIT_OK
