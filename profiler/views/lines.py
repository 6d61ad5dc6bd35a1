"""bcc-style line views on stdout, fed by a live session: live's event lines, the demo's status line, the end summary.

Each view is a session sink (``start(health)`` / ``feed(batch)`` / ``tick(now)`` /
``close(health)``, see ``profiler.session``):

* ``EventLines`` (``live``, ``record``): one line per state-like event as it arrives and,
  every interval, the data-fd totals per side, device and phase since the last ones.
* ``StatusLines`` (``demo``): one line per interval with the source side's latest state,
  pass, pending, threshold, bytes sent and rate.
* ``Summary`` (``live``, ``record``): at the end, the data-fd table per side, device and
  phase (``profiler.model.devices.data_fd_io``), the BPF counters, then the report.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import numpy as np
import pandas as pd

from profiler import events as ev

log = logging.getLogger(__name__)

MiB = 1024 * 1024


def _na(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and v != v)


# ---------------------------------------------------------------- live: one line per event


PRINTED = frozenset({
    ev.BPF_IOCTL, ev.BPF_PRECOPY_INFO, ev.BPF_FD_CLOSE, ev.BPF_LOST, ev.QMP_MIGRATION,
    ev.QMP_VFIO_MIGRATION, "migrate_set_state", "vfio_migration_set_state",
    "vfio_migration_set_device_state", "vfio_save_setup", "vfio_save_complete_precopy",
    "vfio_load_state_device_data",
    ev.LIBVIRT_JOB, ev.LIBVIRT_LIFECYCLE})  # --domain: libvirt's view beside ours


class EventLines:
    """One line per state-like event; data-fd totals every ``interval`` seconds.

    ``banner(health)`` (optional) is printed on ``err`` once the sources are attached,
    before the column header. ``pids``: several QEMUs at once (``live -p A -p B``): a PID
    column keeps them apart.
    """

    HEADER = (f"{'TIME(s)':>9} {'SIDE':<4} {'EVENT':<24} {'DEVICE':<14} {'BYTES':>10} "
              f"{'LAT(us)':>8} DETAIL")

    def __init__(self, out: IO[str] | None = None, interval: float = 1.0, *,
                 banner: Callable[[Mapping[str, Any]], str] | None = None,
                 err: IO[str] | None = None, pids: bool = False):
        self.pids = pids
        if pids:
            self.HEADER = f"{'PID':>7} {self.HEADER}"
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.interval = interval
        self.banner = banner
        self.t0: int | None = None
        self._io: list[pd.DataFrame] = []
        self._last = time.monotonic()
        self._status: dict[Any, str | None] = {}  # per QEMU (pid; None when one)

    def start(self, health: Mapping[str, Any]) -> None:
        if self.banner is not None:
            print(self.banner(health), file=self.err, flush=True)
        print(self.HEADER, file=self.out, flush=True)
        self._last = time.monotonic()

    def feed(self, df: pd.DataFrame) -> None:
        names = df["event"].astype(str)
        io = df[names.isin([ev.BPF_DATA_READ, ev.BPF_DATA_WRITE]).to_numpy()]
        if len(io):
            self._io.append(io)
        q = df[(names == ev.QMP_QUERY_MIGRATE).to_numpy()]
        # a query-migrate poll is printed when its status changes
        for st, t, side, pid in zip(q["state"], q["t_ns"], q["side"], q["pid"], strict=True):
            key = pid if self.pids else None
            if st != self._status.get(key):
                self._status[key] = st
                self._line(t, side, "qmp query-migrate", None, None, None, str(st), pid)
        for row in df[names.isin(PRINTED).to_numpy()].itertuples(index=False):  # a handful
            self._line(row.t_ns, row.side, row.event, row.device, row.bytes, row.dur_ns,
                       row.state if not _na(row.state) else row.detail, row.pid)

    def tick(self, now: float) -> None:
        if now - self._last >= self.interval:
            self.flush_io(now)

    def close(self, health: Mapping[str, Any]) -> None:
        self.flush_io()

    def _t(self, t_ns: Any) -> str:
        if _na(t_ns):
            return f"{'-':>9}"
        if self.t0 is None:
            self.t0 = int(t_ns)
        return f"{(int(t_ns) - self.t0) / 1e9:9.3f}"

    def _line(self, t: Any, side: Any, event: Any, device: Any, nbytes: Any, dur: Any,
              detail: Any, pid: Any = None) -> None:
        side_s = {"source": "src", "destination": "dst"}.get(str(side), "?")
        dev = "" if _na(device) else str(device)
        b = "" if _na(nbytes) else str(int(nbytes))
        lat = "" if _na(dur) else f"{int(dur) / 1000:.0f}"
        det = "" if _na(detail) else str(detail)
        who = (f"{'-' if _na(pid) else int(pid):>7} ") if self.pids else ""
        print(f"{who}{self._t(t)} {side_s:<4} {str(event)[:24]:<24} {dev[:14]:<14} {b:>10} "
              f"{lat:>8} {det}", file=self.out, flush=True)

    def flush_io(self, now: float | None = None) -> None:
        """Print the data-fd totals gathered since the last call."""
        self._last = now if now is not None else time.monotonic()
        if not self._io:
            return
        io = pd.concat(self._io, ignore_index=True)
        self._io = []
        pid = io["pid"].fillna(-1) if self.pids else pd.Series(-1, index=io.index)
        g = io.groupby([pid, io["side"].astype(str), io["event"].astype(str), io["device"].fillna("?"),
                        io["state"].fillna("?")], sort=True)
        agg = g.agg(t=("t_ns", "max"), n=("fd", "size"), b=("bytes", "sum"), lat=("dur_ns", "max"))
        for (p, side, event, dev, phase), r in agg.iterrows():
            self._line(r["t"], side, event, dev, r["b"], r["lat"], f"{phase} x{int(r['n'])} (max lat)",
                       None if p == -1 else p)


# ---------------------------------------------------------------- demo: one status line per interval


class StatusLines:
    """One line per interval from the events seen so far (source side)."""

    HEADER = (f"{'TIME(s)':>7} {'STATE':<10} {'PASS':>4} {'PEND(MiB)':>9} {'THRESH(MiB)':>11} "
              f"{'XFER(MiB)':>9} {'MiB/s':>7}")
    PENDING = ("migrate_pending", "migrate_pending_estimate", "migrate_pending_exact")

    def __init__(self, out: IO[str] | None = None, interval: float = 1.0):
        self.out = out or sys.stdout
        self.interval = interval
        self.state = "none"
        self.passes: int | None = None
        self.pending: int | None = None
        self.threshold: int | None = None
        self.xfer: int | None = None
        self.mibps: float | None = None
        self.t0: float | None = None
        self.next = time.monotonic()
        self.last = 0.0
        self.printed = False

    def start(self, health: Mapping[str, Any]) -> None:
        pass

    def feed(self, df: pd.DataFrame) -> None:
        """Take a batch's latest values (printing waits for the next tick)."""
        if len(df):
            self._update(df)

    def tick(self, now: float) -> None:
        """Print a line if one is due."""
        if now >= self.next and self.t0 is not None:
            self.print_line(now)
            self.next = now + self.interval

    def close(self, health: Mapping[str, Any]) -> None:
        # the last values, unless a line just showed them
        if self.t0 is not None and time.monotonic() - self.last > 0.3:
            self.print_line()

    def _update(self, df: pd.DataFrame) -> None:
        # the view shows only the latest values: find, on the category codes, the last
        # source row of each kind it reads, and read those few cells (no column copies)
        evc, side = df["event"], df["side"]
        if not isinstance(evc.dtype, pd.CategoricalDtype) or not isinstance(
            side.dtype, pd.CategoricalDtype
        ):
            df = ev.conform(df)
            evc, side = df["event"], df["side"]
        scats = side.cat.categories
        if ev.Side.SOURCE not in scats:
            return
        src = side.cat.codes.to_numpy() == scats.get_loc(ev.Side.SOURCE)
        cats, codes = evc.cat.categories, evc.cat.codes.to_numpy()

        def rows(names: tuple[str, ...]) -> np.ndarray:
            want = [cats.get_loc(n) for n in names if n in cats]
            if not want:
                return np.empty(0, np.intp)
            return np.flatnonzero(np.isin(codes, want) & src)

        qm, mig = rows((ev.QMP_QUERY_MIGRATE,)), rows((ev.QMP_MIGRATION,))
        with_ram = qm[df["bytes"].notna().to_numpy()[qm]] if len(qm) else qm
        if len(with_ram):  # the last reply with counters (a cancelled one has none)
            i = with_ram[-1]
            syncs, nbytes, detail = (df[c].iat[i] for c in ("dirty_syncs", "bytes", "detail"))
            if syncs is not pd.NA:
                self.passes = int(syncs)
            if nbytes is not pd.NA:
                self.xfer = int(nbytes)
            if isinstance(detail, str):
                ram = json.loads(detail).get("ram") or {}
                if "mbps" in ram:
                    self.mibps = ram["mbps"] * 1e6 / 8 / MiB
        last_state = max((a[-1] for a in (qm, mig) if len(a)), default=None)
        if last_state is not None:
            state = df["state"].iat[last_state]
            self.state = state if isinstance(state, str) else self.state
        pend = rows(self.PENDING)
        if len(pend):
            have = pend[df["bytes"].notna().to_numpy()[pend]]
            if len(have):
                self.pending = int(df["bytes"].iat[have[-1]])
            trace = rows((*self.PENDING, "migrate_transferred"))
            have = trace[df["threshold_bytes"].notna().to_numpy()[trace]]
            if len(have):
                self.threshold = int(df["threshold_bytes"].iat[have[-1]])
        elif len(tr := rows(("migrate_transferred",))):
            have = tr[df["threshold_bytes"].notna().to_numpy()[tr]]
            if len(have):
                self.threshold = int(df["threshold_bytes"].iat[have[-1]])
        if self.t0 is None and self.state != "none":
            self.t0 = time.monotonic()

    def print_line(self, now: float | None = None) -> None:
        now = now or time.monotonic()
        self.last = now
        if not self.printed:
            print(self.HEADER, file=self.out)
            self.printed = True

        def mib(v: int | None) -> str:
            return f"{v / MiB:.1f}" if v is not None else "-"

        t = now - self.t0 if self.t0 is not None else 0.0
        rate = f"{self.mibps:.1f}" if self.mibps is not None else "-"
        print(
            f"{t:7.1f} {self.state:<10} {self.passes if self.passes is not None else '-':>4} "
            f"{mib(self.pending):>9} {mib(self.threshold):>11} {mib(self.xfer):>9} {rate:>7}",
            file=self.out,
            flush=True,
        )


