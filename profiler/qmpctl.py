"""Drive QEMU over the QMP source's connections: commands, migration parameters, trace events, the log file.

The QMP monitor serves one client, so control shares the connection the source
(``profiler.sources.qmp``) opened; every call runs on its loop and may come from any
thread. A refusal from QEMU is ``QmpRefused`` naming the command, the argument and the
QEMU version; a dropped or held connection is ``QmpGone``. The lab drives its
migrations with ``QmpControl``; ``live`` switches QEMU's trace events on and points its
log at a file with ``TraceControl`` (over QMP, or through libvirt for a domain), and puts
both back at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import pandas as pd

from profiler import registry
from profiler.errors import MigprofError
from profiler.sources.base import Source
from profiler.sources.qmp import FINAL_STATUSES, QmpGone, QmpRefused, QmpSource

log = logging.getLogger(__name__)

__all__ = ["FINAL_STATUSES", "Control", "QmpControl", "QmpGone", "QmpRefused", "TraceControl"]


class QmpControl:
    """Commands on the connections of a ``QmpSource`` (thread-safe)."""

    def __init__(self, source: QmpSource):
        self.source = source

    def _side(self, side: str) -> Any:
        try:
            return self.source.sides[side]
        except KeyError:
            raise MigprofError(f"no QMP connection for side {side!r}") from None

    def execute(self, side: str, cmd: str, args: Mapping[str, Any] | None = None,
                timeout: float = 30.0) -> Any:
        """Run a QMP command on ``side``; QmpRefused when QEMU says no."""
        return self.source.call(self._side(side).execute(cmd, args), timeout)

    def hmp(self, side: str, command_line: str, timeout: float = 30.0) -> str:
        """A human monitor command (what QMP has no command for, e.g. ``logfile``)."""
        out = self.execute(side, "human-monitor-command", {"command-line": command_line}, timeout)
        return out if isinstance(out, str) else ""

    def version(self, side: str) -> str:
        return self._side(side).version

    def connected(self, side: str) -> bool:
        return self._side(side).up.is_set()

    def wait_connected(self, side: str, timeout: float) -> bool:
        """Wait until ``side``'s connection is up (a held monitor freed, a reconnect)."""
        return self._side(side).up.wait(timeout)

    def enable_migration_events(self, side: str, extra: Mapping[str, bool] | None = None) -> None:
        """Turn on the ``events`` capability (MIGRATION/MIGRATION_PASS) and any ``extra``."""
        caps = {"events": True, **(extra or {})}
        self.source.call(self._side(side).set_capabilities(caps))

    def set_parameters(self, side: str, **params: Any) -> dict[str, Any]:
        """``migrate-set-parameters`` (keys with ``-`` or ``_``), then record the new set."""
        args = {k.replace("_", "-"): v for k, v in params.items()}
        s = self._side(side)

        async def _set() -> dict[str, Any]:
            await s.execute("migrate-set-parameters", args)
            return await s.read_params(why="set")

        return self.source.call(_set())

    def read_parameters(self, side: str) -> dict[str, Any]:
        return self.source.call(self._side(side).read_params(why="read"))

    def query_migrate(self, side: str) -> dict[str, Any]:
        """A fresh ``query-migrate`` reply (also recorded as a row)."""
        s = self._side(side)

        async def _q() -> dict[str, Any]:
            await s.poll_once()
            return s.last_reply or {}

        return self.source.call(_q())

    def last_reply(self, side: str) -> dict[str, Any] | None:
        return self._side(side).last_reply

    def last_ram_reply(self, side: str) -> dict[str, Any] | None:
        """The last reply that still had RAM counters (a cancelled one has none)."""
        return self._side(side).last_ram_reply

    def status(self, side: str) -> str:
        return self._side(side).status

    def gone(self, side: str) -> str | None:
        """Why the connection dropped (None while it is up)."""
        return self._side(side).gone

    def wait_status(self, side: str, statuses: Iterable[str], timeout: float) -> str:
        """Wait until ``side`` reports one of ``statuses``; return it (TimeoutError otherwise)."""
        s = self._side(side)
        want = frozenset(statuses)

        async def _wait() -> str:
            end = time.monotonic() + timeout
            while s.status not in want:
                if s.gone:
                    raise QmpGone(f"{side}: QMP connection lost: {s.gone}")
                s.status_changed.clear()
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{side}: still {s.status!r} after {timeout} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(s.status_changed.wait(), timeout=min(left, 0.2))
            return s.status

        return self.source.call(_wait(), timeout=timeout + 5)


# ---------------------------------------------------------------- live's trace control

class Control(Protocol):
    """What trace control needs: QMP commands on a side (``QmpControl``, or a libvirt
    domain's ``LibvirtSource``, which passes them through libvirt)."""

    def execute(self, side: str, cmd: str, args: Mapping[str, Any] | None = None,
                timeout: float = 30.0) -> Any: ...


