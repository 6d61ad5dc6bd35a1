"""libvirt domains as a live source: QMP through libvirt's passthrough, its events, its job stats.

libvirt owns a domain's QMP monitor, so nothing here ever opens QEMU's socket. Instead:

* commands go through ``virDomainQemuMonitorCommand`` (``execute``/``hmp``; libvirt then
  marks the domain *tainted* by monitor passthrough until it restarts: ``note`` says so once);
* QEMU's monitor events (MIGRATION, MIGRATION_PASS, STOP, RESUME, ...) arrive through
  ``virConnectDomainQemuMonitorEventRegister`` and become the same rows the QMP source makes
  (``profiler.sources.qmp.event_row``), as do ``query-migrate`` polls (10 Hz) and the
  migration parameters (1 Hz, on change);
* libvirt's own view comes as ``libvirt_job`` rows (``MIGRATION_ITERATION``,
  ``JOB_COMPLETED`` and ``virDomainGetJobStats`` once a second while a job runs, typed
  parameters under libvirt's names, ``vfio_data_transferred`` included where libvirt has it)
  and ``libvirt_lifecycle`` rows (suspended:migrated, resumed:migrated, stopped:destroyed...).

A domain receiving an incoming migration is special: libvirt holds its monitor for the
whole job, and a passthrough command would wait up to 30 s for it. The source therefore
sends no command to such a domain (events still arrive) until it runs.

``resolve_domain`` checks a URI and domain name up front and finds QEMU's pid and the log
libvirt writes QEMU's stderr to; every failure is one ``LibvirtError`` line (exit 2).
libvirt-python is imported only in this module and ``profiler.lab.libvirt``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from profiler import events as ev
from profiler.errors import MigprofError, SetupError
from profiler.events import rows_to_frame
from profiler.sources.base import Source
from profiler.sources.qmp import (
    FINAL_STATUSES,
    QmpGone,
    QmpRefused,
    event_row,
    params_row,
    query_row,
)

log = logging.getLogger(__name__)

DEFAULT_URI = "qemu:///system"
# where libvirt's QEMU driver sends each domain's stderr (virtlogd), seen from QEMU's root
QEMU_LOG_DIR = "var/log/libvirt/qemu"
# lifecycle ends that are the expected end of a run on the source side
_NORMAL_ENDS = {"stopped:migrated"}
# how long a stopped source waits for libvirt's JOB_COMPLETED after a completed migration
COMPLETION_WAIT_S = 2.0


class LibvirtError(MigprofError):
    """libvirt said no (not running, refused, unknown domain, not allowed, ...)."""


def libvirt_modules() -> tuple[Any, Any]:
    """``libvirt`` and ``libvirt_qemu``, or a SetupError saying how to get them."""
    try:
        import libvirt
        import libvirt_qemu
    except ImportError as e:
        raise SetupError(
            f"libvirt-python is missing ({e}); install it with `bash scripts/run.sh setup` "
            "(Debian's python3-libvirt, linked into .venv)") from None
    # libvirt prints every error to stderr by default; migprof says it once, its way
    libvirt.registerErrorHandler(_silent, None)
    return libvirt, libvirt_qemu


def _silent(_ctx: Any, _err: Any) -> None:
    """libvirt error handler that prints nothing (the exception carries the message)."""


_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


def start_event_loop() -> None:
    """libvirt's default event loop, once per process, in a daemon thread.

    It must exist before a connection is opened for that connection to deliver events.
    """
    global _loop_thread
    lv, _ = libvirt_modules()
    with _loop_lock:
        if _loop_thread is not None:
            return
        lv.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                if lv.virEventRunDefaultImpl() < 0:
                    time.sleep(0.1)

        _loop_thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
        _loop_thread.start()


def explain(e: Exception, uri: str, name: str | None = None) -> str:
    """One line for a libvirt error: what went wrong and what to do."""
    lv, _ = libvirt_modules()
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    code = e.get_error_code() if isinstance(e, lv.libvirtError) else None
    if code == lv.VIR_ERR_SYSTEM_ERROR:
        if "Permission denied" in msg:
            return f"{uri}: not allowed to connect: {msg} (run as root, or as a user libvirt admits)"
        local = urllib.parse.urlparse(uri).hostname is None  # a UNIX socket on this host
        if "No such file" in msg or (local and "Connection refused" in msg):
            return (f"libvirt is not running at {uri}: {msg} (start libvirtd or virtqemud, "
                    "or pass -c URI)")
        return f"{uri}: libvirt refused the connection: {msg}"
    if code in (lv.VIR_ERR_AUTH_FAILED, lv.VIR_ERR_AUTH_UNAVAILABLE, lv.VIR_ERR_OPERATION_DENIED,
                getattr(lv, "VIR_ERR_ACCESS_DENIED", -1)):
        return (f"{uri}: not allowed: {msg} (migprof needs a read-write connection that may "
                "use QEMU monitor passthrough: root, or polkit/ACL rights for it)")
    if code == lv.VIR_ERR_NO_DOMAIN:
        return f"{uri}: no domain {name!r} (`virsh -c {uri} list --all` shows the domains)"
    if code in (lv.VIR_ERR_NO_CONNECT, lv.VIR_ERR_INVALID_ARG, lv.VIR_ERR_NO_SUPPORT):
        return f"{uri}: libvirt refused the URI: {msg}"
    if code == lv.VIR_ERR_OPERATION_INVALID and "not running" in msg:
        return f"domain {name!r} at {uri} is not running"
    return f"{uri}: {msg}"


def connect(uri: str) -> Any:
    """A read-write connection, or a LibvirtError line."""
    lv, _ = libvirt_modules()
    try:
        return lv.open(uri)
    except lv.libvirtError as e:
        raise LibvirtError(explain(e, uri)) from None


def _enum_names(prefix: str) -> dict[int, str]:
    lv, _ = libvirt_modules()
    out: dict[int, str] = {}
    for k in dir(lv):
        if k.startswith(prefix) and k[len(prefix):] and "_" not in k[len(prefix):] \
                and not k.endswith("LAST"):
            out.setdefault(getattr(lv, k), k[len(prefix):].lower())
    return out


def lifecycle_name(event: int, detail: int) -> str:
    """``stopped:migrated`` for (VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_MIGRATED)."""
    events = _enum_names("VIR_DOMAIN_EVENT_")
    ev_name = events.get(event, str(event))
    details = _enum_names(f"VIR_DOMAIN_EVENT_{ev_name.upper()}_")
    return f"{ev_name}:{details.get(detail, str(detail))}"


# ---------------------------------------------------------------- rows


def job_row(side: str, params: Mapping[str, Any], state: str, t_ns: int | None = None
            ) -> dict[str, Any]:
    """Row for libvirt's job statistics (typed parameters, keys as libvirt names them)."""
    t = t_ns if t_ns is not None else time.time_ns()
    el = params.get("time_elapsed")
    return {
        "t_ns": t, "clock_ns": t, "clock": ev.Clock.REALTIME, "side": side,
        "origin": ev.Origin.LIBVIRT, "event": ev.LIBVIRT_JOB, "state": state,
        "detail": json.dumps(dict(params), sort_keys=True),
        "dirty_syncs": params.get("memory_iteration"),
        "bytes": params.get("data_processed"),
        "dur_ns": int(el) * 1_000_000 if isinstance(el, int) else None,
    }


