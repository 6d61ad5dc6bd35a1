"""`migprof live`: attach to a running QEMU: BPF on its VFIO fds, its trace log and QMP, live."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from profiler import events as ev
from profiler import registry
from profiler.errors import EXIT_OK, EXIT_USAGE, MigprofError, SetupError
from profiler.sources.base import Source
from profiler.sources.procfd import pid_alive

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  migprof live -p 4242                 # QEMU pid 4242: BPF + its QMP socket + its trace log
  migprof live --qmp /run/qemu/src.qmp # find the pid behind a QMP socket, then the same
  migprof live -p 4242 --no-tui -d 60  # bcc-style line view for 60 s, then the summary
  migprof live -p 4242 --record mig.parquet   # also record every event (replay later)
  migprof live -p 4242 --no-bpf        # QMP and QEMU trace only (no root, no bcc)
  migprof live -p 4242 --path kprobe   # kprobes on the VFIO handlers (hosts with VFIO)
  migprof live --domain vm1 -c qemu:///system   # a libvirt domain (QMP through libvirt)

Over QMP, migprof enables QEMU's migration and VFIO trace events (trace-event-set-state)
and, when QEMU logs to stderr, points its log at a file it tails (HMP logfile); both are
put back at exit. Ctrl-C or SIGTERM ends the run and prints the summary.
exit status: 0 ok, 2 bad target or setup problem."""

# the log back end's line prefix: "TID@SEC.USEC:event args" (7.2 .. 10.0)
_LOG_LINE = re.compile(rb"^(?:(\d+)@(\d+)\.(\d+):)?([a-z0-9_]+) ?(.*)$")


