"""`migprof whatif`: predict a recorded migration under other settings."""

from __future__ import annotations

import argparse
import json
import sys

from profiler.errors import EXIT_OK, EXIT_USAGE, InputError, MigprofError

MiB = 1 << 20
EPILOG = """\
examples:
  migprof whatif run/                            # as recorded, and at the verdict's suggestions
  migprof whatif run/ --downtime-limit 600       # one setting (the others as recorded)
  migprof whatif src.log dst.log --max-bandwidth 512 --downtime-limit 50
  migprof whatif run/ --sweep downtime-limit=20..2000      # the smallest that converges
  migprof whatif run/ --sweep max-bandwidth=32..1024 --json | jq .sweep.smallest_converging

Units: downtime-limit in ms, bandwidths in MiB/s. The replay follows QEMU's switch-over rule
of the recording's version; docs/whatif.md says how, and how right it was when rerun.
exit status: 0 ok, 2 unusable input or a recording that cannot be replayed."""


def _sweep_arg(text: str) -> tuple[str, float, float]:
    from profiler.model.whatif import PARAMS

    try:
        param, span = text.split("=", 1)
        lo, hi = (float(v) for v in span.split("..", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PARAM=LO..HI, e.g. downtime-limit=20..2000") from None
    if param not in PARAMS:
        raise argparse.ArgumentTypeError(f"{param!r}: PARAM is one of {', '.join(PARAMS)}")
    if not 0 <= lo < hi:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= LO < HI")
    return param, lo, hi


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "whatif", help="Predict a recorded migration under other settings",
        description="Replay one recorded migration's dirtying, device sizes and bandwidth through "
        "QEMU's switch-over rule under other settings: converges or not, dirty syncs, total time, "
        "downtime, per-device stop-copy bytes and downtime.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="recording, run directory or trace logs")
    p.add_argument("--downtime-limit", type=float, metavar="MS", help="downtime-limit, ms")
    p.add_argument("--max-bandwidth", type=float, metavar="MIBPS", help="max-bandwidth, MiB/s (0 = unlimited)")
    p.add_argument("--avail-switchover-bandwidth", type=float, metavar="MIBPS",
                   help="avail-switchover-bandwidth, MiB/s (QEMU >= 8.2; 0 = unset)")
    p.add_argument("--sweep", type=_sweep_arg, metavar="PARAM=LO..HI",
                   help="predict across a range of one parameter (downtime-limit, max-bandwidth, "
                   "avail-switchover-bandwidth) and find the smallest that converges")
    p.add_argument("--migration", type=int, metavar="N",
                   help="which migration of the input (1-based; default: the longest pre-copy)")
    p.add_argument("--side", action="append", choices=["source", "destination"], default=None,
                   help="side of each INPUT, in order (as for `migprof report`)")
    p.add_argument("-j", "--json", action="store_true", help="print one migprof.whatif/1 JSON object")
    return p


def _setting(args: argparse.Namespace, recorded):
    s = recorded
    for name, v, scale in (("downtime-limit", args.downtime_limit, 1.0),
                           ("max-bandwidth", args.max_bandwidth, MiB),
                           ("avail-switchover-bandwidth", args.avail_switchover_bandwidth, MiB)):
        if v is not None:
            if v < 0:
                raise MigprofError(f"--{name} {v:g}: must be >= 0")
            s = s.with_param(name, v * scale)
    return s


def run(args: argparse.Namespace) -> int:
    from profiler import pipeline
    from profiler.model import build_report
    from profiler.model import whatif as W

    try:
        loaded = pipeline.load(list(args.inputs), sides=args.side)
    except InputError as e:
        print(f"migprof: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    for w in loaded.warnings:
        print(w, file=sys.stderr)
    report = build_report(loaded.events, inputs=tuple(str(i.get("path")) for i in loaded.inputs),
                          malformed=loaded.malformed, skipped=loaded.skipped, meta=loaded.meta)
    where = ", ".join(args.inputs)
    try:
        if args.migration is not None:
            if not 1 <= args.migration <= len(report.migrations):
                raise MigprofError(f"{where}: --migration {args.migration}: the input holds "
                                   f"{len(report.migrations)} migration(s)")
            mig = report.migrations[args.migration - 1]
        else:
            mig = W.pick(report.migrations)
        x = W.measure(mig, loaded.events)
    except W.Unpredictable as e:
        raise MigprofError(f"{where}: {e}") from None
    asked = [args.downtime_limit, args.max_bandwidth, args.avail_switchover_bandwidth]
    wants_asb = args.avail_switchover_bandwidth or (args.sweep and args.sweep[0] == "avail-switchover-bandwidth")
    if wants_asb and not x.rule.switchover_bw:
        raise MigprofError(f"{where}: the recording's QEMU ({x.qemu_version}) has no "
                               "avail-switchover-bandwidth (it came in 8.2)")
    base = _setting(args, x.recorded)
    settings = [base] if any(v is not None for v in asked) else W.default_settings(x)
    preds = [W.predict_range(x, s) for s in settings]
    sw = None
    if args.sweep:
        param, lo, hi = args.sweep
        scale = 1.0 if param == "downtime-limit" else MiB
        sw = W.sweep(x, base, param, W.grid(lo * scale, hi * scale, unit=scale))
    from profiler.views import whatif as view

    if args.json:
        json.dump(W.to_json(x, preds, sw, inputs=[str(p) for p in args.inputs]), sys.stdout,
                  indent=1 if sys.stdout.isatty() else None)
        sys.stdout.write("\n")
        return EXIT_OK
    from profiler.views.console import output_console

    view.render(output_console(sys.stdout), x, preds, sw)
    return EXIT_OK