def lifecycle_row(side: str, event: int, detail: int, t_ns: int | None = None) -> dict[str, Any]:
    """Row for a domain lifecycle event, stamped when migprof received it."""
    t = t_ns if t_ns is not None else time.time_ns()
    return {
        "t_ns": t, "clock_ns": t, "clock": ev.Clock.REALTIME, "side": side,
        "origin": ev.Origin.LIBVIRT, "event": ev.LIBVIRT_LIFECYCLE,
        "state": lifecycle_name(event, detail),
        "detail": json.dumps({"event": event, "detail": detail}),
    }


# ---------------------------------------------------------------- the target


@dataclass(frozen=True, slots=True)
class DomainTarget:
    """A running libvirt domain and where its QEMU is."""

    uri: str
    name: str
    uuid: str
    pid: int
    side: str
    log_file: str | None  # libvirt's log of QEMU's stderr (through /proc/PID/root)
    incoming: bool  # receiving a migration: libvirt holds the monitor until it ends


def _incoming(dom: Any) -> bool:
    """True while the domain is the destination of a migration (no passthrough then)."""
    lv, _ = libvirt_modules()
    try:
        dom.jobStats()
    except lv.libvirtError as e:
        # libvirt keeps migration statistics on the source only
        return e.get_error_code() == lv.VIR_ERR_OPERATION_UNSUPPORTED
    state, reason = dom.state()
    return state == lv.VIR_DOMAIN_PAUSED and reason in (
        lv.VIR_DOMAIN_PAUSED_MIGRATION, getattr(lv, "VIR_DOMAIN_PAUSED_STARTING_UP", -1))


