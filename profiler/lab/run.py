"""Run one lab migration: two QEMUs, QMP control, scenario actions, a run directory.

``Lab`` is a context manager. Entering removes leftovers of killed runs, builds the
guest, sets up the network (two namespaces joined by a shaped veth, or loopback), starts
the destination (``-incoming defer``) and the source, and connects QMP. ``run()`` plays
the scenario. Leaving stops everything the lab started, on success, error or Ctrl-C.

Run directory layout (what ``migprof report RUNDIR`` reads):

=============================  ==========================================================
``source.log``                 source QEMU trace log (``-D``), ``-msg timestamp=on``
``destination.log``            destination trace log (a retry's destination is appended)
``events.jsonl``               QMP events, query-migrate polls, parameters, lab marks,
                               sock_diag samples: one ``profiler.events`` row per line
``query-migrate-source.json``  the source's final ``query-migrate`` reply
``query-migrate-destination.json``  the destination's (last reply before it died, if killed)
``run.json``                   scenario, QEMU binary/version, parameters, guest args, ...
``serial-*.log``               guest console (progress lines)
=============================  ==========================================================
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from profiler.errors import MigprofError, SetupError
from profiler.events import rows_to_frame
from profiler.lab import qemu as lq
from profiler.lab.guest_build import build_guest
from profiler.lab.scenarios import Scenario
from profiler.qmpctl import QmpControl
from profiler.sources.base import Source
from profiler.sources.jsonl import row_to_json
from profiler.sources.qmp import (
    FINAL_STATUSES,
    QmpGone,
    QmpRefused,
    QmpSource,
    mark_row,
)

log = logging.getLogger(__name__)

SIDES = ("source", "destination")


ON_EVENT_WAIT_S = 2.0  # an action waiting for a trace event acts anyway after this


class TraceWatch:
    """The lines a QEMU trace log (``PID@SEC.USEC:event args``, ``-msg timestamp=on``)
    gains from now on, read as they are written (QEMU flushes each line)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.pos = path.stat().st_size
        except OSError:
            self.pos = 0
        self.rest = b""

    def first(self, event: str, after_ns: int) -> int | None:
        """The stamp (ns) of the first new line of ``event`` stamped at or after ``after_ns``,
        else None (the lines read are consumed)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return None
        self.pos += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        name = event.encode()
        for ln in lines:
            at, colon = ln.find(b"@"), ln.find(b":")
            if at < 0 or colon < at or ln[colon + 1:].split(b" ", 1)[0] != name:
                continue
            sec, _, usec = ln[at + 1:colon].partition(b".")
            try:
                ns = int(sec) * 1_000_000_000 + int(usec.ljust(6, b"0")[:6]) * 1000
            except ValueError:
                continue
            if ns >= after_ns:
                return ns
        return None


@dataclass(slots=True)
class LabConfig:
    scenario: Scenario
    out: Path
    qemu: str | None = None  # version ("7.2", "10.0") or path
    accel: str = "auto"  # auto (KVM only if the probe boots a guest), kvm, tcg
    net: str = "netns"  # netns (two namespaces, veth, tc) or loopback
    poll_hz: float = 10.0
    sockdiag_hz: float = 10.0
    port: int = 0  # migration TCP port; 0 = pick one
    keep_sockets: bool = False


@dataclass(slots=True)
class RunResult:
    run_dir: Path
    status: str  # final source status of the last attempt
    attempts: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, dict[str, Any] | None] = field(default_factory=dict)


class LabStream(Source):
    """The lab's own rows (QMP, marks, sock_diag) as a live Source, in recording order.

    Fed by the run's Recorder, so it survives the QMP reconnect of a retry. Ends once
    the lab says it is finished and everything recorded has been handed out.
    """

    name = "lab"

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.finished = threading.Event()
        self.rows = 0
        # gather for a second: a frame costs a few ms to build, the trace tails deliver
        # at the same pace (profiler.lab.follow.TAIL_S), and the line view is 1 Hz
        self.gather_s = 1.0
        self.idle_s = 0.25  # how soon an idle stream notices it is finished

    def put(self, row: dict[str, Any]) -> None:
        self._q.put(row)

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        while not stop.is_set():
            rows: list[dict[str, Any]] = []
            try:
                rows.append(self._q.get(timeout=self.idle_s))
                end = time.monotonic() + self.gather_s
                while len(rows) < 5000:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    rows.append(self._q.get(timeout=left))
            except queue.Empty:
                pass
            if rows:
                self.rows += len(rows)
                yield rows_to_frame(rows)
            else:
                if self.finished.is_set():
                    return
                yield pd.DataFrame()

    def health(self) -> dict[str, Any]:
        return {"source": self.name, "rows": self.rows}


class Recorder:
    """Writes every non-log row of the run to events.jsonl and hands it to listeners."""

    def __init__(self, path: Path):
        self.path = path
        # line-buffered: the file is the live record others read (tests, tail -f)
        self._fh = path.open("w", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        self.rows = 0
        self.listeners: list[Any] = []

    def add(self, row: dict[str, Any]) -> None:
        line = row_to_json(row)
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(line + "\n")
            self.rows += 1
        for fn in self.listeners:
            fn(row)

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """Two QEMUs and everything around them for one scenario."""

    def __init__(self, cfg: LabConfig):
        self.cfg = cfg
        self.sc = cfg.scenario
        self.tag = lq.owner_tag()
        self._owner = os.getpid()
        self.run_dir = cfg.out
        self.binary: lq.QemuBinary | None = None
        self.kernel: Path | None = None
        self.accel = "tcg"
        self.procs: dict[str, lq.QemuProcess] = {}
        self.qmp: QmpSource | None = None
        self.ctl: QmpControl | None = None  # commands over self.qmp's connections
        self.net: Any = None
        self.recorder: Recorder | None = None
        self.uri = ""
        self.dst_host = "127.0.0.1"
        self.port = cfg.port
        self.t_migrate_ns: int | None = None
        self.attempts: list[dict[str, Any]] = []
        self._stack = contextlib.ExitStack()
        self._retry_logs: list[Path] = []
        self.sockdiag: Any = None
        self.stream = LabStream()
        self._written = False

    # ---------------------------------------------------------------- set-up
    def __enter__(self) -> Lab:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and os.getpid() == self._owner:
            with contextlib.suppress(Exception):
                self._write_unfinished(exc_type, exc)
        self.close()

    def _write_unfinished(self, exc_type: Any, exc: Any) -> None:
        """An interrupted or failed run still leaves run.json (and what QMP last said), so
        `migprof report` reads what was captured."""
        if self._written or self.binary is None or self.t_migrate_ns is None:
            return
        status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "error"
        last = {s: (self.ctl.last_reply(s) if self.ctl else None) for s in SIDES}
        self.attempts.append({"status": status, "final": last, "last_counters": self._counters()})
        self._write_final(last, status)
        info = json.loads((self.run_dir / "run.json").read_text())
        info["error"] = f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__
        (self.run_dir / "run.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    def _setup(self) -> None:
        sc, cfg = self.sc, self.cfg
        if sc.needs_netns and cfg.net != "netns":
            raise MigprofError(f"scenario {sc.name!r} shapes the link: it needs --net netns")
        cleanup_leftovers()
        self.binary = lq.find_qemu(cfg.qemu)
        self.kernel = build_guest()
        self.accel = self._pick_accel()
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise MigprofError(f"{self.run_dir}: output directory exists and is not empty")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.recorder = Recorder(self.run_dir / "events.jsonl")
        self.recorder.listeners.append(self.stream.put)
        if cfg.net == "netns":
            from profiler.lab.net import LabNet

            self.net = self._stack.enter_context(LabNet(self.tag, shaping=sc.shaping))
            self.dst_host = self.net.dst_addr
        elif cfg.net != "loopback":
            raise MigprofError(f"--net {cfg.net!r}: choose netns or loopback")
        if not self.port:
            self.port = 4444 if cfg.net == "netns" else _free_port()
        self.uri = f"tcp:{self.dst_host}:{self.port}"
        self._start_vm("destination")
        self._start_vm("source")
        self._connect()

    def _pick_accel(self) -> str:
        want = self.cfg.accel
        if want == "tcg":
            return "tcg"
        ok = lq.kvm_usable(self.binary, self.kernel)
        if want == "kvm" and not ok:
            raise SetupError(
                "--accel kvm: a guest does not boot under KVM on this host; use --accel tcg"
            )
        log.info("KVM probe: %s", "works" if ok else "guests fail, using TCG")
        return "kvm" if ok else "tcg"

    def _spec(self, side: str) -> lq.VmSpec:
        sc = self.sc
        spec = lq.VmSpec(
            side=side,
            name=f"{lq.NAME_PREFIX}{self.tag}-{side[:3]}",
            kernel=self.kernel,
            append=sc.guest_append(),
            run_dir=self.run_dir,
            mem_mb=sc.mem_mb,
            accel=self.accel,
            timestamps=sc.timestamps,
            trace_events=lq.select_trace_events(
                self.binary, transferred_bytes=sc.transferred_bytes
            ),
            incoming=side == "destination",
            netns=self.net.ns[side] if self.net else None,
            attach_qmp=True,  # qmp-<side>-attach.sock: for `migprof live --qmp` (docs/lab.md)
        )
        return spec

    def _start_vm(self, side: str) -> None:
        self.procs[side] = lq.QemuProcess(self.binary, self._spec(side)).start()

    def _connect(self) -> None:
        for side in SIDES:
            self.procs[side].wait_socket()
        self.qmp = QmpSource(
            {s: str(self.procs[s].spec.qmp_socket) for s in SIDES},
            poll_hz=self.cfg.poll_hz,
            params_hz=1.0,
            reconnect=False,  # a lab QEMU that drops QMP has exited (or was killed)
        )
        self.qmp.tap(self.recorder.add)
        self.qmp.__enter__()
        self.ctl = QmpControl(self.qmp)
        for side in SIDES:
            self.ctl.enable_migration_events(side)

    def mark(self, action: str, side: str = "unknown", **detail: Any) -> None:
        row = mark_row(action, side, **detail)
        if self.qmp is not None:
            self.qmp.emit(row)  # through the QMP stream, so live views see it in order
        elif self.recorder:
            self.recorder.add(row)

    # ---------------------------------------------------------------- the run
    def _start_sockdiag(self) -> None:
        if not self.cfg.sockdiag_hz:
            return
        from profiler.sources.sockdiag import SockDiagSource

        ns = self.net.ns["source"] if self.net else None
        self.sockdiag = SockDiagSource(
            port=self.port, dst=self.dst_host, netns=ns, hz=self.cfg.sockdiag_hz
        )
        qmp = self.qmp

        def emit(rows: list[dict[str, Any]]) -> None:
            for r in rows:  # through the QMP stream: one order, one recorder
                qmp.emit(r)

        self.sockdiag.tap(emit)
        self.sockdiag.__enter__()

    def _stop_sockdiag(self) -> None:
        if self.sockdiag is not None:
            self.sockdiag.close()
            self.sockdiag = None

    def wait_guest(self, timeout: float = 20.0) -> float:
        """Wait for the source guest's ready line, then until it has written its whole
        working set once (so pre-copy starts from a loaded guest). Returns the wait in s."""
        t0 = time.monotonic()
        serial = self.procs["source"].spec.serial_file
        while b"migprof-guest: ready" not in (serial.read_bytes() if serial.exists() else b""):
            if not self.procs["source"].alive():
                raise SetupError(
                    f"source QEMU exited before the guest booted: {self.procs['source'].stderr_tail()}"
                )
            if time.monotonic() - t0 > timeout:
                raise SetupError(
                    f"the lab guest printed no ready line in {timeout} s (see {serial})"
                )
            time.sleep(0.05)
        sc = self.sc
        if sc.dirty_mb and sc.rate_mbps:
            time.sleep(min(3.0, sc.dirty_mb / sc.rate_mbps + 0.2))
        elif sc.dirty_mb:
            time.sleep(0.3)
        return time.monotonic() - t0

    def _migrate(self, params: dict[str, Any]) -> None:
        q = self.ctl
        try:
            q.set_parameters("source", **params)
        except QmpRefused as e:
            raise MigprofError(
                f"{e}; this QEMU lacks that parameter, drop it from the scenario"
            ) from None
        try:
            q.execute(
                "destination", "migrate-incoming", {"uri": f"tcp:{self.dst_host}:{self.port}"}
            )
        except QmpRefused as e:
            raise MigprofError(
                f"{e}; is port {self.port} taken? choose another with --port"
            ) from None
        self.mark("migrate", "source", uri=self.uri, params=params)
        self.t_migrate_ns = time.time_ns()
        q.execute("source", "migrate", {"uri": self.uri})
        self._start_sockdiag()

    def _act(self, a: Any, **why: Any) -> None:
        q = self.ctl
        if a.kind == "set-parameters":
            self.mark("set-parameters", "source", **a.args, **why)
            q.set_parameters("source", **a.args)
        elif a.kind == "shape":
            if self.net is None:
                raise MigprofError("a 'shape' action needs --net netns")
            self.mark("shape", "source", **a.args, **why)
            self.net.shape(**a.args)
        elif a.kind == "kill-destination":
            self.mark("kill-destination", "destination", pid=self.procs["destination"].pid, **why)
            self.procs["destination"].kill()
        elif a.kind == "cancel":
            self.mark("cancel", "source", **why)
            q.execute("source", "migrate_cancel")
        else:
            raise MigprofError(f"unknown lab action {a.kind!r}")

    def _follow(self, actions: tuple, timeout_s: float) -> str:
        """Play actions until the source's migration ends or the timeout cancels it."""
        q = self.ctl
        pending = sorted(actions, key=lambda a: a.at_s)
        t0 = time.monotonic()
        watch = TraceWatch(self.procs["source"].spec.log_file) if any(a.on_event for a in actions) else None
        cancelled = False
        while True:
            st = q.status("source")
            if st in FINAL_STATUSES:
                return st
            gone = q.gone("source")
            if gone or not self.procs["source"].alive():
                raise MigprofError(
                    f"source QEMU went away mid-migration ({gone or 'exited'}): "
                    f"{self.procs['source'].stderr_tail()}"
                )
            el = time.monotonic() - t0
            while pending and pending[0].at_s <= el:
                a = pending[0]
                if a.on_event and watch is not None:
                    # wait for QEMU's own moment: poll its trace log every 2 ms (the lift
                    # then comes 2-5 ms into the window, docs/lab.md)
                    at_ns = (self.t_migrate_ns or 0) + int(a.at_s * 1e9)
                    seen = watch.first(a.on_event, at_ns)
                    if seen is None and el < a.at_s + ON_EVENT_WAIT_S:
                        break
                    pending.pop(0)
                    self._act(a, after_event=a.on_event if seen else None, event_t_ns=seen,
                              **({} if seen else {"late": f"no {a.on_event} in {ON_EVENT_WAIT_S:g} s"}))
                else:
                    self._act(pending.pop(0))
            if not cancelled and el >= timeout_s:
                self.mark("cancel", "source", reason=f"timeout {timeout_s} s")
                q.execute("source", "migrate_cancel")
                cancelled = True
            if el >= timeout_s + 15:
                raise MigprofError(f"migration still {st!r} 15 s after migrate_cancel")
            # 20 Hz: actions are scheduled in tenths of seconds, and the end is also
            # seen by the QMP event and polls, stamped when they arrive
            if pending and pending[0].on_event and pending[0].at_s <= el:
                time.sleep(0.002)
            else:
                time.sleep(0.05 if not pending else min(0.05, max(0.0, pending[0].at_s - el)))

    def _final(self, side: str) -> dict[str, Any] | None:
        proc = self.procs.get(side)
        if proc is None or not proc.alive():
            return self.ctl.last_reply(side) if self.ctl else None
        try:
            return self.ctl.query_migrate(side)
        except (QmpGone, QmpRefused):
            return self.ctl.last_reply(side)

    def _counters(self) -> dict[str, Any]:
        """Per side, the last query-migrate reply that still had RAM counters (a cancelled
        or failed migration's final reply has none)."""
        return {s: self.ctl.last_ram_reply(s) for s in SIDES} if self.ctl else {}

    def _wait_destination(self, timeout: float = 10.0) -> None:
        """After the source completed, the destination finishes loading and runs."""
        try:
            self.ctl.wait_status("destination", FINAL_STATUSES, timeout)
        except (TimeoutError, QmpGone) as e:
            log.info("destination: %s", e)
            return
        # the guest goes on running there: wait for its next progress line (proof of life)
        serial = self.procs["destination"].spec.serial_file
        end = time.monotonic() + 2.0
        while time.monotonic() < end and not (serial.exists() and serial.stat().st_size):
            time.sleep(0.05)

    def trace_logs(self) -> dict[str, Path]:
        """Each side's QEMU trace log while it is written (``profiler.lab.follow`` tails them)."""
        return {side: self.procs[side].spec.log_file for side in ("source", "destination")}

    def run(self) -> RunResult:
        sc = self.sc
        self.wait_guest()
        self._migrate(dict(sc.params))
        status = self._follow(sc.actions, sc.timeout_s)
        self._stop_sockdiag()
        if status == "completed":
            self._wait_destination()
        final = {s: self._final(s) for s in SIDES}
        self.attempts.append({"status": status, "final": final, "last_counters": self._counters()})
        if status == "cancelled" and sc.retry_params is not None:
            final = self._retry(sc.retry_params)
            status = self.attempts[-1]["status"]
        self._write_final(final, status)
        return RunResult(self.run_dir, status, self.attempts, final)

    def _retry(self, params: dict[str, Any]) -> dict[str, Any]:
        """A fresh destination, then migrate again from the same source QEMU."""
        old = self.procs["destination"]
        try:
            old.proc.wait(timeout=10)  # the cancelled incoming side exits by itself
        except Exception:
            old.stop()
        old.stop()
        self.qmp.close()
        self.qmp = self.ctl = None
        retry_log = self.run_dir / "destination-retry.log"
        spec = self._spec("destination")
        spec.log_name = retry_log.name
        self._retry_logs.append(retry_log)
        self.procs["destination"] = lq.QemuProcess(self.binary, spec).start()
        self._connect()
        self.mark("retry", "source", params=params)
        self._migrate(dict(params))
        status = self._follow((), self.sc.timeout_s + 20)
        self._stop_sockdiag()
        if status == "completed":
            self._wait_destination()
        final = {s: self._final(s) for s in SIDES}
        self.attempts.append({"status": status, "final": final, "last_counters": self._counters()})
        return final

    def _write_final(self, final: dict[str, Any], status: str) -> None:
        for side in SIDES:
            (self.run_dir / f"query-migrate-{side}.json").write_text(
                json.dumps(final.get(side), indent=2, sort_keys=True) + "\n"
            )
        sc = self.sc
        params = None
        if self.ctl and self.procs["source"].alive():
            with contextlib.suppress(MigprofError):
                params = self.ctl.read_parameters("source")
        info = {
            "schema": "migprof.lab-run/1",
            "scenario": sc.name,
            "description": sc.description,
            "status": status,
            "expected": sc.expect,
            "attempts": [
                {"status": a["status"], "last_counters": a.get("last_counters")}
                for a in self.attempts
            ],
            "qemu": {
                "path": str(self.binary.path),
                "version": self.binary.short,
                "version_text": self.binary.version_text,
                "qmp_version": self.ctl.version("source") if self.ctl else None,
            },
            "accel": self.accel,
            "net": self.cfg.net,
            "uri": self.uri,
            "guest": {
                "kernel": str(self.kernel),
                "append": sc.guest_append(),
                "dirty_mb": sc.dirty_mb,
                "rate_mbps": sc.rate_mbps,
                "mem_mb": sc.mem_mb,
            },
            "parameters": sc.params,
            "retry_parameters": sc.retry_params,
            "final_parameters": params,
            "actions": [asdict(a) for a in sc.actions],
            "shaping": sc.shaping,
            "timestamps": sc.timestamps,
            "trace_events": lq.select_trace_events(
                self.binary, transferred_bytes=sc.transferred_bytes
            ),
            "migrate_t_ns": self.t_migrate_ns,
            "destination_killed_t_ns": self.procs["destination"].killed_at_ns,
            "poll_hz": self.cfg.poll_hz,
            "host": os.uname().nodename,
        }
        (self.run_dir / "run.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        self._written = True

    # ---------------------------------------------------------------- tear-down
    def close(self) -> None:
        """Stop everything this lab started; safe to call twice, never raises."""
        if os.getpid() != self._owner:
            return  # a forked child (pyroute2 forks helpers) must not tear the lab down
        with contextlib.suppress(Exception):
            self._stop_sockdiag()
        if self.qmp is not None:
            with contextlib.suppress(Exception):
                self.qmp.close()
            self.qmp = self.ctl = None
        for side in ("source", "destination"):
            p = self.procs.get(side)
            if p is not None:
                with contextlib.suppress(Exception):
                    p.stop()
        with contextlib.suppress(Exception):
            self._stack.close()
        if self.recorder is not None:
            self.recorder.close()
        self.stream.finished.set()
        # a retry's destination log joins destination.log: one file, both migrations
        for extra in self._retry_logs:
            if extra.exists():
                with (self.run_dir / "destination.log").open("ab") as out, extra.open("rb") as src:
                    shutil.copyfileobj(src, out)
                extra.unlink()
        self._retry_logs = []
        if self.run_dir.exists():
            for f in self.run_dir.glob("qmp-*.sock"):
                f.unlink(missing_ok=True)
            for f in self.run_dir.glob("trace-events-*.txt"):
                f.unlink(missing_ok=True)
            for f in self.run_dir.glob("stderr-*.log"):
                if f.stat().st_size == 0:
                    f.unlink()


def cleanup_leftovers() -> list[str]:
    """Remove what killed lab runs left behind (their QEMUs, namespaces, links).

    Only objects named by a lab whose owning process is gone are touched.
    """
    removed = []
    strays = lq.find_stray_qemus()
    for pid, name in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        removed.append(f"process {pid} ({name})")
    # SIGKILL is asynchronous: wait until they are gone (or zombies, whose new parent
    # reaps them), so their sockets and files are released before we go on
    end = time.monotonic() + 5
    while strays and time.monotonic() < end:
        strays = [(pid, n) for pid, n in strays if _running(pid)]
        time.sleep(0.02)
    try:
        from profiler.lab.net import cleanup_stale_net

        removed += cleanup_stale_net()
    except ImportError:
        pass
    for r in removed:
        log.warning("removed leftover of a killed lab run: %s", r)
    return removed


@contextlib.contextmanager
def run_guarded() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C (KeyboardInterrupt) while the lab runs, so every exit
    path goes through ``Lab.close``; restored afterwards."""
    global _MAIN_PID
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _MAIN_PID = os.getpid()
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def run_scenario(cfg: LabConfig) -> RunResult:
    """Run ``cfg.scenario`` start to end and leave its run directory."""
    with run_guarded(), Lab(cfg) as lab:
        return lab.run()


_MAIN_PID = os.getpid()


def _raise_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM -> KeyboardInterrupt, so the lab unwinds as on Ctrl-C. Only in the process
    that set it: pyroute2 forks helpers and stops them with SIGTERM, and an exception
    there would unwind the parent's copied stack inside the child."""
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt
