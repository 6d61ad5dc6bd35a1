"""`migprof import`: turn QEMU logs, simpletrace files or run directories into a recording."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from profiler.commands.options import ImportConfig
from profiler.errors import EXIT_OK, InputError

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
    return run_config(ImportConfig.from_args(args))


def run_config(cfg: ImportConfig) -> int:
    if cfg.output is None:  # only into the dataset: the recording is a temporary file
        import tempfile

        with tempfile.TemporaryDirectory(prefix="migprof-import-") as tmp:
            return _import(dataclasses.replace(cfg, output=f"{tmp}/recording.parquet"), quiet=True)
    return _import(cfg, quiet=False)


def _import(cfg: ImportConfig, quiet: bool) -> int:
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
    if not quiet:
        print(f"migprof: wrote {path}: {len(events)} events from {len(cfg.inputs)} input(s) "
              f"({loaded.malformed} malformed, {loaded.skipped} skipped lines)", file=sys.stderr)
    if cfg.dataset:
        from profiler.dataset import add_recording

        a = add_recording(cfg.dataset, path, host=cfg.host)
        print(f"migprof: added to {cfg.dataset}: host={a.host} date={a.date} recording {a.unit}: "
              f"{a.migrations} migration(s), {a.events} events from {len(cfg.inputs)} input(s)",
              file=sys.stderr)
    return EXIT_OK
