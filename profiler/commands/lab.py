"""`migprof lab`: run a real migration between two local QEMUs and keep a run directory."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from profiler.errors import MigprofError

EXAMPLES = """examples:
  migprof lab                                   # 'converges' on QEMU 7.2, netns + veth
  migprof lab --scenario never-converges        # cancelled after its timeout
  migprof lab --scenario downtime-raise --qemu 10.0 --out /tmp/run1
  migprof lab --scenario bandwidth-change --rate-mbit 40
  migprof lab --scenario converges --net loopback --dirty-mb 16 --rate-mbps 20
  migprof lab --record run.parquet              # also write every event to a recording
  migprof lab --list                            # the scenarios and what they do
  migprof lab --libvirt -s never-converges      # the same under two libvirt daemons
  migprof report /tmp/run1                      # the report of a finished run
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


def add_lab_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by `lab` and `demo`."""
    from profiler.lab.scenarios import SCENARIOS

    p.add_argument(
        "-s",
        "--scenario",
        default="converges",
        choices=sorted(SCENARIOS),
        help="named preset (default: converges)",
    )
    p.add_argument(
        "-o", "--out", type=Path, help="run directory (default: ./migprof-lab-<scenario>-<time>)"
    )
    p.add_argument(
        "--qemu",
        help="QEMU version (7.2, 10.0) or path to qemu-system-x86_64 (default: Debian's 7.2)",
    )
    p.add_argument(
        "--accel",
        choices=("auto", "kvm", "tcg"),
        default="auto",
        help="auto: KVM only if a probe guest boots under it (default)",
    )
    p.add_argument(
        "--net",
        choices=("netns", "loopback"),
        default="netns",
        help="two namespaces and a shaped veth (default), or plain loopback",
    )
    p.add_argument("--port", type=int, default=0, help="migration TCP port (default 4444 / free)")
    p.add_argument("--dirty-mb", type=int, help="guest working set in MiB")
    p.add_argument("--rate-mbps", type=int, help="guest dirty rate in MiB/s (0 = flat out)")
    p.add_argument("--mem-mb", type=int, help="guest RAM in MiB")
    p.add_argument("--max-bandwidth", type=float, metavar="MIBPS", help="QMP max-bandwidth, MiB/s")
    p.add_argument("--downtime-limit", type=int, metavar="MS", help="QMP downtime-limit, ms")
    p.add_argument(
        "--avail-switchover-bandwidth",
        type=float,
        metavar="MIBPS",
        help="QMP avail-switchover-bandwidth, MiB/s (QEMU >= 8.2)",
    )
    p.add_argument(
        "--timeout", type=float, metavar="S", help="cancel the migration after S seconds"
    )
    p.add_argument("--rate-mbit", type=float, help="tc rate of the veth, Mbit/s")
    p.add_argument("--delay-ms", type=float, help="tc netem delay of the veth, ms")
    p.add_argument("--loss", type=float, metavar="PCT", help="tc netem loss of the veth, percent")
    p.add_argument("--poll-hz", type=float, default=10.0, help="query-migrate rate (default 10)")
    p.add_argument("--no-timestamps", action="store_true", help="log without -msg timestamp=on")
    p.add_argument(
        "--record",
        metavar="FILE",
        help="also write every event of the run (QMP, sock_diag, lab marks, both trace "
        "logs) to a recording (Parquet; see docs/recordings.md)",
    )
    p.add_argument(
        "--transferred-bytes",
        action="store_true",
        help="also enable the migration_transferred_bytes trace flood",
    )


def config_from_args(args: argparse.Namespace):
    """LabConfig from the shared flags."""
    from profiler.lab import scenarios
    from profiler.lab.run import LabConfig

    sc = scenarios.get(args.scenario)
    params = {}
    if args.max_bandwidth is not None:
        params["max-bandwidth"] = int(args.max_bandwidth * scenarios.MiB)
    if args.downtime_limit is not None:
        params["downtime-limit"] = args.downtime_limit
    if args.avail_switchover_bandwidth is not None:
        params["avail-switchover-bandwidth"] = int(args.avail_switchover_bandwidth * scenarios.MiB)
    shaping = dict(sc.shaping or {})
    for k, v in (
        ("rate_mbit", args.rate_mbit),
        ("delay_ms", args.delay_ms),
        ("loss_pct", args.loss),
    ):
        if v is not None:
            shaping[k] = v
    sc = sc.with_overrides(
        dirty_mb=args.dirty_mb,
        rate_mbps=args.rate_mbps,
        mem_mb=args.mem_mb,
        params=params,
        timeout_s=args.timeout,
        shaping=shaping or None,
        timestamps=False if args.no_timestamps else None,
        transferred_bytes=True if args.transferred_bytes else None,
    )
    out = args.out or Path(f"migprof-lab-{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return LabConfig(
        scenario=sc,
        out=out,
        qemu=args.qemu,
        accel=args.accel,
        net=args.net,
        poll_hz=args.poll_hz,
        port=args.port,
    )


def _throughput_ratio(run_dir: Path) -> float | None:
    """sock_diag throughput over QEMU's over the same window (None for short runs)."""
    from profiler.lab.verify import throughput_check
    from profiler.sources.qmp import read_events_jsonl

    chk = throughput_check(read_events_jsonl(run_dir / "events.jsonl"))
    return round(chk.ratio, 3) if chk is not None else None


