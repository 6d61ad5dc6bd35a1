"""sock_diag source: the migration TCP connection as seen by the host kernel.

Samples ``tcp_info`` of the connection towards ``dst:port`` (the source QEMU's outgoing
migration socket) through NETLINK_SOCK_DIAG at ``hz`` and emits ``sockdiag_sample`` rows:
``bytes`` = bytes acked, ``count`` = bytes sent, ``dur_ns`` = smoothed RTT,
``bw_bytes_per_ms`` = the kernel's delivery-rate estimate, ``detail`` = JSON of the rest
(retransmits, cwnd, not-sent bytes, min RTT, ports, cookie).

A socket is bound to the namespace it was created in, so the diag socket is created once,
inside the target namespace (``netns=``), by ``_NsDiagSocket``; no thread ever switches
namespace. ``get_sock_stats()`` has an unstable signature upstream and is called in one
place only (``_dump``).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd

from profiler import events as ev
from profiler.errors import SetupError
from profiler.sources.base import Source

log = logging.getLogger(__name__)

INET_DIAG_INFO = 2  # the extension number; requested as bit (INET_DIAG_INFO - 1)


def _diag_socket(netns: str | None):
    """A bound NETLINK_SOCK_DIAG socket created inside ``netns`` (None: ours)."""
    from pyroute2.netlink import NETLINK_SOCK_DIAG
    from pyroute2.netlink.diag import DiagSocket, MarshalDiag
    from pyroute2.netlink.nlsocket import NetlinkSocket

    class _NsDiagSocket(DiagSocket):
        """DiagSocket that forwards ``netns=`` (the upstream class does not); flags=0
        refuses to create a namespace that is missing instead of making an empty one."""

        def __init__(self, netns: str | None = None):
            NetlinkSocket.__init__(self, NETLINK_SOCK_DIAG, netns=netns, flags=0)
            self.set_marshal(MarshalDiag())

    try:
        ds = _NsDiagSocket(netns)
        ds.bind()
    except (OSError, FileNotFoundError) as e:
        where = f"network namespace {netns!r}" if netns else "this namespace"
        raise SetupError(f"sock_diag: cannot open a diag socket in {where}: {e}") from e
    return ds


def _dump(ds: Any) -> tuple:
    """All connected TCP/IPv4 sockets with tcp_info (the one get_sock_stats call)."""
    from pyroute2.netlink.diag import SS_CONN

    return ds.get_sock_stats(family=socket.AF_INET, states=SS_CONN,
                             extensions=1 << (INET_DIAG_INFO - 1))


def sample_rows(msgs: tuple, port: int, dst: str | None, side: str, t_ns: int) -> list[dict[str, Any]]:
    """Rows for the sockets among ``msgs`` whose peer is ``dst:port``."""
    rows = []
    for m in msgs:
        if m.get("idiag_dport") != port or (dst and m.get("idiag_dst") != dst):
            continue
        info = m.get_attr("INET_DIAG_INFO")
        if info is None:
            continue
        rate = info.get("tcpi_delivery_rate")
        detail = {
            "sport": m.get("idiag_sport"), "dport": port, "dst": m.get("idiag_dst"),
            "cookie": m.get("idiag_cookie"), "state": info.get("tcpi_state"),
            "cwnd": info.get("tcpi_snd_cwnd"), "retrans": info.get("tcpi_total_retrans"),
            "bytes_retrans": info.get("tcpi_bytes_retrans"), "notsent": info.get("tcpi_notsent_bytes"),
            "unacked": info.get("tcpi_unacked"), "min_rtt_us": info.get("tcpi_min_rtt"),
            "rttvar_us": info.get("tcpi_rttvar"), "app_limited": info.get("tcpi_delivery_rate_app_limited"),
            "wqueue": m.get("idiag_wqueue"), "delivery_rate_Bps": rate,
            "pacing_rate_Bps": info.get("tcpi_pacing_rate"),
        }
        rtt = info.get("tcpi_rtt")
        rows.append({
            "t_ns": t_ns, "clock_ns": t_ns, "clock": ev.Clock.REALTIME, "side": side,
            "origin": ev.Origin.SOCKDIAG, "event": ev.SOCKDIAG_SAMPLE,
            "bytes": info.get("tcpi_bytes_acked"), "count": info.get("tcpi_bytes_sent"),
            "dur_ns": rtt * 1000 if rtt is not None else None,
            "bw_bytes_per_ms": rate / 1000.0 if rate is not None else None,
            "state": "established" if m.get("idiag_state") == 1 else str(m.get("idiag_state")),
            "detail": json.dumps(detail, sort_keys=True),
        })
    return rows


class SockDiagSource(Source):
    """Samples the migration connection ``-> dst:port`` from inside ``netns``."""

    name = "sockdiag"

    def __init__(self, port: int, dst: str | None = None, netns: str | None = None,
                 hz: float = 10.0, side: str = ev.Side.SOURCE):
        if hz <= 0:
            raise ValueError("hz must be > 0")
        self.port = port
        self.dst = dst
        self.netns = netns
        self.period = 1.0 / hz
        self.side = side
        self._ds: Any = None
        self.samples = 0
        self.errors = 0
        self._seq = 0

    def __enter__(self) -> SockDiagSource:
        self._ds = _diag_socket(self.netns)
        return self

    def close(self) -> None:
        ds, self._ds = self._ds, None
        if ds is not None:
            try:
                ds.close()
            except Exception as e:  # closing twice or after the namespace went away
                log.debug("sock_diag close: %s", e)

    def sample(self) -> list[dict[str, Any]]:
        """One dump now; rows for the matching connection(s)."""
        if self._ds is None:
            raise RuntimeError("SockDiagSource used outside its with-block")
        t = time.time_ns()
        rows = sample_rows(_dump(self._ds), self.port, self.dst, self.side, t)
        for r in rows:
            self._seq += 1
            r["seq"] = self._seq
        self.samples += len(rows)
        return rows

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        from profiler.sources.qmp import rows_to_frame

        next_t = time.monotonic()
        while not stop.is_set():
            try:
                rows = self.sample()
            except Exception as e:  # the namespace vanished at the end of a run
                self.errors += 1
                log.debug("sock_diag sample: %s", e)
                if self._ds is None:
                    return
                rows = []
            yield rows_to_frame(rows) if rows else pd.DataFrame()
            next_t += self.period
            delay = next_t - time.monotonic()
            if delay < 0:
                next_t = time.monotonic()
                delay = 0
            stop.wait(min(delay, 0.1))
            while not stop.is_set() and time.monotonic() < next_t:
                stop.wait(min(next_t - time.monotonic(), 0.1))

    def health(self) -> dict[str, Any]:
        return {"source": self.name, "samples": self.samples, "errors": self.errors,
                "netns": self.netns}