def add_target_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `live` and `record`: which QEMU, which sources, how long."""
    t = p.add_mutually_exclusive_group(required=True)
    t.add_argument("-p", "--pid", type=int, help="QEMU process id")
    t.add_argument("--qmp", metavar="SOCKET", help="QEMU's QMP UNIX socket (the pid is found from it)")
    t.add_argument("--domain", metavar="NAME", help="libvirt domain: QMP through libvirt "
                   "(docs/libvirt.md)")
    p.add_argument("-c", "--connect", metavar="URI", help="libvirt URI for --domain "
                   "(default qemu:///system)")
    p.add_argument("--side", choices=["source", "destination"],
                   help="side of this QEMU (default: destination if started with -incoming)")
    p.add_argument("-d", "--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("-i", "--interval", type=float, default=1.0, metavar="S",
                   help="line view: print data-fd totals every S seconds (default 1)")
    p.add_argument("--trace-log", metavar="FILE", help="QEMU trace log to tail (default: QEMU's -D "
                   "file, or a file migprof points the log at)")
    p.add_argument("--no-trace", action="store_true", help="leave QEMU's trace events and log alone")
    p.add_argument("--no-bpf", action="store_true", help="QMP and QEMU trace only")
    p.add_argument("--path", choices=["auto", "tracepoint", "kprobe"], default="auto",
                   help="BPF attach path (default: kprobe where the kernel has it and VFIO)")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "live", help="Profile a running QEMU live (BPF on VFIO fds, QEMU trace, QMP)",
        description="Attach to a running QEMU: BPF on its VFIO ioctls and migration data fds, "
        "its migration/VFIO trace events and QMP, merged on one clock and fed to the model.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_options(p)
    p.add_argument("--record", metavar="FILE", help="record every event to FILE")
    p.add_argument("--no-tui", action="store_true", help="line view on stdout, no TUI")
    p.add_argument("--any-process", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)
    return p


# ---------------------------------------------------------------- the target


@dataclass(frozen=True, slots=True)
class Target:
    """The QEMU process and how to reach it."""

    pid: int
    side: str
    qmp: str | None  # QMP UNIX socket path
    log_file: str | None  # QEMU's -D file, when it has one
    comm: str
    domain: str | None = None  # a libvirt domain: QMP through libvirt (sources/libvirt.py)
    uri: str | None = None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        raise MigprofError(f"no process {pid} (it has gone, or never was)") from None
    except PermissionError:
        raise SetupError(f"cannot read /proc/{pid}/cmdline (fix: run as root)") from None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _opt_values(argv: list[str], *names: str) -> list[str]:
    out = []
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                out.append(argv[i + 1])
            elif a.startswith(n + "="):
                out.append(a[len(n) + 1:])
    return out


def qmp_socket_from_cmdline(argv: list[str]) -> str | None:
    """The QMP UNIX socket of a QEMU command line (-qmp unix:..., or -chardev + -mon mode=control)."""
    for v in _opt_values(argv, "-qmp", "--qmp"):
        if v.startswith("unix:"):
            return v[5:].split(",")[0]
    chardevs = {}
    for v in _opt_values(argv, "-chardev", "--chardev"):
        parts = v.split(",")
        kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if parts[0] == "socket" and "path" in kv and "id" in kv:
            chardevs[kv["id"]] = kv["path"]
    for v in _opt_values(argv, "-mon", "--mon"):
        kv = dict(p.split("=", 1) for p in v.split(",") if "=" in p)
        if kv.get("mode") == "control" and kv.get("chardev") in chardevs:
            return chardevs[kv["chardev"]]
    return None


def pid_of_socket(path: str) -> int:
    """The pid of the process serving a UNIX socket (SO_PEERCRED)."""
    if not os.path.exists(path):
        raise MigprofError(f"{path}: no such QMP socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(path)
        cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError as e:
        raise MigprofError(f"{path}: QMP socket refuses connections: {e.strerror or e}") from None
    finally:
        s.close()
    pid, _uid, _gid = struct.unpack("3i", cred)
    return pid


def resolve_target(pid: int | None, qmp: str | None, side: str | None, any_process: bool = False) -> Target:
    """Find the pid, QMP socket, trace log and side of the QEMU to attach to."""
    if pid is None:
        assert qmp is not None
        pid = pid_of_socket(qmp)
    argv = _cmdline(pid)
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        comm = "?"
    exe = os.path.basename(argv[0]) if argv else ""
    if not any_process and "qemu" not in comm and "qemu" not in exe:
        raise MigprofError(f"pid {pid} is not QEMU ({comm or exe!r})")
    if qmp is None:
        qmp = qmp_socket_from_cmdline(argv)
    logs = _opt_values(argv, "-D")
    if side is None:
        side = "destination" if _opt_values(argv, "-incoming", "--incoming") else "source"
    return Target(pid, side, qmp, logs[-1] if logs else None, comm)


# ---------------------------------------------------------------- QEMU trace control


class TraceControl(Source):
    """Turns QEMU's migration/VFIO trace events on over QMP and its log into a file; undoes both.

    Yields no events itself: the TraceTail source reads the file.
    """

    name = "trace-control"

    def __init__(self, qmp: Any, side: str, target: Target, log_path: str | None,
                 temporary: bool = False):
        self.temporary = temporary  # log_path is ours: remove it once QEMU no longer writes it
        self.qmp = qmp
        self.side = side
        self.target = target
        self.log_path = log_path
        self.enabled: list[str] = []  # events we switched on (restored to off at exit)
        self.redirected = False
        self.restore_log: str | None = None
        self.problem: str | None = None

    def _wanted(self, available: set[str]) -> list[str]:
        """The migration and VFIO migration events this QEMU has (never all of them)."""
        return registry.events_to_enable(available)

    def __enter__(self) -> TraceControl:
        try:
            states = self.qmp.execute(self.side, "trace-event-get-state", {"name": "*"})
        except Exception as e:
            self.problem = f"cannot read QEMU's trace events over QMP: {e}"
            log.warning("%s", self.problem)
            return self
        off = {s["name"] for s in states if s.get("state") == "disabled"}
        on = {s["name"] for s in states if s.get("state") == "enabled"}
        if not (off | on):
            self.problem = "QEMU has no trace events (built without a trace back end)"
            return self
        for name in self._wanted(off | on):
            if name in off:
                try:
                    self.qmp.execute(self.side, "trace-event-set-state", {"name": name, "enable": True})
                    self.enabled.append(name)
                except Exception as e:  # e.g. a dstate-only event
                    log.debug("trace-event-set-state %s: %s", name, e)
        if self.log_path and self.log_path != self.target.log_file:
            self._redirect()
        return self

    def _redirect(self) -> None:
        # QEMU logs to stderr (no -D): send the log to our file. Going back is only safe
        # when stderr is not a regular file (reopening it would truncate, e.g. libvirt's log)
        try:
            err = os.readlink(f"/proc/{self.target.pid}/fd/2")
        except OSError:
            err = ""
        self.qmp.execute(self.side, "human-monitor-command", {"command-line": f"logfile {self.log_path}"})
        self.redirected = True
        if err and not os.path.isfile(err):
            self.restore_log = "/dev/stderr"

    def close(self) -> None:
        for name in self.enabled:
            try:
                self.qmp.execute(self.side, "trace-event-set-state", {"name": name, "enable": False}, timeout=5)
            except Exception as e:  # QEMU gone: nothing to put back
                log.debug("restoring %s: %s", name, e)
                break
        self.enabled = []
        if self.redirected:
            self.redirected = False
            if self.restore_log:
                with contextlib.suppress(Exception):
                    self.qmp.execute(self.side, "human-monitor-command",
                                     {"command-line": f"logfile {self.restore_log}"}, timeout=5)
                    if self.temporary and self.log_path:
                        os.unlink(self.log_path)
            else:
                log.warning("QEMU's stderr is a file: its log stays at %s", self.log_path)

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        return iter(())

    def health(self) -> dict[str, Any]:
        return {"source": self.name, "enabled": len(self.enabled), "log": self.log_path,
                "problem": self.problem}


def _parse_lines(lines: list[bytes], path: str, first_line: int, side: str, pid: int) -> tuple[pd.DataFrame, int]:
    """Trace log lines -> events (the log parser when present; else name, time and raw text)."""
    try:
        from profiler.sources.qemu_log import parse_bytes  # the log parser (issue 2)
    except ImportError:
        parse_bytes = None
    if parse_bytes is not None:
        res = parse_bytes(b"\n".join(lines) + b"\n", side=side, file=path, first_line=first_line)
        df = res.frame.copy()
        df["pid"] = pd.array([pid] * len(df), dtype="Int64")
        return ev.conform(df), res.skipped
    rows = {"t_ns": [], "tid": [], "event": [], "line": [], "raw": []}
    skipped = 0
    for i, line in enumerate(lines):
        m = _LOG_LINE.match(line)
        if not m:
            skipped += 1
            continue
        tid, sec, usec, name, _rest = m.groups()
        rows["t_ns"].append(int(sec) * 10**9 + int(usec.ljust(6, b"0")[:6]) * 1000 if sec else None)
        rows["tid"].append(int(tid) if tid else None)
        rows["event"].append(name.decode())
        rows["line"].append(first_line + i)
        rows["raw"].append(line.decode(errors="replace"))
    n = len(rows["raw"])
    df = pd.DataFrame({
        "t_ns": pd.array(rows["t_ns"], dtype="Int64"), "clock_ns": pd.array(rows["t_ns"], dtype="Int64"),
        "clock": np.where(pd.isna(pd.array(rows["t_ns"], dtype="Int64")), "none", "realtime"),
        "seq": pd.array(rows["line"], dtype="Int64"), "side": side,
        "pid": pd.array([pid] * n, dtype="Int64"), "tid": pd.array(rows["tid"], dtype="Int64"),
        "origin": ev.Origin.QEMU_LOG.value, "event": rows["event"], "file": path,
        "line": pd.array(rows["line"], dtype="Int64"), "raw": rows["raw"],
    })
    return ev.conform(df), skipped


class TraceTail(Source):
    """Follows a QEMU trace log as QEMU appends to it (complete lines only)."""

    name = "qemu-trace"

    def __init__(self, path: str, side: str, pid: int, from_start: bool):
        self.path = path
        self.side = side
        self.pid = pid
        self.from_start = from_start
        self._f = None
        self._line = 1
        self._rest = b""
        self.lines = 0
        self.skipped = 0
        self.stamped = 0  # lines without a timestamp, given their arrival time

    def __enter__(self) -> TraceTail:
        # the parser builds its tables on first use (a second or more on a busy host):
        # pay that at attach, not when the first migration lines arrive
        _parse_lines([b"migrate_set_state new state none"], self.path, 0, self.side, self.pid)
        Path(self.path).touch(exist_ok=True)
        self._f = open(self.path, "rb")  # noqa: SIM115 (closed in close())
        if not self.from_start:
            # count the lines we skip so line numbers stay true
            for _ in self._f:
                self._line += 1
        return self

    def close(self) -> None:
        if self._f:
            self._f.close()
            self._f = None

    def _read(self) -> pd.DataFrame:
        if self._f is None:
            return ev.empty_frame()
        chunk = self._f.read()
        if chunk:
            log.debug("trace tail: %d bytes from %s", len(chunk), self.path)
        data = self._rest + chunk
        if not data:
            return ev.empty_frame()
        lines = data.split(b"\n")
        self._rest = lines.pop()
        if not lines:
            return ev.empty_frame()
        df, skipped = _parse_lines(lines, self.path, self._line, self.side, self.pid)
        if len(df) and df["t_ns"].isna().any():
            # QEMU without -msg timestamp=on prints no time: stamp lines as they arrive
            # (within one poll, 0.1 s); clock_ns stays NA and clock "none" says so
            df["t_ns"] = df["t_ns"].fillna(time.time_ns())
            self.stamped += int(df["clock_ns"].isna().sum())
        self._line += len(lines)
        self.lines += len(lines)
        self.skipped += skipped
        return df

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        while not stop.is_set():
            yield self._read()
            stop.wait(0.1)
        yield self._read()

    def health(self) -> dict[str, Any]:
        return {"source": self.name, "file": self.path, "lines": self.lines, "skipped": self.skipped,
                "stamped_on_arrival": self.stamped}


# ---------------------------------------------------------------- line view


PRINTED = {ev.BPF_IOCTL, ev.BPF_PRECOPY_INFO, ev.BPF_FD_CLOSE, ev.BPF_LOST, ev.QMP_MIGRATION,
           ev.QMP_VFIO_MIGRATION, "migrate_set_state", "vfio_migration_set_state",
           "vfio_migration_set_device_state", "vfio_save_setup", "vfio_save_complete_precopy",
           "vfio_load_state_device_data",
           ev.LIBVIRT_JOB, ev.LIBVIRT_LIFECYCLE}  # --domain: libvirt's view beside ours


class LineView:
    """bcc-style output: a banner, one line per state-like event, data-fd totals per interval."""

    HEADER = f"{'TIME(s)':>9} {'SIDE':<4} {'EVENT':<24} {'DEVICE':<14} {'BYTES':>10} {'LAT(us)':>8} DETAIL"

    def __init__(self, out=sys.stdout, interval: float = 1.0):
        self.out = out
        self.interval = interval
        self.t0: int | None = None
        self._io: list[pd.DataFrame] = []
        self._last = time.monotonic()
        self._status: str | None = None
        print(self.HEADER, file=out, flush=True)

    def _t(self, t_ns: Any) -> str:
        if pd.isna(t_ns):
            return f"{'-':>9}"
        if self.t0 is None:
            self.t0 = int(t_ns)
        return f"{(int(t_ns) - self.t0) / 1e9:9.3f}"

    def feed(self, df: pd.DataFrame) -> None:
        if len(df):
            ev_names = df["event"].astype(str)
            io = df[ev_names.isin([ev.BPF_DATA_READ, ev.BPF_DATA_WRITE]).to_numpy()]
            if len(io):
                self._io.append(io)
            sel = ev_names.isin(PRINTED).to_numpy()
            q = df[(ev_names == ev.QMP_QUERY_MIGRATE).to_numpy()]
            if len(q):
                # a query-migrate poll is printed when its status changes
                for st, t, side in zip(q["state"], q["t_ns"], q["side"], strict=True):
                    if st != self._status:
                        self._status = st
                        self._line(t, side, "qmp query-migrate", None, None, None, str(st))
            for row in df[sel].itertuples(index=False):  # state-like events only: a handful
                self._line(row.t_ns, row.side, row.event, row.device, row.bytes, row.dur_ns,
                           row.state if not pd.isna(row.state) else row.detail)
        if time.monotonic() - self._last >= self.interval:
            self.flush_io()

    def _line(self, t: Any, side: Any, event: Any, device: Any, nbytes: Any, dur: Any, detail: Any) -> None:
        side_s = {"source": "src", "destination": "dst"}.get(str(side), "?")
        dev = "" if device is None or pd.isna(device) else str(device)
        b = "" if nbytes is None or pd.isna(nbytes) else str(int(nbytes))
        lat = "" if dur is None or pd.isna(dur) else f"{int(dur) / 1000:.0f}"
        det = "" if detail is None or pd.isna(detail) else str(detail)
        print(f"{self._t(t)} {side_s:<4} {str(event)[:24]:<24} {dev[:14]:<14} {b:>10} {lat:>8} {det}",
              file=self.out, flush=True)

    def flush_io(self) -> None:
        self._last = time.monotonic()
        if not self._io:
            return
        io = pd.concat(self._io, ignore_index=True)
        self._io = []
        g = io.groupby([io["side"].astype(str), io["event"].astype(str), io["device"].fillna("?"),
                        io["state"].fillna("?")], sort=True)
        agg = g.agg(t=("t_ns", "max"), n=("fd", "size"), b=("bytes", "sum"), lat=("dur_ns", "max"))
        for (side, event, dev, phase), r in agg.iterrows():
            self._line(r["t"], side, event, dev, r["b"], r["lat"], f"{phase} x{int(r['n'])} (max lat)")


def print_summary(events: pd.DataFrame, health: dict[str, Any], out=sys.stdout) -> None:
    """Per device and phase: data-fd bytes, calls, latency; then the model's report."""
    io = events[events["event"].astype(str).isin([ev.BPF_DATA_READ, ev.BPF_DATA_WRITE]).to_numpy()]
    print("", file=out)
    if len(io):
        print(f"{'SIDE':<12} {'DEVICE':<16} {'PHASE':<13} {'CALLS':>6} {'BYTES':>12} {'AVG(us)':>8} {'MAX(us)':>8}",
              file=out)
        g = io.groupby([io["side"].astype(str), io["device"].fillna("?"), io["state"].fillna("?")], sort=True)
        agg = g.agg(n=("fd", "size"), b=("bytes", "sum"), avg=("dur_ns", "mean"), mx=("dur_ns", "max"))
        for (side, dev, phase), r in agg.iterrows():
            print(f"{side:<12} {dev:<16} {phase:<13} {int(r['n']):>6} {int(r['b']):>12} "
                  f"{float(r['avg']) / 1000:>8.1f} {int(r['mx']) / 1000:>8.1f}", file=out)
    else:
        print("no VFIO data-fd traffic seen", file=out)
    bpf = health.get("bpf") or {}
    if bpf:
        print(f"bpf: {bpf.get('path')} path, {bpf.get('buffer')} buffer, {bpf.get('events', 0)} events, "
              f"{bpf.get('lost', 0)} lost", file=out)
    try:
        from rich.console import Console

        from profiler.model.build import build_report
        from profiler.views.report import render

        report = build_report(events, inputs=["live"])
        if report.migrations:
            render(report, Console(file=out))
    except Exception as e:  # the summary must never hide the data-fd table above
        log.warning("report: %s", e)