# ---------------------------------------------------------------- the end summary


class Summary:
    """Keeps the events and, at the end, prints the data-fd table and the report.

    ``qemus`` (several at once: pid -> a name for it, read at the end): the summary of each
    QEMU's own events under a line naming it, then the shared BPF set's counters.
    """

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None,
                 qemus: Callable[[], Mapping[int, str]] | None = None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.qemus = qemus
        self.frames: list[pd.DataFrame] = []

    def start(self, health: Mapping[str, Any]) -> None:
        pass

    def feed(self, batch: pd.DataFrame) -> None:
        self.frames.append(batch)

    def tick(self, now: float) -> None:
        pass

    def close(self, health: Mapping[str, Any]) -> None:
        events = ev.concat(self.frames) if self.frames else ev.empty_frame()
        if self.qemus is None:
            print_summary(events, health, self.out)
        else:
            pid = events["pid"].to_numpy(dtype="float64", na_value=-1)
            for p, name in sorted(self.qemus().items()):
                print(f"\n=== QEMU pid {p} ({name})", file=self.out)
                print_summary(events[pid == p].reset_index(drop=True), {}, self.out)
            print_bpf_line((health.get("targets") or {}).get("bpf") or {}, self.out)
        for name, why in (health.get("failed") or {}).items():
            print(f"migprof: source {name} failed: {why}", file=self.err)


