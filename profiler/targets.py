"""Many QEMUs as one live source: one shared BPF program set, and per QEMU the sources ``live``
attaches (QMP or libvirt, its trace events and log); QEMUs join and leave while it runs.

Targets are given (``live -p A -p B``) or found (``top``: a ``Discovery`` scanned every
``scan_s``). A new QEMU costs a map update in the loaded BPF set (``BpfSource.add_target``)
and its own sources, attached on a thread of their own so a slow or held monitor delays no
one else; that thread then sleeps until the QEMU is let go, and detaches. Following a QEMU
costs no thread that wakes: its QMP (or libvirt) rows are pushed to this source as they
arrive (``tap``), its trace log is read with every other one on this source's own loop
every ``tail_s``; a source of another kind gets a thread of its own. Every row leaves
with its QEMU's pid (QMP and libvirt rows get it here), which keeps the QEMUs apart
downstream. A QEMU that exits is let go and its pid leaves the BPF set; with fixed
targets the stream ends when the last one has gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd

from profiler.attach import live_sources
from profiler.events import rows_to_frame
from profiler.sources.base import Source
from profiler.sources.discover import Discovery, Qemu, describe, start_ticks
from profiler.sources.procfd import pid_alive

log = logging.getLogger(__name__)

LINGER_S = 1.0  # a borrowed monitor is kept this long after its migration ends
_ENDED = frozenset(["completed", "failed", "cancelled"])


def _status_rows() -> frozenset[str]:
    from profiler import events as E

    return frozenset([E.QMP_MIGRATION, E.QMP_QUERY_MIGRATE])


_STATUS_ROWS = _status_rows()


@dataclass(slots=True)
class Member:
    """One QEMU followed: what it is, its own sources and the thread that holds them."""

    qemu: Qemu
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    sources: list[Source] = field(default_factory=list)  # entered
    polled: list[Any] = field(default_factory=list)  # sources read on the set's loop
    problem: str | None = None  # why its own sources could not attach
    alive: bool = True
    left_at: float | None = None  # time.monotonic() when it stopped being followed
    probing: bool = False  # its monitor answers brief probes (TargetSet monitors="brief")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sources) or (("qmp-probe",) if self.probing else ())


class TargetSet(Source):
    """QEMUs given or found, each with its own sources, and one BPF set for all of them.

    ``qemus``: the QEMUs to follow from the start; ``discovery``: find more (and notice
    those that end) every ``scan_s``. ``bpf``/``path``: the shared BPF set; ``trace``: switch
    each QEMU's migration trace events on and read its log; ``qmp``: speak to each QEMU's
    monitor (or libvirt's passthrough) at ``qmp_hz`` polls a second; False leaves every
    monitor alone (then only BPF and the ``-D`` logs there are). ``monitors``: "hold" keeps
    each QMP socket from attach to let-go (``live -p A -p B``: the user named them); "brief"
    borrows it for one ``query-migrate`` a poll while the QEMU is idle and holds it only
    while a migration is under way (``top``: a QMP socket serves one client at a time, and
    an observer must not make the operator's own commands wait). ``notify`` says things once
    (a monitor held, BPF unavailable...). ``wake``: set by whoever learns of a change (libvirt's
    lifecycle events) for a scan now. A QEMU that has gone stays in ``followed()`` for
    ``keep_gone_s``. ``tail_s``: how often the logs are read and what arrived is handed on
    (each read is parsed at ~2.5 ms however few lines it holds); ``bpf_poll_ms``: how often
    the idle BPF reader wakes (records wake it at once).
    """

    name = "targets"

    def __init__(self, qemus: Sequence[Qemu] = (), *, discovery: Discovery | None = None,
                 bpf: bool = True, path: str = "auto", trace: bool = True, qmp: bool = True,
                 qmp_hz: float = 10.0, scan_s: float = 1.0, tail_s: float = 0.1,
                 bpf_poll_ms: int = 100,
                 keep_gone_s: float = 60.0, monitors: str = "hold", err: IO[str],
                 notify: Callable[[str], None] | None = None, wake: threading.Event | None = None):
        self.initial = list(qemus)
        self.discovery = discovery
        self.want_bpf = bpf
        self.path = path
        self.trace = trace
        self.qmp = qmp
        self.qmp_hz = qmp_hz
        if monitors not in ("hold", "brief"):
            raise ValueError(f"monitors: {monitors!r}")
        self.monitors = monitors
        self.scan_s = scan_s
        self.tail_s = tail_s
        self.bpf_poll_ms = bpf_poll_ms  # idle wake-ups of the BPF reader (records wake it at once)
        self.keep_gone_s = keep_gone_s
        self.err = err
        self.notify = notify or (lambda m: print(f"migprof: {m}", file=err, flush=True))
        self.wake = wake
        self.bpf: Any = None
        self.bpf_problem: str | None = None
        self.members: dict[int, Member] = {}
        self.left: dict[int, Member] = {}  # QEMUs that have gone, with their last state
        self._frames: queue.SimpleQueue[pd.DataFrame] = queue.SimpleQueue()  # BPF, pumps
        self._rows: queue.SimpleQueue[tuple[int, str, dict]] = queue.SimpleQueue()  # taps
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.failed: dict[str, str] = {}
        self._born = describe_start()  # QEMUs started after this are read from their first line

    # ---------------------------------------------------------------- attach
    def __enter__(self) -> TargetSet:
        if self.trace:
            # the log parser's tables and compiled scanners (a second of CPU) are built now,
            # not on the thread of the first QEMU found
            from profiler.sources.qemu_tail import warm_parser

            warm_parser()
        if self.want_bpf:
            from profiler.sources.bpf import BpfSource, check_host

            host = check_host()
            if host.problem:
                self.bpf_problem = host.problem
                self.notify(f"bpf: {host.problem}; continuing with QMP and QEMU trace only")
            else:
                self.bpf = BpfSource([], dynamic=True, path=self.path, poll_ms=self.bpf_poll_ms)
                self.bpf.__enter__()
        try:
            for q in self.initial:
                self.add(q)
            if self.discovery is not None:
                self._scan()
        except BaseException:
            self.close()
            raise
        return self

    def add(self, q: Qemu) -> None:
        """Follow ``q`` from now on (nothing when it is followed already)."""
        with self._lock:
            if q.pid in self.members:
                return
            m = self.members[q.pid] = Member(q)
            self.left.pop(q.pid, None)
        if self.bpf is not None:
            try:
                self.bpf.add_target(q.pid, q.side)
            except Exception as e:  # gone already, or every slot taken: its own sources go on
                self.notify(f"bpf: {q.label} (pid {q.pid}): {e}")
        self._start(m)

    def _start(self, m: Member) -> None:
        m.thread = threading.Thread(target=self._hold, args=(m,), name=f"qemu-{m.qemu.pid}",
                                    daemon=True)
        m.thread.start()

    def remove(self, pid: int, *, wait: bool = True) -> None:
        """Stop following ``pid``: its sources detach (putting back what they switched on)."""
        with self._lock:
            m = self.members.pop(pid, None)
        if m is None:
            return
        now = describe(pid)
        m.alive = pid_alive(pid) and now is not None and now.start == m.qemu.start
        m.left_at = time.monotonic()
        with self._lock:
            self.left[pid] = m
        self._let_go(m, wait)
        if self.bpf is not None:
            self.bpf.remove_target(pid)

    def _let_go(self, m: Member, wait: bool) -> None:
        with self._lock:
            polled, m.polled = m.polled, []
        for src in polled:  # what its log still holds
            self._read(m, src)
        m.stop.set()
        if wait and m.thread is not None:
            m.thread.join(timeout=40)

    def _sources(self, q: Qemu) -> list[Source]:
        if not (self.qmp or self.trace):
            return []
        target = q.target()
        if not self.qmp:  # leave the monitor alone: only a -D log that is there already
            if q.log_file is None:
                return []
            target = dataclasses.replace(target, qmp=None, domain=None)
        return live_sources(target, trace=self.trace, bpf=False, err=self.err,
                            notify=self.notify, qmp_hz=self.qmp_hz, say_no_qmp=False,
                            log_from_start=q.start > self._born)[0]

    def _brief(self, q: Qemu) -> bool:
        """Whether ``q``'s monitor is only borrowed while it does not migrate."""
        return self.qmp and self.monitors == "brief" and q.qmp is not None and q.domain is None

    def _hold(self, m: Member) -> None:
        """A QEMU's own sources, on this thread. Held monitors: attach, wait until it is let
        go, detach. Borrowed ones (``monitors="brief"``): a ``query-migrate`` probe every
        poll while it is idle, the sources only while a migration is under way."""
        if not self._brief(m.qemu):
            self._attach(m)
            return
        while not m.stop.is_set():
            if self._idle(m):
                self._attach(m, until_done=True)

    def _idle(self, m: Member) -> bool:
        """Probe ``m``'s monitor until a migration is under way (True) or it is let go."""
        from profiler.sources.qmp import query_row
        from profiler.sources.qmp_probe import probe

        q, every = m.qemu, 1.0 / max(self.qmp_hz, 0.01)
        while not m.stop.is_set():
            p = probe(str(q.qmp))
            m.probing = p.reply is not None
            if p.reply is not None:
                m.problem = None
                if p.status != "none":  # as QmpSource: rows once there is a migration
                    self._rows.put((q.pid, q.side, query_row(q.side, p.reply, p.t_ns)))
                if p.active:
                    m.probing = False
                    return True
            elif p.problem != m.problem:  # said once per change
                m.problem = p.problem
                self.notify(f"{q.label} (pid {q.pid}): {p.problem}")
            m.stop.wait(every)
        return False

    def _attach(self, m: Member, until_done: bool = False) -> None:
        """Enter ``m``'s sources and keep them until it is let go (or, ``until_done``, until
        its migration has ended and the last counters are in), then detach them."""
        q = m.qemu
        done = threading.Event()

        def push(row: dict, pid: int = q.pid, side: str = q.side) -> None:
            self._rows.put((pid, side, row))
            if row.get("event") in _STATUS_ROWS and row.get("state") in _ENDED:
                done.set()

        try:
            with contextlib.ExitStack() as stack:
                for src in self._sources(q):
                    if hasattr(src, "tap"):  # pushes its rows: no thread polls it
                        src.buffer = False
                        src.tap(push)
                    stack.enter_context(src)
                    m.sources.append(src)
                    if hasattr(src, "poll_now"):
                        with self._lock:
                            m.polled.append(src)
                    elif not hasattr(src, "tap"):
                        self._pump(m, src)
                if not until_done:
                    m.stop.wait()
                    return
                while not (m.stop.is_set() or done.is_set()):
                    m.stop.wait(0.2)
                m.stop.wait(LINGER_S)  # the final query-migrate and log lines
                with self._lock:
                    polled, m.polled = m.polled, []
                for src in polled:
                    self._read(m, src)
        except Exception as e:  # its monitor refused, libvirt said no...: BPF goes on
            m.problem = str(e)
            self.notify(f"{q.label} (pid {q.pid}): {e}")
            if until_done:
                m.stop.wait(1.0 / max(self.qmp_hz, 0.01))
        finally:
            m.sources.clear()

    def _pump(self, m: Member, src: Source) -> None:
        """A source of another kind: a thread of its own reads its batches."""
        def run() -> None:
            try:
                for batch in src.batches(m.stop):
                    if len(batch):
                        self._frames.put(_tag(batch, m.qemu.pid, m.qemu.side))
            except Exception as e:
                log.warning("%s (pid %d): %s: %s", m.qemu.label, m.qemu.pid, src.name, e)

        t = threading.Thread(target=run, name=f"qemu-{m.qemu.pid}-{src.name}", daemon=True)
        t.start()
        self._threads.append(t)

    def _read(self, m: Member, src: Any) -> None:
        try:
            for f in src.poll_now():
                self._frames.put(_tag(f, m.qemu.pid, m.qemu.side))
        except Exception as e:  # a log that went away with its QEMU
            log.debug("%s: %s", src.name, e)

    def _run_bpf(self, stop: threading.Event) -> None:
        try:
            for batch in self.bpf.batches(stop):
                if len(batch):
                    self._frames.put(batch)
        except Exception as e:
            self.failed["bpf"] = str(e)
            self.notify(f"bpf failed: {e}")

    # ---------------------------------------------------------------- the stream
    def _scan(self) -> None:
        """Follow the QEMUs that appeared, let go of those that went."""
        assert self.discovery is not None
        appeared, gone = self.discovery.scan()
        again = {q.pid for q in appeared}
        for q in gone:
            if q.pid not in again:
                self.remove(q.pid, wait=False)
        for q in appeared:
            old = self.members.get(q.pid)
            if old is not None and old.qemu.start == q.start:
                # the same process under a new name (libvirt listed its domain): its own
                # sources again, its place in the BPF set kept
                with self._lock:
                    self.members[q.pid] = m = Member(q)
                self._let_go(old, wait=True)
                self._start(m)
            else:
                if old is not None:
                    self.remove(q.pid)
                self.add(q)

    def _exits(self) -> None:
        """Fixed targets: let go of those that have exited."""
        for pid in [p for p in list(self.members) if not pid_alive(p)]:
            self.notify(f"QEMU pid {pid} exited")
            self.remove(pid, wait=False)

    def _take(self) -> list[pd.DataFrame]:
        """Everything that arrived: pushed rows (one frame), pumped and read frames (each as
        it came: joining frames costs more than handing them on one by one)."""
        frames = []
        rows = []
        while True:
            try:
                pid, side, row = self._rows.get_nowait()
            except queue.Empty:
                break
            rows.append({**row, "pid": pid, "side": row.get("side") or side})
        if rows:
            frames.append(rows_to_frame(rows))
        while True:
            try:
                frames.append(self._frames.get_nowait())
            except queue.Empty:
                break
        return frames

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        if self.bpf is not None:
            t = threading.Thread(target=self._run_bpf, args=(stop,), daemon=True, name="src-bpf")
            t.start()
            self._threads.append(t)
        next_scan = time.monotonic() + self.scan_s
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_scan or (self.wake is not None and self.wake.is_set()):
                next_scan = now + self.scan_s
                if self.discovery is not None:
                    self._scan()
                else:
                    self._exits()
                    if not self.members:
                        break  # every given QEMU has gone
            with self._lock:
                polled = [(m, s) for m in self.members.values() for s in m.polled]
            for m, src in polled:
                self._read(m, src)
            yield from self._take() or [pd.DataFrame()]  # a heartbeat when nothing came
            stop.wait(self.tail_s)
        # the members' last rows: their logs read once more, their taps flushed on detach
        for m in list(self.members.values()):
            self._let_go(m, wait=True)
        for t in self._threads:
            t.join(timeout=5)
        yield from self._take()

    def close(self) -> None:
        self._stop.set()
        for pid in list(self.members):
            self.remove(pid)
        if self.bpf is not None:
            self.bpf.close()

    # ---------------------------------------------------------------- what it follows
    def followed(self) -> list[Member]:
        """Every QEMU followed now, then those that have gone within ``keep_gone_s``."""
        now = time.monotonic()
        with self._lock:
            for pid in [p for p, m in self.left.items()
                        if p in self.members or now - (m.left_at or now) > self.keep_gone_s]:
                del self.left[pid]
            return [*self.members.values(), *self.left.values()]

    def health(self) -> dict[str, Any]:
        h: dict[str, Any] = {"source": self.name, "failed": dict(self.failed)}
        if self.bpf is not None:
            h["bpf"] = self.bpf.health()
        elif self.bpf_problem:
            h["bpf_problem"] = self.bpf_problem
        h["qemus"] = {m.qemu.pid: {"label": m.qemu.label, "side": m.qemu.side,
                                    "sources": {s.name: s.health() for s in list(m.sources)},
                                    "problem": m.problem}
                      for m in self.followed()}
        if self.discovery is not None:
            h["scans"] = self.discovery.scans
        return h


def describe_start() -> int:
    """This process's start time in clock ticks after boot (as a ``Qemu.start``)."""
    return start_ticks(Path("/proc"), os.getpid()) or 0


def _tag(batch: pd.DataFrame, pid: int, side: str) -> pd.DataFrame:
    """Rows of one QEMU's own sources carry its pid (QMP and libvirt rows come without)."""
    if "pid" in batch and batch["pid"].notna().all():
        return batch
    out = batch.copy()
    out["pid"] = out["pid"].fillna(pid)
    return out