def _tgid(tid: int) -> int | None:
    try:
        for line in Path(f"/proc/{tid}/status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def pids_by_uuid(uuid: str) -> list[tuple[int, bool]]:
    """QEMU processes started with ``-uuid UUID``: (pid, has -incoming), oldest first."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-uuid" in argv and uuid.encode() in argv and b"qemu" in argv[0]:
            out.append((int(d.name), b"-incoming" in argv))
    return sorted(out)


def find_pid(dom: Any, incoming: bool) -> int:
    """QEMU's pid, through libvirt: the thread group of a vCPU thread (``query-cpus-fast``).

    A domain receiving a migration cannot be asked (libvirt holds its monitor): then the
    QEMU started with this domain's ``-uuid`` and ``-incoming``.
    """
    lv, lq = libvirt_modules()
    if not incoming:
        try:
            reply = json.loads(lq.qemuMonitorCommand(dom, '{"execute":"query-cpus-fast"}', 0))
            for cpu in reply.get("return") or []:
                pid = _tgid(int(cpu.get("thread-id", 0)))
                if pid:
                    return pid
        except (lv.libvirtError, ValueError, TypeError) as e:
            if isinstance(e, lv.libvirtError):
                raise LibvirtError(explain(e, dom.connect().getURI(), dom.name())) from None
    cands = [pid for pid, inc in pids_by_uuid(dom.UUIDString()) if inc == incoming or not incoming]
    if not cands:
        raise LibvirtError(f"domain {dom.name()!r}: its QEMU process is not visible here "
                           "(libvirt on another host, or in another pid namespace?)")
    return cands[-1]


_held_logs: dict[str, int] = {}  # other-namespace logs kept open: path -> our fd


def libvirt_log(pid: int, name: str) -> str | None:
    """Where libvirt writes this QEMU's stderr. In our own mount namespace that is
    /var/log/libvirt/qemu/NAME.log. A daemon in a mount namespace of its own (the lab's)
    writes it where only QEMU's root (/proc/PID/root/...) shows it, a path that dies with
    QEMU; migprof then holds the file open and reads it as /proc/self/fd/N, which lasts
    as long as migprof does (but follows no rotation). None when there is no such log."""
    try:
        same = os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    except OSError:
        same = False
    if same:
        p = f"/{QEMU_LOG_DIR}/{name}.log"
        return p if os.path.exists(p) else None
    p = f"/proc/{pid}/root/{QEMU_LOG_DIR}/{name}.log"
    if p not in _held_logs:
        try:
            _held_logs[p] = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
    return f"/proc/self/fd/{_held_logs[p]}"


def resolve_domain(uri: str | None, name: str, side: str | None = None) -> DomainTarget:
    """Check the URI and domain, find QEMU's pid and log; LibvirtError lines otherwise."""
    uri = uri or DEFAULT_URI
    lv, _ = libvirt_modules()
    conn = connect(uri)
    try:
        try:
            dom = conn.lookupByName(name)
            active = dom.isActive()
        except lv.libvirtError as e:
            raise LibvirtError(explain(e, uri, name)) from None
        if not active:
            raise LibvirtError(f"domain {name!r} at {uri} is not running "
                               f"(start it with: virsh -c {uri} start {name})")
        incoming = _incoming(dom)
        pid = find_pid(dom, incoming)
        return DomainTarget(uri=uri, name=name, uuid=dom.UUIDString(), pid=pid,
                            side=side or ("destination" if incoming else "source"),
                            log_file=libvirt_log(pid, name), incoming=incoming)
    finally:
        with contextlib.suppress(Exception):
            conn.close()


class DomainWatch:
    """libvirt's running domains by UUID (``domains()``, UUID -> name), listed again only after
    a lifecycle event said something started or stopped (``changed`` is set then). Listing
    uses no monitor passthrough: no domain is marked tainted. Entering raises LibvirtError
    (one line) when libvirt does not answer at ``uri``."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or DEFAULT_URI
        self.conn: Any = None
        self.changed = threading.Event()
        self._cb: int | None = None
        self._names: dict[str, str] = {}
        self._stale = True
        self.lists = 0

    def __enter__(self) -> DomainWatch:
        lv, _ = libvirt_modules()
        start_event_loop()
        self.conn = connect(self.uri)
        try:
            self._cb = self.conn.domainEventRegisterAny(None, lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                        self._on_lifecycle, None)
        except lv.libvirtError as e:
            self.close()
            raise LibvirtError(explain(e, self.uri)) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_lifecycle(self, _conn: Any, _dom: Any, _event: int, _detail: int, _opaque: Any) -> None:
        self._stale = True
        self.changed.set()

    def domains(self) -> dict[str, str]:
        """Running domains: lower-case UUID -> name (the last list when libvirt fails now)."""
        if self.conn is None or not self._stale:
            return self._names
        lv, _ = libvirt_modules()
        self._stale = False
        self.changed.clear()
        try:
            doms = self.conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            self._names = {d.UUIDString().lower(): d.name() for d in doms}
            self.lists += 1
        except lv.libvirtError as e:
            log.warning("listing libvirt domains at %s: %s", self.uri, explain(e, self.uri))
            self._stale = True
        return self._names

    def close(self) -> None:
        if self.conn is None:
            return
        lv, _ = libvirt_modules()
        if self._cb is not None:
            with contextlib.suppress(lv.libvirtError):
                self.conn.domainEventDeregisterAny(self._cb)
            self._cb = None
        with contextlib.suppress(lv.libvirtError):
            self.conn.close()
        self.conn = None


# ---------------------------------------------------------------- the Source


class LibvirtSource(Source):
    """One libvirt domain as a live event source, with QMP control through libvirt.

    ``execute(side, cmd, args)`` has the signature of ``QmpSource.execute``, so trace
    control written for QMP drives a domain unchanged. ``wait_s`` > 0 waits that long for
    the domain to appear and run (a migration destination that libvirt has yet to create);
    entering then returns at once and the poller starts when the domain is there.
    """

    name = "libvirt"

    def __init__(self, uri: str | None, domain: str, side: str = "source", poll_hz: float = 10.0,
                 params_hz: float = 1.0, job_hz: float = 1.0, wait_s: float = 0.0,
                 note: Callable[[str], None] | None = None):
        self.uri = uri or DEFAULT_URI
        self.domain = domain
        self.side = side
        self.poll_s = 1.0 / poll_hz if poll_hz > 0 else 0.0
        self.params_s = 1.0 / params_hz if params_hz > 0 else 0.0
        self.job_s = 1.0 / job_hz if job_hz > 0 else 0.0
        self.wait_s = wait_s
        self.note = note or (lambda m: print(f"migprof: {m}", file=sys.stderr, flush=True))
        self.conn: Any = None
        self.dom: Any = None
        self.uuid: str | None = None
        self.incoming = False
        self._q: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._cb_ids: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._appeared = threading.Event()
        self._problem: str | None = None
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()  # one passthrough at a time, in order
        self._tainted_told = False
        self.status = "none"
        self._status_event_ns = 0  # QEMU's stamp of the last MIGRATION event
        self.seen_migration = False
        self.last_reply: dict[str, Any] | None = None
        self.last_params: dict[str, Any] | None = None
        self.completed_job: dict[str, Any] | None = None  # JOB_COMPLETED's parameters
        self.last_job: dict[str, Any] | None = None  # last active job statistics
        self.ended: str | None = None  # lifecycle that ended the domain, e.g. stopped:migrated
        self.polls = 0
        self.events = 0
        self.errors = 0
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._taps: tuple[Callable[[dict[str, Any]], None], ...] = ()
        self.buffer = True  # False: rows go to taps only (batches() then yields nothing)

    # -- plumbing
    def _emit(self, row: dict[str, Any]) -> None:
        with self._seq_lock:
            self._seq += 1
            row.setdefault("seq", self._seq)
        if self.buffer:
            self._q.put(row)
        for tap in self._taps:
            tap(row)

    def tap(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Also hand every row to ``fn`` (on libvirt's event thread or the poller)."""
        self._taps = (*self._taps, fn)

    # -- callbacks (libvirt's event-loop thread: quick, no libvirt calls)
    def _mine(self, dom: Any) -> bool:
        return dom is not None and dom.name() == self.domain

    def _on_monitor(self, _conn: Any, dom: Any, event: str, sec: int, usec: int,
                    details: str | None, _opaque: Any) -> None:
        if not self._mine(dom):
            return
        self.events += 1
        try:
            data = json.loads(details) if details else {}
        except ValueError:
            data = {"raw": details}
        msg = {"event": event, "data": data,
               "timestamp": {"seconds": sec, "microseconds": usec}}
        self._emit(event_row(self.side, msg, time.time_ns()))
        if event == "MIGRATION":
            self._status_event_ns = sec * 1_000_000_000 + usec * 1000
            self._note_status(data.get("status"))
            self._wake.set()  # poll now: the final counters
        elif event == "RESUME" and self.incoming:
            self.incoming = False
            self._wake.set()

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        if not self._mine(dom):
            return
        row = lifecycle_row(self.side, event, detail)
        self._emit(row)
        state = row["state"]
        if state.startswith(("started:", "resumed:", "defined:")):
            self._appeared.set()
        if state.startswith("resumed:") and self.incoming:
            self.incoming = False
        if state.startswith(("stopped:", "crashed:")):
            self.ended = state
            self._wake.set()

    def _on_job_completed(self, _conn: Any, dom: Any, params: dict[str, Any], _opaque: Any) -> None:
        if not self._mine(dom):
            return
        self.completed_job = dict(params)
        self._emit(job_row(self.side, params, "completed"))

    def _on_iteration(self, _conn: Any, dom: Any, iteration: int, _opaque: Any) -> None:
        if not self._mine(dom):
            return
        self._emit(job_row(self.side, {"memory_iteration": iteration}, "iteration"))

    def _note_status(self, status: str | None) -> None:
        if status and status != self.status:
            self.status = status
            if status != "none":
                self.seen_migration = True

    # -- attach
    def __enter__(self) -> LibvirtSource:
        lv, lq = libvirt_modules()
        start_event_loop()
        self.conn = connect(self.uri)
        try:
            found = self._find_domain(lv)
            if not found and not self.wait_s:
                raise LibvirtError(self._problem or f"no domain {self.domain!r}")
            self._register(lv, lq, self.dom if found else None)
        except BaseException:
            self.close()
            raise
        self._worker = threading.Thread(target=self._run, name=f"libvirt-{self.side}", daemon=True)
        self._worker.start()
        return self

    def _register(self, lv: Any, lq: Any, dom: Any) -> None:
        """Callbacks for this domain; connection-wide (``dom`` None) for a destination that
        does not exist yet (the callbacks then skip other domains' events by name)."""
        c = self.conn
        self._cb_ids.append(("qemu", lq.qemuMonitorEventRegister(c, dom, None, self._on_monitor,
                                                                  None, 0)))
        for eid, cb in ((lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle),
                        (lv.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_job_completed),
                        (lv.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, self._on_iteration)):
            self._cb_ids.append(("domain", c.domainEventRegisterAny(dom, eid, cb, None)))

    def _find_domain(self, lv: Any) -> bool:
        """Look the domain up (once); True when it is there and running."""
        try:
            dom = self.conn.lookupByName(self.domain)
            if not dom.isActive():
                self._problem = f"domain {self.domain!r} at {self.uri} is not running"
                return False
        except lv.libvirtError as e:
            if e.get_error_code() != lv.VIR_ERR_NO_DOMAIN:
                raise LibvirtError(explain(e, self.uri, self.domain)) from None
            self._problem = explain(e, self.uri, self.domain)
            return False
        self.incoming = _incoming(dom)
        self.uuid = dom.UUIDString()
        self.dom = dom
        return True

    def _wait_domain(self, lv: Any) -> bool:
        """Wait up to ``wait_s`` for the domain (a migration destination libvirt has yet
        to create); the connection-wide callbacks record its events meanwhile."""
        end = time.monotonic() + self.wait_s
        while not self._stop.is_set():
            try:
                if self._find_domain(lv):
                    return True
            except LibvirtError as e:
                self._problem = str(e)
                return False
            if time.monotonic() >= end:
                return False
            self._appeared.wait(0.05)
            self._appeared.clear()
        return False

    # -- control (any thread)
    def _tell_taint(self) -> None:
        if not self._tainted_told:
            self._tainted_told = True
            self.note(f"note: libvirt marks domain {self.domain!r} as tainted (custom-monitor) "
                      "because migprof speaks QMP through it; the mark stays until the domain "
                      "restarts")

    def monitor_busy(self) -> bool:
        """True while libvirt holds the monitor (incoming migration): commands would wait."""
        return self.incoming

    def execute(self, side: str, cmd: str, args: Mapping[str, Any] | None = None,
                timeout: float = 30.0) -> Any:
        """A QMP command through libvirt; QmpRefused when QEMU says no, QmpGone when the
        domain has gone. (``side`` is accepted for QmpSource's signature; ``timeout`` is
        libvirt's own: it waits up to 30 s for the domain's job lock.)"""
        lv, lq = libvirt_modules()
        if self.dom is None:
            raise QmpGone(f"{self.side}: domain {self.domain!r} is not attached")
        if self.incoming:
            raise QmpGone(f"{self.side}: domain {self.domain!r} is receiving a migration; "
                          "libvirt holds its monitor until the migration ends")
        body = {"execute": cmd, **({"arguments": dict(args)} if args else {})}
        self._tell_taint()
        try:
            with self._lock:
                raw = lq.qemuMonitorCommand(self.dom, json.dumps(body), 0)
        except lv.libvirtError as e:
            self.errors += 1
            raise QmpGone(f"{self.side}: {explain(e, self.uri, self.domain)} (during {cmd})"
                          ) from None
        reply = json.loads(raw)
        if "error" in reply:
            err = reply["error"] or {}
            what = f"{cmd} {json.dumps(dict(args), sort_keys=True)}" if args else cmd
            raise QmpRefused(f"QEMU (libvirt domain {self.domain}, {self.side}) refused {what}: "
                             f"{err.get('class')}: {err.get('desc')}")
        return reply.get("return")

    def hmp(self, command: str) -> str:
        """An HMP command line through libvirt (``human-monitor-command``)."""
        return str(self.execute(self.side, "human-monitor-command", {"command-line": command}))

    def job_stats(self, completed: bool = False) -> dict[str, Any]:
        """``virDomainGetJobStats`` (typed parameters as libvirt names them, with ``type``)."""
        lv, _ = libvirt_modules()
        flags = lv.VIR_DOMAIN_JOB_STATS_COMPLETED if completed else 0
        try:
            return dict(self.dom.jobStats(flags))
        except lv.libvirtError as e:
            raise LibvirtError(explain(e, self.uri, self.domain)) from None

    # -- the poller
    def _run(self) -> None:
        lv, _ = libvirt_modules()
        if self.dom is None and not self._wait_domain(lv):
            log.info("%s: %s", self.side, self._problem)
            return
        next_params = next_job = 0.0
        while not self._stop.is_set() and self.ended is None:
            now = time.monotonic()
            try:
                if not self.incoming:
                    self._poll_migrate()
                    if self.params_s and now >= next_params:
                        next_params = now + self.params_s
                        self._poll_params()
                if self.job_s and now >= next_job and self.side == "source" \
                        and self.status not in ("none", *FINAL_STATUSES):
                    next_job = now + self.job_s
                    self._poll_job(lv)
            except (QmpGone, LibvirtError) as e:
                log.debug("%s: poll: %s", self.side, e)
                if not self._alive(lv):
                    break
            except QmpRefused as e:
                log.debug("%s: poll refused: %s", self.side, e)
            self._wake.wait(self.poll_s or 0.5)
            self._wake.clear()

    def _alive(self, lv: Any) -> bool:
        try:
            return bool(self.dom.isActive())
        except lv.libvirtError:
            return False

    def _poll_migrate(self) -> None:
        asked = time.time_ns()
        reply = self.execute(self.side, "query-migrate")
        t = time.time_ns()
        if not isinstance(reply, dict):
            return
        self.polls += 1
        status = reply.get("status", "none")
        if status != "none" or self.seen_migration:
            self._emit(query_row(self.side, reply, t))
        self.last_reply = reply
        # a MIGRATION event QEMU sent while this reply was on its way is newer than it:
        # the reply must not take its status back (cancelled -> active)
        if self._status_event_ns < asked:
            self._note_status(status)

    def _poll_params(self) -> None:
        params = self.execute(self.side, "query-migrate-parameters")
        if isinstance(params, dict) and params != self.last_params:
            self.last_params = params
            self._emit(params_row(self.side, params, why="read"))

    def _poll_job(self, lv: Any) -> None:
        try:
            stats = dict(self.dom.jobStats(0))
        except lv.libvirtError:
            return
        if stats.get("type", 0) != lv.VIR_DOMAIN_JOB_NONE:
            self.last_job = stats
            self._emit(job_row(self.side, stats, "active"))

    # -- Source
    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        grace: float | None = None  # when a stop or the domain's end began the last drain
        while True:
            rows = []
            try:
                rows.append(self._q.get(timeout=0.1))
                while len(rows) < 5000:
                    rows.append(self._q.get_nowait())
            except queue.Empty:
                pass
            if rows:
                yield rows_to_frame(rows)
                continue
            ended = self.ended is not None and (self._worker is None or not self._worker.is_alive())
            if not (stop.is_set() or ended):
                yield pd.DataFrame()
                continue
            grace = grace if grace is not None else time.monotonic()
            if not self._awaits_completion() or time.monotonic() - grace > COMPLETION_WAIT_S:
                return

    def _awaits_completion(self) -> bool:
        """libvirt sends JOB_COMPLETED on the source after the domain has stopped: a
        migration that completed is worth waiting a moment for its statistics."""
        return self.side == "source" and self.status == "completed" and self.completed_job is None

    def end_problem(self) -> str | None:
        """One line when the domain ended in a way that cut the run short (not migrated)."""
        if self.ended is None or self.ended in _NORMAL_ENDS:
            return None
        return (f"domain {self.domain!r} at {self.uri} ended mid-run ({self.ended}); "
                "events up to then are kept")

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=35)  # a passthrough in flight finishes first
            self._worker = None
        if self.conn is not None:
            lv, lq = libvirt_modules()
            for kind, cid in self._cb_ids:
                with contextlib.suppress(lv.libvirtError):
                    if kind == "qemu":
                        lq.qemuMonitorEventDeregister(self.conn, cid)
                    else:
                        self.conn.domainEventDeregisterAny(cid)
            self._cb_ids = []
            with contextlib.suppress(lv.libvirtError):
                self.conn.close()
            self.conn = None

    def health(self) -> dict[str, Any]:
        return {"source": self.name, "uri": self.uri, "domain": self.domain, "side": self.side,
                "polls": self.polls, "events": self.events, "errors": self.errors,
                "ended": self.ended, "incoming": self.incoming}