# ---------------------------------------------------------------- run


def _sources(args: argparse.Namespace, target: Target, stderr) -> tuple[list[Source], dict[str, Any]]:
    from profiler.stream import MergedSource  # noqa: F401 (import check before attach)

    sources: list[Source] = []
    info: dict[str, Any] = {"pid": target.pid, "side": target.side, "qmp": target.qmp}
    qmp = None
    if target.domain:  # libvirt owns the monitor: commands and events through libvirt
        from profiler.sources.libvirt import LibvirtSource

        qmp = LibvirtSource(target.uri, target.domain, target.side)
        sources.append(qmp)
        info.update(domain=target.domain, uri=target.uri)
    elif target.qmp:
        from profiler.sources.qmp import QmpSource

        qmp = QmpSource({target.side: target.qmp})
        sources.append(qmp)
    else:
        print(f"migprof: no QMP socket found for pid {target.pid}: no QMP events "
              "(fix: pass --qmp SOCKET)", file=stderr)
    if not args.no_trace and qmp is not None:
        log_path = args.trace_log or target.log_file
        from_start = False
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix=f"migprof-live-{target.pid}-", suffix=".log")
            os.close(fd)
            from_start = True
        sources.append(TraceControl(qmp, target.side, target, log_path, temporary=from_start))
        sources.append(TraceTail(log_path, target.side, target.pid, from_start))
        info["trace_log"] = log_path
    elif args.trace_log:
        sources.append(TraceTail(args.trace_log, target.side, target.pid, False))
        info["trace_log"] = args.trace_log
    if not args.no_bpf:
        from profiler.sources.bpf import BpfSource, check_host

        host = check_host()
        if host.problem:
            print(f"migprof: bpf: {host.problem}; continuing with QMP and QEMU trace only", file=stderr)
        else:
            sources.append(BpfSource([target.pid], sides={target.pid: target.side}, path=args.path))
            from profiler.sources.usdt import UsdtSource, has_usdt_probes

            exe = f"/proc/{target.pid}/exe"
            if has_usdt_probes(exe):  # a dtrace build (Fedora/RHEL): its probes, no log needed
                sources.append(UsdtSource(target.pid, side=target.side))
                info["usdt"] = os.path.realpath(exe)
    return sources, info


