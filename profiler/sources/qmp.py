"""QMP source: migration events and query-migrate polls of one or more QEMUs as schema rows.

One ``QMPClient`` per side (named after the side, so qemu.qmp's log lines say which side
spoke) runs on a private asyncio loop in a background thread. Each side:

* enables nothing by itself (the ``events`` capability is the controller's choice, see
  ``profiler.qmpctl``), listens for MIGRATION / MIGRATION_PASS / VFIO_MIGRATION,
* polls ``query-migrate`` at ``poll_hz`` (10 Hz by default) and records a row per reply
  once a migration has been seen (idle ``none`` replies are not recorded),
* reads ``query-migrate-parameters`` at ``params_hz`` and records a ``qmp_params`` row
  when the parameters changed (and right after they were set),
* with ``reconnect`` (the default; the lab turns it off), watches qemu.qmp's
  ``runstate_changed()`` and reconnects when QEMU drops the connection, recording
  ``qmp_event`` rows ``qmp-disconnected`` / ``qmp-reconnected`` and restoring the
  capabilities it set,
* with ``wait_if_held`` (live attach), a monitor another client holds is not an error:
  the side records a ``qmp-held`` row naming the holder when the kernel tells
  (``profiler.sources.unixpeer``), says so once through ``notify``, and connects
  quietly, with backoff, once the socket is free (a ``qmp-connected`` row).

The row builders below are the one place QMP replies become schema rows. Commands,
parameters and trace control go through ``profiler.qmpctl``, which drives these
connections from any thread (``QmpSource.call``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any

import pandas as pd

from profiler import events as ev
from profiler.errors import MigprofError
from profiler.sources.base import Source

log = logging.getLogger(__name__)

MIGRATION_EVENTS = ("MIGRATION", "MIGRATION_PASS", "VFIO_MIGRATION")
# statuses after which a side's migration is over
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
# how long a connection waits for QEMU's greeting once the socket accepted it
GREETING_S = 5.0
# retries of a held monitor: from the first to the longest gap, seconds
PICKUP_FIRST_S, PICKUP_MAX_S = 0.5, 5.0

Address = str | tuple[str, int]


class QmpRefused(MigprofError):
    """QEMU refused a QMP command (unknown parameter, wrong state, ...)."""


class QmpGone(MigprofError):
    """The QMP connection dropped (QEMU exited or was killed)."""


# ---------------------------------------------------------------- rows


def _ts_ns(msg: Mapping[str, Any]) -> int | None:
    ts = msg.get("timestamp")
    if not isinstance(ts, Mapping):
        return None
    try:
        sec, usec = int(ts["seconds"]), int(ts["microseconds"])
    except (KeyError, TypeError, ValueError):
        return None
    if sec < 0:  # QEMU sends -1/-1 when it could not read the clock
        return None
    return sec * 1_000_000_000 + usec * 1_000


def event_row(side: str, msg: Mapping[str, Any], recv_ns: int | None = None) -> dict[str, Any]:
    """Row for one asynchronous QMP event (MIGRATION, MIGRATION_PASS, VFIO_MIGRATION, other)."""
    msg = json.loads(json.dumps(dict(msg), default=dict))  # qemu.qmp Message -> plain dicts
    name = str(msg.get("event", ""))
    data = msg.get("data") or {}
    t = _ts_ns(msg)
    if t is None:
        t = recv_ns if recv_ns is not None else time.time_ns()
    row: dict[str, Any] = {
        "t_ns": t,
        "clock_ns": t,
        "clock": ev.Clock.REALTIME,
        "side": side,
        "origin": ev.Origin.QMP,
        "raw": json.dumps(msg, sort_keys=True),
    }
    if name == "MIGRATION":
        row.update(event=ev.QMP_MIGRATION, state=data.get("status"))
    elif name == "MIGRATION_PASS":
        row.update(event=ev.QMP_MIGRATION_PASS, dirty_syncs=data.get("pass"))
    elif name == "VFIO_MIGRATION":
        row.update(
            event=ev.QMP_VFIO_MIGRATION,
            device=data.get("device-id"),
            state=data.get("device-state"),
            detail=json.dumps(data, sort_keys=True),
        )
    else:
        row.update(event=ev.QMP_EVENT, state=name, detail=json.dumps(data, sort_keys=True))
    return row


def query_row(side: str, reply: Mapping[str, Any], t_ns: int | None = None) -> dict[str, Any]:
    """Row for one ``query-migrate`` reply, stamped with the host clock at receipt."""
    t = t_ns if t_ns is not None else time.time_ns()
    ram = reply.get("ram") or {}
    total = reply.get("total-time")
    return {
        "t_ns": t,
        "clock_ns": t,
        "clock": ev.Clock.REALTIME,
        "side": side,
        "origin": ev.Origin.QMP,
        "event": ev.QMP_QUERY_MIGRATE,
        "state": reply.get("status"),
        "detail": json.dumps(reply, sort_keys=True),
        "bytes": ram.get("transferred"),
        "dirty_syncs": ram.get("dirty-sync-count"),
        "dur_ns": int(total) * 1_000_000 if total is not None else None,
    }


def params_row(
    side: str, params: Mapping[str, Any], t_ns: int | None = None, why: str = "read"
) -> dict[str, Any]:
    """Row for the migration parameters (read, or just changed: ``why="set"``)."""
    t = t_ns if t_ns is not None else time.time_ns()
    return {
        "t_ns": t,
        "clock_ns": t,
        "clock": ev.Clock.REALTIME,
        "side": side,
        "origin": ev.Origin.QMP,
        "event": ev.QMP_PARAMS,
        "state": why,
        "detail": json.dumps(dict(params), sort_keys=True),
        "bw_bytes_per_ms": (
            params["max-bandwidth"] / 1000.0
            if isinstance(params.get("max-bandwidth"), int | float)
            else None
        ),
        "dur_ns": (
            int(params["downtime-limit"]) * 1_000_000
            if isinstance(params.get("downtime-limit"), int)
            else None
        ),
    }


def mark_row(
    action: str, side: str = ev.Side.UNKNOWN, t_ns: int | None = None, **detail: Any
) -> dict[str, Any]:
    """Row for a lab action (parameter change, kill, cancel); detail is JSON."""
    t = t_ns if t_ns is not None else time.time_ns()
    return {
        "t_ns": t,
        "clock_ns": t,
        "clock": ev.Clock.REALTIME,
        "side": side,
        "origin": ev.Origin.LAB,
        "event": ev.LAB_MARK,
        "state": action,
        "detail": json.dumps({"action": action, **detail}, sort_keys=True, default=str),
    }


# ---------------------------------------------------------------- one connection


def quiet_client(name: str) -> Any:
    """A ``QMPClient`` that formats each message for its debug log only when that log is on.

    qemu.qmp's message hooks (``_cb_outbound``/``_cb_inbound``, meant to be overridden)
    turn every message into JSON text for ``logger.debug`` whether or not debug logging is
    enabled: ~0.5-1 ms a message, which ``top`` following many QEMUs pays dozens of times
    a second."""
    from qemu.qmp import QMPClient

    class QuietClient(QMPClient):
        def _cb_outbound(self, msg: Any) -> Any:
            return super()._cb_outbound(msg) if self.logger.isEnabledFor(logging.DEBUG) else msg

        def _cb_inbound(self, msg: Any) -> Any:
            return super()._cb_inbound(msg) if self.logger.isEnabledFor(logging.DEBUG) else msg

    return QuietClient(name)



class Connection:
    """One QMP connection (one side), living on the source's loop.

    Control (``profiler.qmpctl``) reads ``status``, ``last_reply``, ``version`` and
    ``up`` and runs ``execute`` / ``set_capabilities`` / ``read_params`` / ``poll_once``
    through ``QmpSource.call``.
    """

    def __init__(
        self,
        side: str,
        address: Address,
        emit: Callable[[dict], None],
        poll_hz: float,
        params_hz: float,
        reconnect: bool = False,
        notify: Callable[[str], None] | None = None,
    ):
        self.side = side
        self.reconnect = reconnect
        self.notify = notify
        self.closing = False
        self.reconnects = 0
        self.watcher: asyncio.Task | None = None
        self.capabilities: dict[str, bool] = {}  # set through this side: restored on reconnect
        self.address = address
        self.emit = emit
        self.poll_s = 1.0 / poll_hz if poll_hz > 0 else 0.0
        self.params_s = 1.0 / params_hz if params_hz > 0 else 0.0
        self.qmp = quiet_client(side)
        self.version = ""
        self.last_reply: dict[str, Any] | None = None
        self.last_ram_reply: dict[str, Any] | None = None  # last reply with counters
        self.last_params: dict[str, Any] | None = None
        self.seen_migration = False
        self.status = "none"
        self.status_changed = asyncio.Event()
        self.up = threading.Event()  # a session is established (any thread may wait on it)
        self.held_by: str | None = None  # another client holds the monitor (who, if known)
        self.polls = 0
        self.poll_errors = 0
        self.events = 0
        self.gone: str | None = None
        self.tasks: list[asyncio.Task] = []

    # -- connecting
    async def connect(self, timeout: float) -> None:
        """Connect, waiting up to ``timeout`` s for the socket to appear (QEMU starting)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(
                    self.qmp.connect(self.address), timeout=max(0.1, deadline - time.monotonic())
                )
                break
            except Exception as e:  # socket not there yet; QEMU still starting
                last = e
                await self._reset()
                await asyncio.sleep(0.05)
        else:
            raise QmpGone(f"{self.side}: cannot connect to QMP at {self.address}: {last}")
        self._connected()

    def _connected(self) -> None:
        self._start_tasks()
        self.up.set()
        if self.reconnect and self.watcher is None:
            self.watcher = asyncio.create_task(self._watch(), name=f"{self.side}-watch")

    def holder(self) -> str | None:
        """Who holds this monitor now: None when it is free, "" when the kernel cannot tell."""
        if not isinstance(self.address, str):
            return None
        from profiler.sources.unixpeer import connected_peers

        peers = connected_peers(self.address)
        if peers is None:
            return ""
        return ", ".join(p.describe() for p in peers) or None

    async def attach(self, timeout: float) -> None:
        """Connect, or, when another client holds the monitor, say so and pick it up later."""
        held = self.holder()
        if held == "":  # no sock_diag here: a held monitor accepts but sends no greeting
            held = "another client" if await self._no_greeting() else None
        if held is None:
            await self.connect(timeout)
            return
        self.held_by = held
        self.emit(self._conn_row("qmp-held", held_by=held))
        if self.notify is not None:
            self.notify(f"QMP {self.address} ({self.side}) is held by {held}: going on without "
                        "QMP; it is picked up if it frees")
        self.watcher = asyncio.create_task(self._pickup(), name=f"{self.side}-pickup")

    async def _no_greeting(self) -> bool:
        """Whether the socket accepts a connection but sends no greeting (held)."""
        if not isinstance(self.address, str):
            return False
        try:
            r, w = await asyncio.wait_for(asyncio.open_unix_connection(self.address), 2)
        except Exception:  # refused or missing: not held, broken
            return False
        try:
            await asyncio.wait_for(r.readline(), GREETING_S)
            return False
        except TimeoutError:
            return True
        finally:
            w.close()

    async def _pickup(self) -> None:
        """Wait quietly (backoff) until the monitor is free, then connect."""
        delay = PICKUP_FIRST_S
        while not self.closing:
            await asyncio.sleep(delay)
            delay = min(PICKUP_MAX_S, delay * 2)
            held = await asyncio.get_running_loop().run_in_executor(None, self.holder)
            if held:
                continue
            try:
                await asyncio.wait_for(self.qmp.connect(self.address), GREETING_S)
            except Exception as e:  # still held (no greeting) or gone: try again later
                log.debug("%s: pick-up of %s: %s", self.side, self.address, e)
                await self._reset()
                continue
            self.held_by = None
            self.watcher = None
            self._connected()
            self.emit(self._conn_row("qmp-connected", version=self.version))
            if self.notify is not None:
                self.notify(f"QMP {self.address} ({self.side}) is free now: connected")
            return

    def _start_tasks(self) -> None:
        greeting = self.qmp.greeting
        if greeting is not None:
            v = greeting.QMP.version.get("qemu", {})
            self.version = f"{v.get('major')}.{v.get('minor')}.{v.get('micro')}"
        self.tasks = [asyncio.create_task(self._events(), name=f"{self.side}-events")]
        if self.poll_s:
            self.tasks.append(asyncio.create_task(self._poll(), name=f"{self.side}-poll"))
        if self.params_s:
            self.tasks.append(asyncio.create_task(self._params(), name=f"{self.side}-params"))

    async def _stop_tasks(self) -> None:
        tasks, self.tasks = self.tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _reset(self) -> None:
        """Back to IDLE after a failed or dropped connection (qemu.qmp requires it)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.qmp.disconnect(), timeout=2)

    async def _watch(self) -> None:
        """Reconnect when QEMU drops the connection (``runstate_changed``): a QEMU that
        restarts on the same socket, or a monitor another client held for a while.
        Polls and the event listener stop while disconnected and resume after."""
        from qemu.qmp.protocol import Runstate

        while not self.closing:
            state = self.qmp.runstate
            if state != Runstate.DISCONNECTING:
                state = await self.qmp.runstate_changed()
            if self.closing or state != Runstate.DISCONNECTING:
                continue
            reason = self.gone or "QEMU closed the QMP connection"
            self.gone = reason
            self.up.clear()
            self.emit(self._conn_row("qmp-disconnected", reason=reason))
            await self._stop_tasks()
            await self._reset()
            delay = 0.1
            while not self.closing:
                await asyncio.sleep(delay)
                try:
                    await asyncio.wait_for(self.qmp.connect(self.address), timeout=5)
                except Exception as e:  # not back yet: retry with backoff, up to 2 s apart
                    log.debug("%s: reconnect to %s: %s", self.side, self.address, e)
                    await self._reset()
                    delay = min(2.0, delay * 2)
                    continue
                self.reconnects += 1
                self.gone = None
                self.seen_migration = False  # maybe a new QEMU: idle replies are not rows
                self.status = "none"
                self.status_changed.set()
                self._start_tasks()
                self.up.set()
                self.emit(self._conn_row("qmp-reconnected", version=self.version))
                if self.capabilities:
                    with contextlib.suppress(MigprofError):
                        await self.set_capabilities(self.capabilities)
                break

    def _conn_row(self, what: str, **detail: Any) -> dict[str, Any]:
        t = time.time_ns()
        return {
            "t_ns": t,
            "clock_ns": t,
            "clock": ev.Clock.REALTIME,
            "side": self.side,
            "origin": ev.Origin.QMP,
            "event": ev.QMP_EVENT,
            "state": what,
            "detail": json.dumps({"address": str(self.address), **detail}, sort_keys=True),
        }

    # -- commands (on the loop)
    async def set_capabilities(self, caps: Mapping[str, bool]) -> None:
        await self.execute(
            "migrate-set-capabilities",
            {"capabilities": [{"capability": k, "state": v} for k, v in caps.items()]},
        )
        self.capabilities.update(caps)

    async def execute(self, cmd: str, args: Mapping[str, Any] | None = None) -> Any:
        from qemu.qmp import ExecInterruptedError, ExecuteError
        from qemu.qmp.protocol import StateError

        if self.held_by is not None:
            raise QmpGone(f"{self.side}: QMP is held by {self.held_by}; cannot run {cmd}")
        try:
            return await self.qmp.execute(cmd, dict(args) if args else None)
        except ExecuteError as e:
            what = f"{cmd} {json.dumps(dict(args), sort_keys=True)}" if args else cmd
            raise QmpRefused(
                f"QEMU {self.version or '?'} ({self.side}) refused {what}: {e.error_class}: {e}"
            ) from e
        except (ExecInterruptedError, StateError, ConnectionError, EOFError) as e:
            self.gone = self.gone or str(e) or type(e).__name__
            raise QmpGone(f"{self.side}: QMP connection lost during {cmd}: {self.gone}") from e

    def _note_status(self, status: str | None) -> None:
        if status and status != self.status:
            self.status = status
            if status != "none":
                self.seen_migration = True
            self.status_changed.set()

    async def _events(self) -> None:
        try:
            with self.qmp.listener() as listener:
                async for msg in listener:
                    self.events += 1
                    try:
                        row = event_row(self.side, msg, time.time_ns())
                    except (TypeError, ValueError) as e:  # keep listening whatever one event holds
                        log.warning("%s: unreadable QMP event: %s", self.side, e)
                        continue
                    self.emit(row)
                    if msg.get("event") == "MIGRATION":
                        self._note_status((msg.get("data") or {}).get("status"))
                        # a poll right at the state change, so the final counters are caught
                        await self.poll_once()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.gone = self.gone or f"event stream ended: {e}"

    async def poll_once(self) -> None:
        """One ``query-migrate``, recorded as a row once a migration has been seen."""
        try:
            reply = await self.execute("query-migrate")
        except QmpRefused:
            self.poll_errors += 1
            return
        t = time.time_ns()
        if not isinstance(reply, dict):
            return
        self.polls += 1
        status = reply.get("status", "none")
        if status != "none" or self.seen_migration:
            self.emit(query_row(self.side, reply, t))
        self.last_reply = reply
        if "ram" in reply:
            self.last_ram_reply = reply
        self._note_status(status)

    async def _poll(self) -> None:
        next_t = time.monotonic()
        while self.gone is None:
            try:
                await self.poll_once()
            except QmpGone:
                return
            next_t += self.poll_s
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind (loaded host): do not burst to catch up
                next_t = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)

    async def read_params(self, why: str = "read") -> dict[str, Any]:
        """``query-migrate-parameters``; a row when they changed (always when ``why`` is not "read")."""
        params = await self.execute("query-migrate-parameters")
        if isinstance(params, dict) and (params != self.last_params or why != "read"):
            self.last_params = params
            self.emit(params_row(self.side, params, why=why))
        return params if isinstance(params, dict) else {}

    async def _params(self) -> None:
        while self.gone is None:
            try:
                await self.read_params()
            except QmpGone:
                return
            except QmpRefused:
                pass
            await asyncio.sleep(self.params_s)

    async def close(self) -> None:
        self.closing = True
        self.up.clear()
        if self.watcher is not None:
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.watcher
        await self._stop_tasks()
        try:
            await asyncio.wait_for(self.qmp.disconnect(), timeout=2)
        except Exception as e:  # QEMU already gone: nothing left to close
            log.debug("%s: disconnect: %s", self.side, e)


# ---------------------------------------------------------------- the Source


class QmpSource(Source):
    """QMP on one or more sides as a live event source.

    ``addresses`` maps a side (``source``/``destination``) to a UNIX socket path or a
    ``(host, port)`` pair. Entering connects every side (waiting up to
    ``connect_timeout`` s for the socket to appear; with ``wait_if_held``, a monitor
    another client holds is picked up later instead); leaving disconnects.
    """

    name = "qmp"

    def __init__(
        self,
        addresses: Mapping[str, Address],
        poll_hz: float = 10.0,
        params_hz: float = 1.0,
        connect_timeout: float = 15.0,
        buffer: bool = True,
        reconnect: bool = True,
        wait_if_held: bool = False,
        notify: Callable[[str], None] | None = None,
    ):
        if poll_hz and poll_hz < 0:
            raise ValueError("poll_hz must be >= 0")
        self.addresses = dict(addresses)
        self.poll_hz = poll_hz
        self.params_hz = params_hz
        self.connect_timeout = connect_timeout
        self.buffer = buffer  # False: rows go to taps only (batches() then yields nothing)
        # reconnect when QEMU drops the connection (live attach); the lab turns it off:
        # there a dropped connection means that QEMU is gone for good
        self.reconnect = reconnect
        self.wait_if_held = wait_if_held
        self.notify = notify
        self._q: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.sides: dict[str, Connection] = {}
        self._seq = 0
        self._taps: list[Callable[[dict[str, Any]], None]] = []
        self._lock = threading.Lock()

    # -- plumbing
    def _emit(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            row.setdefault("seq", self._seq)
            taps = list(self._taps)
        for tap in taps:
            tap(row)
        if self.buffer:
            self._q.put(row)

    def tap(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Also hand every row to ``fn`` (called on the QMP thread; keep it quick)."""
        with self._lock:
            self._taps.append(fn)

    def emit(self, row: dict[str, Any]) -> None:
        """Add a row from outside (a lab mark) to this source's stream, in order."""
        self._emit(row)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float | None = 30.0) -> Any:
        """Run ``coro`` on the QMP loop from any other thread and return its result."""
        if self._loop is None:
            coro.close()
            raise MigprofError("QMP source is not connected")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError as e:
            fut.cancel()
            raise QmpGone(f"QMP call timed out after {timeout} s") from e

    def __enter__(self) -> QmpSource:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qmp-loop", daemon=True)
        self._thread.start()
        try:
            for side, addr in self.addresses.items():
                s = Connection(side, addr, self._emit, self.poll_hz, self.params_hz,
                               self.reconnect, self.notify)
                self.sides[side] = s
                how = s.attach if self.wait_if_held else s.connect
                self.call(how(self.connect_timeout), timeout=self.connect_timeout + GREETING_S + 5)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def _close_all() -> None:
            await asyncio.gather(*(s.close() for s in self.sides.values()), return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(_close_all(), loop).result(5)
        except Exception as e:
            log.debug("closing QMP: %s", e)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        loop.close()

    # -- Source
    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        while not stop.is_set():
            rows = []
            try:
                rows.append(self._q.get(timeout=0.1))
                while len(rows) < 5000:
                    rows.append(self._q.get_nowait())
            except queue.Empty:
                pass
            yield ev.rows_to_frame(rows) if rows else pd.DataFrame()
            if self._loop is None and self._q.empty():
                return
        rest = []
        while True:
            try:
                rest.append(self._q.get_nowait())
            except queue.Empty:
                break
        if rest:
            yield ev.rows_to_frame(rest)

    def health(self) -> dict[str, Any]:
        return {
            "source": self.name,
            **{f"{k}_polls": s.polls for k, s in self.sides.items()},
            **{f"{k}_events": s.events for k, s in self.sides.items()},
            **{f"{k}_gone": s.gone for k, s in self.sides.items() if s.gone},
            **{f"{k}_reconnects": s.reconnects for k, s in self.sides.items() if s.reconnects},
            **{f"{k}_held_by": s.held_by for k, s in self.sides.items() if s.held_by},
        }
