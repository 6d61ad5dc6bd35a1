"""`migprof record`: record a running QEMU's migration events to a file, without the TUI."""

from __future__ import annotations

import argparse

from profiler.commands.options import LiveConfig, add_dataset_options, add_target_options

EPILOG = """\
examples:
  migprof record -p 4242 -o mig.parquet        # until Ctrl-C or QEMU exits
  migprof record --qmp /run/qemu/src.qmp -o mig.parquet -d 120
  migprof record -p 4242 -o mig.parquet --dataset fleet/   # then also into a fleet dataset
  migprof report mig.parquet                   # later: the report of what was recorded
  migprof replay mig.parquet                   # later: the TUI, replayed
(4242 and /run/qemu/src.qmp stand for your QEMU's pid and its QMP socket.)

Same sources as `migprof live` (BPF on VFIO fds, QEMU trace events, QMP); the line view
goes to stdout. The recording is a crash-safe stream while running, Parquet at the end.
exit status: 0 ok, 2 bad target or setup problem."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("record", help="Record a live migration without the TUI",
                       description="Record every event of a running QEMU (BPF, QEMU trace, QMP) "
                       "to a file, as `migprof live --no-tui --record FILE` does.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_options(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the recording to write")
    add_dataset_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    from profiler.commands.live import run_config

    return run_config(LiveConfig.from_args(args, record=args.output, tui=False))
