"""`migprof live`: attach to a running QEMU: BPF on its VFIO fds, its trace log and QMP, live."""

from __future__ import annotations

import argparse
import sys

from profiler.commands.options import (
    LiveConfig,
    add_dataset_options,
    add_target_options,
    not_a_terminal,
    quiet_qmp_logs,
)
from profiler.errors import EXIT_OK, MigprofError

EPILOG = """\
examples:
  migprof live -p 4242                 # QEMU pid 4242: BPF + its QMP socket + its trace log
  migprof live --qmp /run/qemu/src.qmp # find the pid behind a QMP socket, then the same
  migprof live -p 4242 --no-tui -d 60  # bcc-style line view for 60 s, then the summary
  migprof live -p 4242 --record mig.parquet   # also record every event (replay later)
  migprof live -p 4242 --metrics 127.0.0.1:9464   # live metrics for Prometheus (docs/metrics.md)
  migprof live -p 4242 --no-bpf        # QMP and QEMU trace only (no root, no bcc)
  migprof live --domain vm1 -c qemu:///system   # a libvirt domain (QMP through libvirt)
  migprof live -p 4242 -p 4343 --no-tui   # two QEMUs at once (one BPF set), lines by PID
(4242, /run/qemu/src.qmp, vm1 and qemu:///system stand for your QEMU's pid, its QMP socket,
a libvirt domain and its URI; --path kprobe puts kprobes on the VFIO handlers of hosts
whose kernel has them.)

Over QMP, migprof enables QEMU's migration and VFIO trace events (trace-event-set-state)
and, when QEMU logs to stderr, points its log at a file it tails (HMP logfile); both are
put back at exit. A QMP socket another client holds is said once; BPF and the trace log
go on and QMP is picked up if it frees. Ctrl-C or SIGTERM ends the run and prints the
summary.
exit status: 0 ok, 2 bad target or setup problem."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "live", help="Profile a running QEMU live (BPF on VFIO fds, QEMU trace, QMP)",
        description="Attach to a running QEMU: BPF on its VFIO ioctls and migration data fds, "
        "its migration/VFIO trace events and QMP, merged on one clock and fed to the model.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_options(p)
    p.add_argument("--record", metavar="FILE", help="record every event to FILE")
    add_dataset_options(p)
    p.add_argument("--no-tui", action="store_true", help="line view on stdout, no TUI")
    p.add_argument("--any-process", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)
    return p


def run(args: argparse.Namespace) -> int:
    return run_config(LiveConfig.from_args(args))


def run_config(cfg: LiveConfig) -> int:
    """`live` and `record`: attach, follow until the end, then the summary."""
    from profiler import attach
    from profiler.commands.recorded import libvirt_end, open_writer
    from profiler.metrics_server import serve_report
    from profiler.session import RecordingSink, Session
    from profiler.sources.target import resolve_targets, vm_name

    if cfg.ebpf:
        from profiler.sources.bpf import bpf_source_text

        print(bpf_source_text("kprobe" if cfg.path == "kprobe" else "tracepoint"))
        return EXIT_OK
    if cfg.duration_s is not None and cfg.duration_s <= 0:
        raise MigprofError("--duration must be > 0")
    quiet_qmp_logs(cfg.debug)
    if cfg.dataset is not None:
        cfg.dataset.check()
    targets = resolve_targets(cfg.pids, cfg.qmps, cfg.domains, side=cfg.side,
                              any_process=cfg.any_process, uri=cfg.connect, trace_log=cfg.trace_log)
    if len(targets) > 1:
        if cfg.metrics:
            raise MigprofError("--metrics serves one QEMU's figures: give one QEMU, or "
                               "`migprof top --metrics ADDR:PORT` for every QEMU on the host")
        from profiler.commands.live_many import run_many

        return run_many(cfg, targets)
    target = targets[0]
    tui = _tui() if cfg.tui and not_a_terminal() is None else None
    # bound before attaching: a bad address attaches nothing
    served = serve_report(cfg.metrics, vm_name(target), target.pid, target.side) if cfg.metrics else []
    try:
        sources, info = attach.live_sources(target, trace=cfg.trace, trace_log=cfg.trace_log,
                                            bpf=cfg.bpf, path=cfg.path, err=sys.stderr)
    except BaseException:
        for s in served:
            s.close(None)
        raise
    if not sources:
        for s in served:
            s.close(None)
        raise MigprofError(f"nothing to trace on pid {target.pid}: no QMP socket and BPF unavailable")
    writer = open_writer(cfg.record, {"sources": [s.name for s in sources], "live": info})
    sinks = [] if writer is None else [RecordingSink(
        writer, meta_at_start=attach.meta_at_start, meta_at_close=attach.meta_at_close)]
    session = Session(sources, [*sinks, *served], duration_s=cfg.duration_s, pid=target.pid)
    try:
        if tui is not None:
            rc = tui(session, title=f"migprof live: pid {target.pid} ({target.side})", debug=cfg.debug)
        else:
            from profiler.views.lines import EventLines, Summary

            # after the recording: a batch whose line meets a closed pipe is recorded all the same
            session.sinks[len(sinks):len(sinks)] = [EventLines(sys.stdout, cfg.interval_s,
                                            banner=lambda h: attach.banner(target, h)), Summary()]
            session.run()
            rc = EXIT_OK
    finally:
        if writer is not None:
            writer.close()  # already closed by its sink unless attaching failed
        for s in served:
            s.close(None)  # stopped with the session, unless it never started
    rc = libvirt_end(sources, rc)
    if writer is not None:
        from profiler.commands.recorded import finish

        # the run went on, but a short recording is an error; a whole one may go to --dataset
        rc = finish(writer, cfg.dataset, rc)
    return rc


def _tui():
    """The TUI entry point, or None (then the line view) when the TUI is not installed."""
    try:
        from tui.app import run_live
    except ImportError as e:
        print(f"migprof: no TUI ({e}); line view", file=sys.stderr)
        return None
    return run_live


