"""`live` and `record` on several QEMUs at once: one shared BPF set, each QEMU's own QMP (or
libvirt) and trace log, kept apart by pid in the lines, the summary and the recording."""

from __future__ import annotations

import sys

from profiler.commands.options import LiveConfig
from profiler.errors import EXIT_OK
from profiler.session import RecordingSink, Session
from profiler.sources.discover import Qemu
from profiler.sources.target import Target
from profiler.targets import TargetSet


def run_many(cfg: LiveConfig, given: list[Target]) -> int:
    """Follow every QEMU of ``given`` until the last has exited (or a stop), then a summary
    per QEMU; with a terminal, top's table of them (Enter: one in the full TUI)."""
    from profiler import attach
    from profiler.commands.recorded import libvirt_end, open_writer

    qemus = [Qemu.of(t) for t in given]
    targets = TargetSet(qemus, bpf=cfg.bpf, path=cfg.path, trace=cfg.trace, err=sys.stderr)
    names = {q.pid: f"{q.label}, {q.side}" for q in qemus}
    writer = open_writer(cfg.record, {"sources": ["targets"], "live": [
        {"pid": t.pid, "side": t.side, "qmp": t.qmp, "domain": t.domain, "uri": t.uri,
         "trace_log": t.log_file} for t in given]})
    sinks = [] if writer is None else [RecordingSink(
        writer, meta_at_start=lambda h: attach.meta_at_start(h.get("targets") or {}),
        meta_at_close=attach.meta_at_close)]
    session = Session([targets], sinks, duration_s=cfg.duration_s)
    try:
        if cfg.tui and sys.stdout.isatty():
            from profiler.commands.top import follows
            from profiler.views.top import TopBoard
            from tui.top import run_table

            board = TopBoard(lambda: follows(targets), interval=cfg.interval_s)
            session.add_sink(board)
            rc = run_table(session, board, cfg.interval_s, cfg.debug)
        else:
            from profiler.views.lines import EventLines, Summary

            # after the recording: a batch whose line meets a closed pipe is recorded all the same
            session.sinks[len(sinks):len(sinks)] = [EventLines(sys.stdout, cfg.interval_s, pids=True,
                                            banner=lambda h: _banner(qemus, h)),
                                 Summary(qemus=lambda: names)]
            session.run()
            rc = EXIT_OK
    finally:
        if writer is not None:
            writer.close()  # already closed by its sink unless attaching failed
    rc = libvirt_end([s for m in targets.followed() for s in m.sources], rc)
    if writer is not None:
        from profiler.commands.recorded import finish

        # a short recording is an error; a whole one may go to --dataset (one unit, all QEMUs)
        rc = finish(writer, cfg.dataset, rc)
    return rc


def _banner(qemus: list[Qemu], health: dict) -> str:
    bpf = (health.get("targets") or {}).get("bpf") or {}
    what = f"BPF {bpf.get('path')} ({bpf.get('buffer')} buffer) for all" if bpf else "no BPF"
    who = ", ".join(f"pid {q.pid} ({q.label}, {q.side})" for q in qemus)
    return f"Tracing {len(qemus)} QEMUs: {who}; {what}... Hit Ctrl-C to end."
