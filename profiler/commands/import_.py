"""`migprof import`: turn QEMU logs, simpletrace files or run directories into a recording."""

from __future__ import annotations

import argparse
import sys

from profiler.commands.options import ImportConfig
from profiler.errors import EXIT_OK, InputError

EXAMPLES = """examples:
    migprof import src.log dst.log -o run.parquet        # both sides of one migration
    migprof import trace-12345 -o run.parquet            # a simpletrace file
    migprof import /var/cache/migprof/runs/r1 -o r1.parquet   # a lab run directory
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("import", help="Turn QEMU logs or simpletrace files into a recording",
                       description="Read QEMU trace logs, simpletrace files, QMP streams or lab "
                       "run directories and write them as one migprof recording (Parquet).",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="recording to write")
    p.add_argument("--qemu-version", metavar="VER", help="note the QEMU version in the metadata")
    return p


def run(args: argparse.Namespace) -> int:
    return run_config(ImportConfig.from_args(args))


def run_config(cfg: ImportConfig) -> int:
    from profiler import store
    from profiler.pipeline import load

    loaded = load(list(cfg.inputs))
    events = loaded.events
    for w in loaded.warnings:
        print(f"migprof: warning: {w}", file=sys.stderr)
    if not len(events):
        raise InputError(", ".join(cfg.inputs), "no events to import")
    meta = dict(loaded.meta or {})
    meta.setdefault("imported_from", [str(x) for x in cfg.inputs])
    meta.setdefault("sources", sorted({str(o) for o in events["origin"].dropna().unique()}))
    meta["malformed_lines"] = int(loaded.malformed)
    meta["skipped_lines"] = int(loaded.skipped)
    qv = cfg.qemu_version or store.qemu_version_of(meta)
    if qv:
        meta["qemu_version"] = qv
    try:
        path = store.write_recording(cfg.output, events, meta)
    except OSError as e:
        raise InputError(cfg.output, f"cannot write the recording: {e}") from None
    print(f"migprof: wrote {path}: {len(events)} events from {len(cfg.inputs)} input(s) "
          f"({loaded.malformed} malformed, {loaded.skipped} skipped lines)", file=sys.stderr)
    return EXIT_OK
