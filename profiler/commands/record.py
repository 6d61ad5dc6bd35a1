"""`migprof record`: record a live migration to a file, without the TUI."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

from profiler.errors import EXIT_OK, EXIT_USAGE, MigprofError

EXAMPLES = """examples:
    migprof record --qmp /run/src.qmp -o run.parquet            # QMP events and query-migrate
    migprof record --qmp source=/run/s.qmp --qmp destination=/run/d.qmp -o run.parquet
    migprof record -p 4242 --trace-log /tmp/src.log -o run.parquet   # BPF + trace tail
    migprof record --trace-log destination=/tmp/dst.log -d 30 -o dst.parquet
  While recording, FILE.partial is a crash-safe Arrow stream (readable after a kill);
  Ctrl-C or SIGTERM stops, flushes and finalises FILE (Parquet).
"""


def _sided(text: str, default: str) -> tuple[str, str]:
    """'[SIDE=]VALUE' -> (side, value); SIDE is source/destination (src/dst)."""
    side, sep, value = text.partition("=")
    if not sep:
        return default, text
    alias = {"src": "source", "source": "source", "dst": "destination", "dest": "destination",
             "destination": "destination"}
    if side not in alias:
        raise MigprofError(f"record: {text!r}: side must be source or destination")
    return alias[side], value


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("record", help="Record a live migration without the TUI",
                       description="Record the events of a live migration (QMP, QEMU trace log, "
                       "BPF on the QEMU processes) into a migprof recording.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="recording to write")
    p.add_argument("--qmp", action="append", default=[], metavar="[SIDE=]SOCKET",
                   help="QMP UNIX socket of a QEMU (repeatable)")
    p.add_argument("-p", "--pid", action="append", default=[], metavar="[SIDE=]PID",
                   help="trace this QEMU process with BPF (VFIO ioctls, data_fd reads)")
    p.add_argument("--trace-log", action="append", default=[], metavar="[SIDE=]FILE",
                   help="tail this QEMU trace log (-trace ...,file=FILE)")
    p.add_argument("--side", choices=("source", "destination"), default="source",
                   help="side of inputs given without SIDE= (default source)")
    p.add_argument("-d", "--duration", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("-i", "--interval", type=float, default=1.0, metavar="SECONDS",
                   help="status line every SECONDS (0: none)")
    p.add_argument("--flush-interval", type=float, default=0.5, metavar="SECONDS",
                   help="flush the stream at least this often (default 0.5 s)")
    p.add_argument("--no-finalise", action="store_true",
                   help="leave the Arrow stream (FILE.partial) instead of writing Parquet")
    return p


def build_sources(args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    """The live sources the flags ask for, each imported only when asked for."""
    sources: list[Any] = []
    names: list[str] = []
    if args.qmp:
        from profiler.sources.qmp import QmpSource

        addrs = dict(_sided(q, args.side) for q in args.qmp)
        sources.append(QmpSource(addrs))
        names += [f"qmp:{s}" for s in addrs]
    for t in args.trace_log:
        from profiler.sources.qemu_log import QemuLogSource

        side, path = _sided(t, args.side)
        sources.append(QemuLogSource(path, side=side, follow=True))
        names.append(f"qemu-log:{side}")
    if args.pid:
        from profiler.sources.bpf import BpfSource

        pairs = [_sided(x, args.side) for x in args.pid]
        try:
            pids = {int(v): s for s, v in pairs}
        except ValueError:
            raise MigprofError(f"record: --pid takes a process id, got {args.pid}") from None
        sources.append(BpfSource(list(pids), sides=pids))
        names.append("bpf")
    if not sources:
        raise MigprofError("record: nothing to record; give --qmp, --pid or --trace-log")
    return sources, names


def _meta_from(sources: list[Any]) -> dict[str, Any]:
    """What the sources learnt that belongs in the recording's metadata."""
    meta: dict[str, Any] = {}
    for s in sources:
        if s.name == "qmp" and getattr(s, "sides", None):
            vs = {side: getattr(x, "version", "") for side, x in s.sides.items()}
            vs = {k: v for k, v in vs.items() if v}
            if vs:
                meta["qemu_version"] = vs.get("source") or next(iter(vs.values()))
                meta["qemu_versions"] = vs
        if s.name == "bpf":
            h = s.health()
            meta["clock_offsets"] = {"bpf_monotonic_to_realtime_ns": h.get("clock_offset_ns"),
                                     "error_ns": h.get("clock_offset_err_ns")}
            meta["attach"] = {"bpf_path": h.get("path"), "buffer": h.get("buffer")}
    return meta