def wanted_trace_events(available: Iterable[str]) -> list[str]:
    """The migration and VFIO migration events of ``available`` to switch on (never all):
    what the event registry says (the lab switches on the same)."""
    return registry.events_to_enable(available)


def trace_event_states(ctl: Control, side: str) -> dict[str, bool]:
    """The trace events QEMU has that migprof may switch on: name -> enabled. Asked per
    family (``registry.trace_globs``): a few hundred names in all, where "*" answers with
    every one of QEMU's thousands (a reply that costs ~20 ms of CPU to read, per QEMU)."""
    states = [s for g in registry.trace_globs()
              for s in ctl.execute(side, "trace-event-get-state", {"name": g})]
    return {s["name"]: s.get("state") == "enabled" for s in states
            if s.get("state") in ("enabled", "disabled")}


def set_trace_event(ctl: Control, side: str, name: str, enable: bool, timeout: float = 30.0) -> None:
    ctl.execute(side, "trace-event-set-state", {"name": name, "enable": enable}, timeout)


def set_logfile(ctl: Control, side: str, path: str, timeout: float = 30.0) -> None:
    """Point QEMU's log (trace lines included) at ``path`` (HMP ``logfile``)."""
    ctl.execute(side, "human-monitor-command", {"command-line": f"logfile {path}"}, timeout)


class TraceControl(Source):
    """Switches QEMU's migration/VFIO trace events on over QMP and its log into a file;
    undoes both when closed.

    Yields no events itself (a ``QemuLogSource`` reads the file). It acts as soon as the
    connection is up (``ctl.wait_connected``, where the control has it), which for a QMP
    monitor another client held is when it frees. ``log_path`` differing from QEMU's own
    ``-D`` file (``qemu_log``) means QEMU logs to stderr and the log is redirected;
    ``temporary``: that file is ours to remove.
    """

    name = "trace-control"

    def __init__(self, ctl: Control, side: str, pid: int, log_path: str | None,
                 qemu_log: str | None = None, temporary: bool = False):
        self.ctl = ctl
        self.side = side
        self.pid = pid
        self.log_path = log_path
        self.qemu_log = qemu_log
        self.temporary = temporary
        self.enabled: list[str] = []  # events we switched on (switched off at exit)
        self.redirected = False
        self.restore_log: str | None = None
        self.problem: str | None = None
        self.applied = False
        self._lock = threading.Lock()

    def _up(self, timeout: float) -> bool:
        wait = getattr(self.ctl, "wait_connected", None)
        return True if wait is None else bool(wait(self.side, timeout))

    def __enter__(self) -> TraceControl:
        if self._up(0):
            self.apply()
        return self

    def apply(self) -> None:
        """Switch the events on and redirect the log (once)."""
        with self._lock:
            if self.applied:
                return
            self.applied = True
            try:
                states = trace_event_states(self.ctl, self.side)
            except MigprofError as e:
                self.problem = f"cannot read QEMU's trace events over QMP: {e}"
                log.warning("%s", self.problem)
                return
            if not states:
                self.problem = "QEMU has no trace events (built without a trace back end)"
                return
            for name in wanted_trace_events(states):
                if not states[name]:
                    try:
                        set_trace_event(self.ctl, self.side, name, True)
                        self.enabled.append(name)
                    except MigprofError as e:  # e.g. a dstate-only event
                        log.debug("trace-event-set-state %s: %s", name, e)
            if self.log_path and self.log_path != self.qemu_log:
                self._redirect()

    def _redirect(self) -> None:
        # QEMU logs to stderr (no -D): send the log to our file. Going back is only safe
        # when stderr is not a regular file (reopening it would truncate, e.g. libvirt's log)
        try:
            err = os.readlink(f"/proc/{self.pid}/fd/2")
        except OSError:
            err = ""
        set_logfile(self.ctl, self.side, str(self.log_path))
        self.redirected = True
        if err and not os.path.isfile(err):
            self.restore_log = "/dev/stderr"

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        """Waits for QMP (a held monitor that frees) and then acts; yields nothing."""
        while not stop.is_set() and not self.applied:
            if self._up(0.1) and not stop.is_set():
                self.apply()
        return
        yield  # a generator that yields no rows

    def close(self) -> None:
        with self._lock:
            self.applied = True  # a late connection must not switch anything on now
            for name in self.enabled:
                try:
                    set_trace_event(self.ctl, self.side, name, False, timeout=5)
                except Exception as e:  # QEMU gone: nothing to put back
                    log.debug("restoring %s: %s", name, e)
                    break
            self.enabled = []
            if self.redirected:
                self.redirected = False
                if self.restore_log:
                    with contextlib.suppress(Exception):
                        set_logfile(self.ctl, self.side, self.restore_log, timeout=5)
                        if self.temporary and self.log_path:
                            os.unlink(self.log_path)
                else:
                    log.warning("QEMU's stderr is a file: its log stays at %s", self.log_path)

    def health(self) -> dict[str, Any]:
        return {"source": self.name, "enabled": len(self.enabled), "log": self.log_path,
                "problem": self.problem}
