"""`migprof lab`: run a real migration between two local QEMUs and keep a run directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from profiler.commands.options import (
    LabRunConfig,
    add_lab_args,
    attach_hint,
    check_lab_settings,
    check_output,
    quiet_qmp_logs,
)

EXAMPLES = """examples:
  migprof lab                                   # 'converges' on QEMU 7.2, netns + veth
  migprof lab --scenario never-converges        # cancelled after its timeout
  migprof lab --scenario downtime-raise --qemu 10.0 --out run1
  migprof lab --scenario bandwidth-change --rate-mbit 40
  migprof lab --scenario converges --net loopback --dirty-mb 16 --rate-mbps 20
  migprof lab --record run.parquet              # also write every event to a recording
  migprof lab --record run.parquet --dataset fleet/   # and add it to a fleet dataset
  migprof lab --list                            # the scenarios and what they do
  migprof lab --libvirt -s never-converges      # the same under two libvirt daemons
  migprof lab --libvirt --record run.parquet    # ... and every event in a recording
  migprof report run1                           # the report of a finished run
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "lab",
        help="Run a real migration between two local QEMUs",
        description="Run one real live migration between two QEMUs on this host (source and "
        "destination, each in its own network namespace joined by a tc-shaped veth), driven "
        "over QMP, with trace events logged, and leave a run directory for `migprof report`.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_lab_args(p)
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("-j", "--json", action="store_true", help="print the run summary as JSON")
    p.add_argument("--libvirt", action="store_true",
                   help="run it under libvirt: two daemons, one per namespace, virsh migrate "
                   "--live --p2p, both sides followed as `live --domain` (docs/libvirt.md)")
    from profiler.lab.vfio import add_vfio_arguments  # nested VFIO lab (docs/vfio-lab.md)

    add_vfio_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    if getattr(args, "vfio", None):
        from profiler.lab.vfio import run_vfio_lab

        check_lab_settings(args)  # the rest of the flags: run_vfio_lab
        check_output(args.out, "the run directories", directory=True)
        return run_vfio_lab(args)
    from profiler.lab import scenarios

    if args.list:
        for name, sc in scenarios.SCENARIOS.items():
            print(f"{name:18} {sc.description}")
        return 0
    return run_config(LabRunConfig.from_args(args))


def run_config(cfg: LabRunConfig) -> int:
    from profiler.lab.run import Lab, run_scenario

    quiet_qmp_logs(cfg.debug)
    out = cfg.lab.out
    if cfg.dataset is not None:
        cfg.dataset.check()
    if cfg.libvirt:
        from profiler.lab.libvirt import LibvirtLab, follow_hint, print_summary, run_libvirt_lab

        print(f"migprof lab: scenario {cfg.lab.scenario.name} under libvirt, run directory {out}",
              file=sys.stderr)
        if not cfg.record:
            return print_summary(run_libvirt_lab(cfg.lab), cfg.json)
        res, rc = _run_recorded(LibvirtLab, cfg.lab, cfg.record, cfg.dataset, hint=follow_hint)
        return print_summary(res, cfg.json) or rc
    print(f"migprof lab: scenario {cfg.lab.scenario.name}, run directory {out}", file=sys.stderr)
    print(attach_hint(out), file=sys.stderr)
    rc = 0
    if cfg.record:
        res, rc = _run_recorded(Lab, cfg.lab, cfg.record, cfg.dataset)
    else:
        res = run_scenario(cfg.lab)
    summary = {
        "run_dir": str(res.run_dir),
        "status": res.status,
        "attempts": [a["status"] for a in res.attempts],
    }
    src = res.final.get("source") or {}
    for k in ("total-time", "downtime", "setup-time"):
        if k in src:
            summary[k.replace("-", "_") + "_ms"] = src[k]
    ram = src.get("ram") or {}
    summary["dirty_syncs"] = ram.get("dirty-sync-count")
    summary["transferred_bytes"] = ram.get("transferred")
    summary["sockdiag_vs_qemu"] = _throughput_ratio(res.run_dir)
    if cfg.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return rc


def _run_recorded(make_lab, lab_cfg, path: str, dataset=None, hint=None):
    """The run of ``make_lab(lab_cfg)`` (a Lab or a LibvirtLab), with every event also
    written to the recording ``path`` as it happens (the trace logs tailed like `migprof
    demo` does); ``hint(lab)``: a line for stderr once the lab is up. Then the recording's
    exit status (``recorded.finish``: a short recording is an error, a whole one goes to
    ``dataset``)."""
    from profiler.commands.recorded import finish
    from profiler.lab.follow import finish_recording, follow_run, open_recording, recording_meta
    from profiler.lab.run import run_guarded
    from profiler.session import RecordingSink

    writer = None
    try:
        with run_guarded(), make_lab(lab_cfg) as lab:
            if hint is not None:
                print(hint(lab), file=sys.stderr)
            writer = open_recording(path, recording_meta(lab, "lab"))
            res = follow_run(lab, [RecordingSink(writer, close_writer=False)])
    finally:
        if writer is not None:
            finish_recording(writer, lab_cfg.out)  # run.json: also an interrupted run's
            final = writer.close()
            print(f"migprof lab: recording {final} ({writer.rows_written} events)", file=sys.stderr)
    return res, finish(writer, dataset)


def _throughput_ratio(run_dir: Path) -> float | None:
    """sock_diag throughput over QEMU's over the same window (None for short runs)."""
    from profiler.lab.verify import throughput_check
    from profiler.sources.jsonl import read_events_jsonl

    chk = throughput_check(read_events_jsonl(run_dir / "events.jsonl"))
    return round(chk.ratio, 3) if chk is not None else None