def attach_hint(run_dir: Path) -> str:
    """How to attach another migprof to the lab's QEMUs while the run lasts."""
    return (
        f"migprof lab: while it runs, attach with: migprof live --qmp "
        f"{run_dir}/qmp-source-attach.sock (or qmp-destination-attach.sock)"
    )


def quiet_qmp_logs(args: argparse.Namespace) -> None:
    """qemu.qmp warns when a peer drops the connection; in the lab that is expected
    (a cancelled destination exits, a killed one vanishes), so keep it to --debug."""
    import logging

    if not getattr(args, "debug", False):
        logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


def _run_recorded(cfg, path: str):
    """The run, with every event also written to the recording ``path`` as it happens
    (the trace logs tailed like `migprof demo` does)."""
    from profiler.commands.demo import open_recording
    from profiler.lab.follow import finish_recording, follow_run, recording_meta
    from profiler.lab.run import Lab, run_guarded

    writer = None
    try:
        with run_guarded(), Lab(cfg) as lab:
            writer = open_recording(path, recording_meta(lab, "lab"))
            result = follow_run(lab, writer.write)
            if "error" in result:
                raise result["error"]
    finally:
        if writer is not None:
            finish_recording(writer, cfg.out)  # run.json: also an interrupted run's
            final = writer.close()
            print(f"migprof lab: recording {final} ({writer.rows_written} events)", file=sys.stderr)
    return result["run"]


def run(args: argparse.Namespace) -> int:
    if getattr(args, "vfio", None):
        from profiler.lab.vfio import run_vfio_lab

        return run_vfio_lab(args)
    from profiler.lab import scenarios

    if args.list:
        for name, sc in scenarios.SCENARIOS.items():
            print(f"{name:18} {sc.description}")
        return 0
    from profiler.lab.run import run_scenario

    quiet_qmp_logs(args)
    cfg = config_from_args(args)
    if getattr(args, "libvirt", False):
        from profiler.lab.libvirt import print_summary, run_libvirt_lab

        if args.record:
            raise MigprofError("--record is not available with --libvirt yet; record a side "
                               "with: migprof record --domain NAME -c URI -o FILE")

        print(f"migprof lab: scenario {cfg.scenario.name} under libvirt, run directory {cfg.out}",
              file=sys.stderr)
        return print_summary(run_libvirt_lab(cfg), args.json)
    print(f"migprof lab: scenario {cfg.scenario.name}, run directory {cfg.out}", file=sys.stderr)
    print(attach_hint(cfg.out), file=sys.stderr)
    res = run_scenario(cfg) if not args.record else _run_recorded(cfg, args.record)
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
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0