def data_fd_lines(io: pd.DataFrame) -> list[str]:
    """The data-fd table (``profiler.model.devices.data_fd_io``) as text lines."""
    if not len(io):
        return ["no VFIO data-fd traffic seen"]
    out = [f"{'SIDE':<12} {'DEVICE':<16} {'PHASE':<13} {'CALLS':>6} {'BYTES':>12} "
           f"{'AVG(us)':>8} {'MAX(us)':>8}"]
    for r in io.itertuples(index=False):  # one row per side, device and phase: a handful
        out.append(f"{r.side:<12} {r.device:<16} {r.phase:<13} {r.calls:>6} {r.bytes:>12} "
                   f"{float(r.avg_us):>8.1f} {float(r.max_us):>8.1f}")
    return out


def print_bpf_line(bpf: Mapping[str, Any], out: IO[str]) -> None:
    """The BPF collector's counters (nothing without BPF)."""
    if bpf:
        print(f"bpf: {bpf.get('path')} path, {bpf.get('buffer')} buffer, {bpf.get('events', 0)} events, "
              f"{bpf.get('lost', 0)} lost", file=out)


def print_summary(events: pd.DataFrame, health: Mapping[str, Any], out: IO[str] | None = None) -> None:
    """Per side, device and phase: data-fd calls, bytes, latency; the BPF counters; the report."""
    from profiler.model.devices import data_fd_io

    out = out or sys.stdout
    print("", file=out)
    for line in data_fd_lines(data_fd_io(events)):
        print(line, file=out)
    print_bpf_line(health.get("bpf") or {}, out)
    try:
        from profiler.model.build import build_report
        from profiler.views.console import output_console
        from profiler.views.report import render

        report = build_report(events, inputs=["live"])
        if report.migrations:
            render(report, output_console(out))
    except BrokenPipeError:
        raise  # the reader left: not a failure of the report
    except Exception as e:  # the summary must never hide the data-fd table above
        log.warning("report: %s", e)
