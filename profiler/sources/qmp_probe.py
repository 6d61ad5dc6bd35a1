"""One brief ``query-migrate`` over a QEMU's QMP socket, then the socket is let go.

A QMP UNIX socket serves one client at a time: a profiler that holds the monitor of every
idle VM on a host (``migprof top``) would make the operator's own ``migrate`` wait behind
it. ``probe`` connects, negotiates, asks, and closes within milliseconds; a monitor that
someone else holds does not answer the greeting within ``timeout`` and is reported busy.
Plain blocking sockets: no event loop to start for a poll a second.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

# statuses of a migration under way (QAPI MigrationStatus): while one holds, the monitor is
# worth holding for its events and trace control
ACTIVE = frozenset(["setup", "active", "pre-switchover", "device", "wait-unplug", "cancelling",
                    "postcopy-active", "postcopy-paused", "postcopy-recover", "postcopy-recover-setup",
                    "colo"])


@dataclass(frozen=True, slots=True)
class Probe:
    """What one probe learned: ``reply`` (query-migrate's return) or ``problem``."""

    reply: dict[str, Any] | None
    problem: str | None = None
    t_ns: int = 0

    @property
    def status(self) -> str | None:
        return None if self.reply is None else str(self.reply.get("status") or "none")

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


def _read_msg(f: Any, want_id: str | None) -> dict[str, Any]:
    """The next message that is not an asynchronous event (or the reply to ``want_id``)."""
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("monitor closed the connection")
        msg = json.loads(line)
        if "event" in msg:
            continue
        if want_id is None or msg.get("id") == want_id:
            return msg


def probe(path: str, timeout: float = 0.5) -> Probe:
    """``query-migrate`` on the QMP socket at ``path``; never raises."""
    t = time.time_ns()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            with s.makefile("rwb", buffering=0) as f:
                greeting = _read_msg(f, None)  # times out while another client holds it
                if "QMP" not in greeting:
                    return Probe(None, f"{path}: not a QMP monitor", t)
                for cmd, mid in (("qmp_capabilities", "c"), ("query-migrate", "q")):
                    s.sendall(json.dumps({"execute": cmd, "id": mid}).encode() + b"\n")
                    msg = _read_msg(f, mid)
                    if "error" in msg:
                        return Probe(None, f"{path}: {cmd}: {msg['error'].get('desc', msg['error'])}", t)
                return Probe(dict(msg.get("return") or {}), None, time.time_ns())
    except TimeoutError:
        return Probe(None, f"{path}: monitor busy (another client holds it)", t)
    except (OSError, ValueError) as e:
        return Probe(None, f"{path}: {e}", t)