class _Printer:
    """bcc-style status lines on stderr: upper-case headers with units, under 80 columns."""

    def __init__(self, interval: float):
        self.interval = interval
        self.t0 = time.monotonic()
        self.next = self.t0 + interval
        self.last_n = 0
        self.status = "-"

    def header(self) -> None:
        if self.interval > 0:
            print(f"{'TIME(s)':>8} {'EVENTS':>10} {'RATE(/s)':>9} {'FLUSHED':>10}  STATUS", file=sys.stderr)

    def tick(self, n: int, flushed: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.interval <= 0 or (now < self.next and not force):
            return
        rate = (n - self.last_n) / max(now - (self.next - self.interval), 1e-9)
        print(f"{now - self.t0:8.1f} {n:10d} {rate:9.0f} {flushed:10d}  {self.status}", file=sys.stderr)
        self.last_n = n
        self.next = now + self.interval


def run(args: argparse.Namespace) -> int:
    from profiler import events as ev
    from profiler.store import RecordingWriter
    from profiler.stream import MergedSource

    sources, names = build_sources(args)
    stop = threading.Event()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file size limit becomes an error, not a kill

    def _on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            return  # a second Ctrl-C during the flush is ignored
        print("\nmigprof: stopping, finalising the recording...", file=sys.stderr)
        stop.set()

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    meta = {"sources": names, "command": "record"}
    n = 0
    pr = _Printer(args.interval)
    params: dict[str, Any] = {}
    try:
        # sources first: one that cannot attach leaves no empty recording behind
        with MergedSource(sources) as ms, RecordingWriter(
                args.output, meta, flush_interval_s=args.flush_interval,
                finalise=not args.no_finalise) as w:
            w.update_meta(**_meta_from(sources))
            print(f"Recording {', '.join(names)} to {args.output}. Hit Ctrl-C to end.", file=sys.stderr)
            pr.header()
            t_end = time.monotonic() + args.duration if args.duration else None
            for b in ms.batches(stop):
                if len(b):
                    w.write(b)
                    n += len(b)
                    _watch(b, ev, pr, params, w)
                pr.tick(n, w.rows_written)
                if w.error is not None:
                    print(f"migprof: recording stopped: {w.error}", file=sys.stderr)
                    stop.set()
                if t_end is not None and time.monotonic() >= t_end:
                    stop.set()
            stop.set()
            extra = _meta_from(sources)
            extra["health"] = json.loads(json.dumps(ms.health(), default=str))
            w.update_meta(**extra)
        pr.tick(n, w.rows_written, force=True)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    where = w.final_path or args.output
    print(f"migprof: {w.rows_written} events in {where}" +
          (f" ({w.dropped} dropped after: {w.error})" if w.error else ""), file=sys.stderr)
    return EXIT_USAGE if w.error else EXIT_OK


def _watch(b: Any, ev: Any, pr: _Printer, params: dict[str, Any], w: Any) -> None:
    """Follow the migration status for the status line, and parameters for the metadata."""
    e = b["event"].astype("string")
    st = b["state"][(e == ev.QMP_MIGRATION) | (e == ev.QMP_QUERY_MIGRATE) | (e == "migrate_set_state")]
    st = st.dropna()
    if len(st):
        pr.status = str(st.iloc[-1])
    pm = b[e == ev.QMP_PARAMS]
    if len(pm):
        for side, detail in zip(pm["side"].astype("string"), pm["detail"], strict=True):
            try:
                params[str(side)] = json.loads(detail)
            except (TypeError, ValueError):
                continue
        w.update_meta(migration_params=dict(params))
