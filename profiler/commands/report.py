"""`migprof report`: analyse QEMU trace logs (and QMP captures, recordings) offline."""

from __future__ import annotations

import argparse
import gc
import sys

from profiler.errors import EXIT_OK, EXIT_USAGE, InputError, MigprofError

EPILOG = """\
examples:
  migprof report src.log                      # every migration in a source-side trace log
  migprof report src.log dst.log              # source and destination merged on one timeline
  migprof report --side source --side destination a.log b.log   # say which side each file is
  migprof report --all-checks src.log         # do not trim the pre-copy check table
  migprof report tests/data/real-vfio/converges   # a lab run: traces, QMP, BPF (bpf.jsonl), command lines
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
    p.add_argument("-j", "--json", action="store_true", help="print one migprof.report/1 JSON object")
    p.add_argument("--side", action="append", choices=["source", "destination"], default=None,
                   help="side of each INPUT, in order (give it once per input; default: judged "
                   "from the events each file holds)")
    p.add_argument("--all-checks", action="store_true", help="show every check, not a trimmed table")
    p.set_defaults(exit_at_once=True)  # nothing to clean up: skip the interpreter's teardown
    return p


def run(args: argparse.Namespace) -> int:
    if args.side and len(args.side) != len(args.inputs):
        raise MigprofError(f"--side given {len(args.side)} times for {len(args.inputs)} inputs; "
                           "give it once per INPUT, in order")
    from profiler import pipeline
    from profiler.deferred import import_behind
    from profiler.model.names import kept
    from profiler.views.progress import read_progress

    # while the parse runs (numpy and pyarrow let go of the GIL)
    import_behind("pandas", "profiler.model.build")

    # the cyclic GC would scan every object the imports made, many times over, and the
    # model's tens of thousands of results make no cycles: leave them all alone
    gc.freeze()
    was = gc.isenabled()
    gc.disable()
    try:
        try:
            with read_progress(list(args.inputs)) as progress:
                # only the events the model reads become rows: memory follows the migrations
                loaded = pipeline.load(list(args.inputs), sides=args.side, keep=kept(), progress=progress)
        except InputError as e:  # nothing usable at all
            print(f"migprof: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        pipeline.release_freed_memory()  # the parse's freed chunks, before the model allocates
        from profiler.model import build_report

        bad = pipeline.unusable(list(args.inputs), loaded)
        events = loaded.events
        paths = [str(i.get("path")) for i in loaded.inputs]
        report = build_report(events, inputs=tuple(paths), malformed=loaded.malformed,
                              skipped=loaded.skipped, warnings=tuple(loaded.warnings), meta=loaded.meta,
                              n_events=loaded.rows)
        for w in report.warnings:
            print(w, file=sys.stderr)  # already `file:line: message`
        _print(report, args)
        if "libvirt_jobinfo" in loaded.meta and not args.json:  # a `lab --libvirt` run
            from profiler.views.libvirt import beside

            print(beside(report, events, loaded.meta["libvirt_jobinfo"]))
    finally:
        gc.unfreeze()
        if was:
            gc.enable()
    return EXIT_USAGE if bad or not report.migrations else EXIT_OK


def _print(report, args: argparse.Namespace) -> None:
    if args.json:
        from profiler.model.results import dumpb, dumps  # (views.report would import rich)

        if sys.stdout.isatty():  # indented for a person
            sys.stdout.write(dumps(report, indent=1) + "\n")
        elif (raw := getattr(sys.stdout, "buffer", None)) is not None:  # compact bytes for a pipe
            sys.stdout.flush()
            raw.write(dumpb(report) + b"\n")
        else:  # a text stream (a caller's StringIO)
            sys.stdout.write(dumps(report) + "\n")
        return
    from profiler.views import report as view
    from profiler.views.console import output_console

    view.render(report, output_console(sys.stdout), all_checks=args.all_checks)
