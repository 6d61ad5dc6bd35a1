"""Start one QEMU inside L1 and drive it over QMP, recording every exchange as event rows.

A minimal driver kept inside the VFIO lab so the nested experiment does not depend
on the host lab's networking code (L1 has no namespaces to set up: both QEMUs talk
over its loopback). Rows use the column names of ``profiler.events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import ExecuteError, QMPClient

from profiler import events as ev
from profiler.sources.qmp import event_row, query_row

log = logging.getLogger(__name__)


@dataclass
class RowLog:
    """Event rows of one run, both sides, in arrival order (schema column names)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    _seq: dict[str, int] = field(default_factory=dict)

    def add(self, side: str, event: str, origin: str = ev.Origin.QMP, t_ns: int | None = None,
            **cols: Any) -> dict[str, Any]:
        seq = self._seq.get(origin, 0)
        self._seq[origin] = seq + 1
        now = time.time_ns() if t_ns is None else t_ns
        row = {"t_ns": now, "clock_ns": now, "clock": ev.Clock.REALTIME, "seq": seq,
               "side": side, "origin": str(origin), "event": event}
        row.update({k: v for k, v in cols.items() if v is not None})
        self.rows.append(row)
        return row

    def write_jsonl(self, path: Path) -> None:
        with path.open("w") as f:
            for r in self.rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")


def _event_time_ns(msg: dict[str, Any]) -> int | None:
    ts = msg.get("timestamp") or {}
    if "seconds" in ts:
        return int(ts["seconds"]) * 1_000_000_000 + int(ts.get("microseconds", 0)) * 1000
    return None


# a row's identity (RowLog.add sets these): the rest are the columns a reply fills
_ROW_KEYS = frozenset({"t_ns", "clock_ns", "clock", "side", "origin", "event", "raw", "seq"})


def query_migrate_cols(reply: dict[str, Any]) -> dict[str, Any]:
    """The columns a qmp_query_migrate row fills from one query-migrate reply (the QMP
    source's own mapping, ``profiler.sources.qmp.query_row``: one place for it)."""
    return {k: v for k, v in query_row("", reply).items() if k not in _ROW_KEYS}


class Qemu:
    """One QEMU process with its QMP connection; records QMP traffic into a RowLog."""

    def __init__(self, side: str, binary: str, args: list[str], workdir: Path, rows: RowLog):
        self.side = side
        self.binary = binary
        self.args = args
        self.workdir = workdir
        self.rows = rows
        # unix sockets cannot live on the 9p results share: keep them in L1's /tmp
        self.qmp_path = Path(tempfile.gettempdir()) / f"migprof-{os.getpid()}-{side}.qmp"
        self.stderr_path = workdir / f"{side}.stderr"
        self.proc: asyncio.subprocess.Process | None = None
        self.qmp = QMPClient(side)
        self._pump: asyncio.Task | None = None
        self.events_seen: list[dict[str, Any]] = []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self, timeout: float = 60.0) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.qmp_path.unlink()
        argv = [self.binary, *self.args, "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        (self.workdir / f"{self.side}.cmdline").write_text(" ".join(argv) + "\n")
        self.stderr = self.stderr_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.returncode is not None:
                raise RuntimeError(f"{self.side} QEMU exited with {self.proc.returncode} at start-up: "
                                   f"{self.stderr_text()[-400:]}")
            if self.qmp_path.exists():
                try:
                    await self.qmp.connect(str(self.qmp_path))
                    break
                except Exception:  # noqa: BLE001
                    # the socket file exists before QEMU listens on it (ECONNREFUSED, raised
                    # as qemu.qmp's ConnectError); a failed connect must be reset before
                    # the next try. A busy L1 widens that window to seconds.
                    with contextlib.suppress(Exception):
                        await self.qmp.disconnect()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.side} QEMU did not open QMP within {timeout:.0f}s")
            await asyncio.sleep(0.05)
        self._pump = asyncio.create_task(self._pump_events())

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    async def _pump_events(self) -> None:
        async for msg in self.qmp.events:
            self.events_seen.append(msg)
            name = msg.get("event", "")
            data = msg.get("data") or {}
            t = _event_time_ns(msg)
            detail = json.dumps(data, sort_keys=True)
            if name == "MIGRATION":
                self.rows.add(self.side, ev.QMP_MIGRATION, t_ns=t, state=data.get("status"),
                              detail=detail)
            elif name == "MIGRATION_PASS":
                cols = {k: v for k, v in event_row(self.side, msg).items() if k not in _ROW_KEYS}
                self.rows.add(self.side, ev.QMP_MIGRATION_PASS, t_ns=t, detail=detail, **cols)
            elif name == "VFIO_MIGRATION":
                self.rows.add(self.side, ev.QMP_VFIO_MIGRATION, t_ns=t,
                              device=data.get("device-id"), state=data.get("device-state"),
                              detail=detail)
            else:
                self.rows.add(self.side, ev.QMP_EVENT, t_ns=t, state=name, detail=detail)

    async def execute(self, cmd: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run a QMP command; a refusal is recorded as a row and re-raised."""
        try:
            return await self.qmp.execute(cmd, arguments)
        except ExecuteError as e:
            self.rows.add(self.side, ev.LAB_MARK, origin=ev.Origin.LAB, state="qmp-error",
                          detail=json.dumps({"command": cmd, "arguments": arguments,
                                             "class": e.error_class, "desc": str(e)}))
            raise

    async def set_params(self, params: dict[str, Any]) -> None:
        if not params:
            return
        await self.execute("migrate-set-parameters", params)
        self.rows.add(self.side, ev.QMP_PARAMS, detail=json.dumps(params, sort_keys=True))

    async def set_caps(self, caps: dict[str, bool]) -> None:
        if not caps:
            return
        await self.execute("migrate-set-capabilities", {
            "capabilities": [{"capability": k, "state": v} for k, v in caps.items()]})
        self.rows.add(self.side, ev.QMP_PARAMS,
                      detail=json.dumps({"capabilities": caps}, sort_keys=True))

    async def query_migrate(self) -> dict[str, Any]:
        reply = await self.execute("query-migrate")
        self.rows.add(self.side, ev.QMP_QUERY_MIGRATE, **query_migrate_cols(reply))
        return reply

    async def stop(self, timeout: float = 10.0) -> None:
        """Quit over QMP, then SIGTERM, then SIGKILL: the process is gone on return."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.qmp.execute("quit"), 3)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.qmp.disconnect(), 3)
        if self._pump:
            self._pump.cancel()
            with contextlib.suppress(BaseException):
                await self._pump
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if self.proc.returncode is not None:
                break
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), timeout / 3)
        self.stderr.close()
        with contextlib.suppress(OSError):
            self.qmp_path.unlink()
