"""`migprof top`: every QEMU on this host in one screen (or one table per interval, or JSON lines)."""

from __future__ import annotations

import argparse
import re
import sys

from profiler.commands.options import quiet_qmp_logs
from profiler.errors import EXIT_OK, MigprofError, SetupError
from profiler.metrics_server import serve_top
from profiler.session import CallbackSink, Session, Signals
from profiler.sources.discover import Discovery
from profiler.targets import TargetSet
from profiler.views.top import Follows, TopBoard, TopPrinter

EPILOG = """\
examples:
  migprof top                      # every QEMU on this host, refreshed every second (TUI)
  migprof top --no-tui 5           # a table every 5 s (bcc style), until Ctrl-C
  migprof top --no-tui 1 10        # ten tables, one a second
  migprof top --json -d 60         # a JSON line a second for 60 s (schema migprof.top/1)
  migprof top -n 'web-.*' -c qemu:///system   # only the QEMUs whose name matches
  migprof top --no-qmp             # leave every monitor alone: BPF and -D logs only
  migprof top --no-tui 5 --metrics 127.0.0.1:9464   # every QEMU's figures for Prometheus
  migprof top --hold-qmp           # keep idle QEMUs' monitors too (sees a migration's start)

A row per QEMU: libvirt domains by name (-c URI, default qemu:///system when libvirt
answers), other QEMUs by -name and pid. Enter opens the selected QEMU in the full TUI
(migprof live for it); q comes back. Each row's figures are those `migprof report` gives
for that QEMU's events. exit status: 0 ok, 2 bad option or setup problem."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "top", help="Every QEMU on this host: migration status, pass, pending vs threshold",
        description="Follow every QEMU on this host (one shared BPF program set, each QEMU's "
        "QMP or libvirt, its trace log) and show a row per QEMU: migration status, phase, "
        "pass, pending vs threshold, bandwidth, expected downtime and a verdict.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("interval", nargs="?", type=float, default=1.0, help="seconds between "
                   "refreshes (default 1)")
    p.add_argument("count", nargs="?", type=int, help="number of refreshes, then stop")
    p.add_argument("-d", "--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--no-tui", action="store_true", help="a table per interval on stdout")
    p.add_argument("-j", "--json", action="store_true", help="a JSON line per interval on stdout")
    p.add_argument("-n", "--name", metavar="REGEX", help="only QEMUs whose name matches")
    p.add_argument("-c", "--connect", metavar="URI", help="libvirt URI (default "
                   "qemu:///system, when it answers)")
    p.add_argument("--no-libvirt", action="store_true", help="do not ask libvirt for names")
    p.add_argument("--no-qmp", action="store_true", help="leave every QEMU's monitor alone")
    p.add_argument("--hold-qmp", action="store_true", help="hold every QEMU's QMP socket, idle "
                   "or not (default: a brief query-migrate a poll, held only while it migrates; "
                   "a held socket makes other QMP clients wait)")
    p.add_argument("--no-trace", action="store_true", help="leave QEMUs' trace events alone")
    p.add_argument("--no-bpf", action="store_true", help="QMP and QEMU trace only")
    p.add_argument("--qmp-hz", type=float, default=1.0, help="query-migrate polls a second "
                   "per QEMU (default 1; status changes are polled at once)")
    p.add_argument("--metrics", metavar="ADDR:PORT", help="serve every QEMU's figures for "
                   "Prometheus (OpenMetrics, docs/metrics.md)")
    p.add_argument("--path", choices=["auto", "tracepoint", "kprobe"], default="auto",
                   help="BPF attach path")
    p.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)
    return p


def run(args: argparse.Namespace) -> int:
    if args.ebpf:
        from profiler.sources.bpf import bpf_source_text

        print(bpf_source_text("kprobe" if args.path == "kprobe" else "tracepoint"))
        return EXIT_OK
    if args.interval <= 0 or (args.count is not None and args.count <= 0):
        raise MigprofError("interval and count must be > 0")
    if args.duration is not None and args.duration <= 0:
        raise MigprofError("--duration must be > 0")
    quiet_qmp_logs(args.debug)
    tui = sys.stdout.isatty() and not (args.no_tui or args.json)
    notes: list[str] = []
    say = notes.append if tui else (lambda m: print(f"migprof: {m}", file=sys.stderr, flush=True))
    watch = _libvirt(args, say)
    rx = re.compile(args.name) if args.name else None
    disc = Discovery(domains=watch.domains if watch else None, uri=watch.uri if watch else None,
                     keep=(lambda q: bool(rx.search(q.label) or rx.search(str(q.pid)))) if rx else None)
    targets = TargetSet(discovery=disc, bpf=not args.no_bpf, path=args.path, trace=not args.no_trace,
                        qmp=not args.no_qmp, qmp_hz=args.qmp_hz,
                        monitors="hold" if args.hold_qmp else "brief", scan_s=min(args.interval, 1.0),
                        tail_s=max(args.interval, 2.0), bpf_poll_ms=500,
                        err=sys.stderr, notify=say, wake=watch.changed if watch else None)

    def host() -> str:
        what = f"BPF {targets.bpf.path}" if targets.bpf is not None else "no BPF"
        lv = f", libvirt {watch.uri}" if watch else ", no libvirt"
        return f"{what}{lv}" + (f"   {notes[-1]}" if notes else "")

    printer = None if tui else TopPrinter(sys.stdout, as_json=args.json)
    board = TopBoard(lambda: follows(targets), interval=args.interval, printer=printer,
                     count=args.count, host=host)
    served = serve_top(args.metrics, board)  # bound before attaching: a bad address attaches nothing
    session = Session([targets], [board, *served], duration_s=args.duration, done=board.done,
                      poll_s=min(0.25, args.interval / 4),
                      signals=Signals.NONE if tui else Signals.DETACH, err=sys.stderr)
    if not tui and not args.json:  # bcc's banner, once attached (the shared BPF set is loaded)
        session.sinks.insert(0, CallbackSink(on_start=lambda _h: print(
            f"Tracing every QEMU on this host ({host()})... Output every {args.interval:g} s. "
            "Hit Ctrl-C to end.", file=sys.stderr, flush=True)))
    try:
        if not tui:
            session.run()
            return EXIT_OK
        from tui.top import run_table

        return run_table(session, board, args.interval, args.debug)
    finally:
        if watch is not None:
            watch.close()


def follows(targets: TargetSet) -> list[Follows]:
    """What the board shows of each QEMU the set follows."""
    return [Follows(m.qemu.pid, m.qemu.label, m.qemu.side, m.alive, m.qemu.domain, m.qemu.name,
                    (("bpf",) if targets.bpf is not None else ()) + m.names)
            for m in targets.followed()]


def _libvirt(args: argparse.Namespace, say):
    """libvirt's domain names when it answers (-c: it must), else None."""
    if args.no_libvirt:
        return None
    from profiler.sources.libvirt import DomainWatch, LibvirtError

    try:
        return DomainWatch(args.connect).__enter__()
    except (LibvirtError, SetupError):
        if args.connect:
            raise
        return None  # no libvirt here: QEMUs by -name and pid (the banner says so)