def _writer(path: str | None, meta: dict[str, Any]):
    if not path:
        return None
    try:
        from profiler.store import RecordingWriter
    except ImportError:
        raise SetupError("--record needs profiler.store (recordings), which is missing") from None
    return RecordingWriter(path, meta=meta)


def run(args: argparse.Namespace) -> int:
    if args.ebpf:
        from profiler.sources.bpf import bpf_source_text

        print(bpf_source_text("kprobe" if args.path == "kprobe" else "tracepoint"))
        return EXIT_OK
    if args.duration is not None and args.duration <= 0:
        raise MigprofError("--duration must be > 0")
    if getattr(args, "domain", None):
        from profiler.sources.libvirt import resolve_domain

        d = resolve_domain(args.connect, args.domain, args.side)
        target = Target(d.pid, d.side, None, d.log_file, "qemu", domain=d.name, uri=d.uri)
    else:
        target = resolve_target(args.pid, args.qmp, args.side, args.any_process)
    from profiler.stream import MergedSource

    sources, info = _sources(args, target, sys.stderr)
    if not sources:
        raise MigprofError(f"nothing to trace on pid {target.pid}: no QMP socket and BPF unavailable")
    merged = MergedSource(sources)
    writer = _writer(args.record, {"sources": [s.name for s in sources], "live": info})
    title = f"migprof live: pid {target.pid} ({target.side})"
    try:
        rc = None
        if sys.stdout.isatty() and not args.no_tui:
            try:
                from tui.app import run_live
            except ImportError as e:
                print(f"migprof: no TUI ({e}); line view", file=sys.stderr)
            else:
                rc = run_live(merged, title=title, record=writer, debug=args.debug)
        if rc is None:
            rc = _line_loop(args, target, merged, writer)
    finally:
        if writer is not None:
            writer.close()
    for s in sources:  # --domain: libvirt's own statistics of the job, beside the summary
        if getattr(s, "completed_job", None):
            from profiler.views.libvirt import job_line

            print(job_line(s.completed_job))
    ended = [s.end_problem() for s in sources if hasattr(s, "end_problem")]
    for problem in filter(None, ended):  # a libvirt domain destroyed mid-run, not migrated
        print(f"migprof: error: {problem}", file=sys.stderr)
        rc = EXIT_USAGE
    if writer is not None and writer.error and rc == EXIT_OK:
        # the run went on, but the recording is short: scripts must not take it as whole
        print(f"migprof: error: recording incomplete: {writer.error}; every event before it "
              f"is kept in {writer.final_path}", file=sys.stderr)
        return EXIT_USAGE
    return rc


def _line_loop(args: argparse.Namespace, target: Target, merged: Any, writer: Any) -> int:
    stop = threading.Event()
    interrupted = {"n": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        interrupted["n"] += 1
        if interrupted["n"] == 1:
            print("\nDetaching...", file=sys.stderr, flush=True)
        stop.set()  # a second Ctrl-C only sets it again: the flush goes on

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    frames: list[pd.DataFrame] = []
    try:
        with merged:
            health = merged.health()
            bpf = health.get("bpf") or {}
            if writer is not None:
                writer.update_meta(attach=bpf.get("path"), clock_offsets={
                    "bpf_monotonic_to_realtime_ns": bpf.get("clock_offset_ns"),
                    "uncertainty_ns": bpf.get("clock_offset_err_ns")})
            what = ", ".join(filter(None, [
                f"BPF {bpf.get('path')} ({bpf.get('buffer')} buffer)" if bpf else None,
                f"QMP {target.qmp}" if target.qmp else None,
                f"libvirt domain {target.domain} ({target.uri})" if target.domain else None,
                f"trace {health.get('qemu-trace', {}).get('file')}" if "qemu-trace" in health else None]))
            print(f"Tracing QEMU pid {target.pid} ({target.side}): {what}... Hit Ctrl-C to end.",
                  file=sys.stderr, flush=True)
            view = LineView(sys.stdout, args.interval)
            deadline = time.monotonic() + args.duration if args.duration else None
            for batch in merged.batches(stop):
                if len(batch):
                    frames.append(batch)
                    if writer is not None:
                        writer.write(batch)
                view.feed(batch)
                if deadline and time.monotonic() >= deadline:
                    stop.set()
                if not pid_alive(target.pid):
                    print(f"migprof: QEMU pid {target.pid} exited", file=sys.stderr)
                    stop.set()
            view.flush_io()
            health = merged.health()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    events = ev.concat(frames)
    print_summary(events, health)
    if writer is not None:
        writer.update_meta(health=_jsonable(health))
    failed = health.get("failed") or {}
    for name, why in failed.items():
        print(f"migprof: source {name} failed: {why}", file=sys.stderr)
    return EXIT_OK


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)
