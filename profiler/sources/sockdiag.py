"""sock_diag source: the migration TCP connection as seen by the host kernel.

Samples ``tcp_info`` of the connection towards ``dst:port`` (the source QEMU's outgoing
migration socket) through NETLINK_SOCK_DIAG at ``hz`` and emits ``sockdiag_sample`` rows:
``bytes`` = data bytes acked (tcpi_bytes_acked less the SYN), ``count`` = bytes sent
(retransmissions included), ``dur_ns`` = smoothed RTT,
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
import queue
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

    return ds.get_sock_stats(
        family=socket.AF_INET, states=SS_CONN, extensions=1 << (INET_DIAG_INFO - 1)
    )


def sample_rows(
    msgs: tuple, port: int, dst: str | None, side: str, t_ns: int
) -> list[dict[str, Any]]:
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
            "sport": m.get("idiag_sport"),
            "dport": port,
            "dst": m.get("idiag_dst"),
            "cookie": m.get("idiag_cookie"),
            "state": info.get("tcpi_state"),
            "cwnd": info.get("tcpi_snd_cwnd"),
            "retrans": info.get("tcpi_total_retrans"),
            "bytes_retrans": info.get("tcpi_bytes_retrans"),
            "notsent": info.get("tcpi_notsent_bytes"),
            "unacked": info.get("tcpi_unacked"),
            "min_rtt_us": info.get("tcpi_min_rtt"),
            "rttvar_us": info.get("tcpi_rttvar"),
            "app_limited": info.get("tcpi_delivery_rate_app_limited"),
            "wqueue": m.get("idiag_wqueue"),
            "delivery_rate_Bps": rate,
            "pacing_rate_Bps": info.get("tcpi_pacing_rate"),
        }
        rtt = info.get("tcpi_rtt")
        acked = info.get("tcpi_bytes_acked")
        if acked is not None:
            # the kernel counts the SYN's sequence number as one byte acked; the data
            # stream is one byte shorter
            acked = max(0, acked - 1)
        rows.append(
            {
                "t_ns": t_ns,
                "clock_ns": t_ns,
                "clock": ev.Clock.REALTIME,
                "side": side,
                "origin": ev.Origin.SOCKDIAG,
                "event": ev.SOCKDIAG_SAMPLE,
                "bytes": acked,
                "count": info.get("tcpi_bytes_sent"),
                "dur_ns": rtt * 1000 if rtt is not None else None,
                "bw_bytes_per_ms": rate / 1000.0 if rate is not None else None,
                "state": "established" if m.get("idiag_state") == 1 else str(m.get("idiag_state")),
                "detail": json.dumps(detail, sort_keys=True),
            }
        )
    return rows


class SockDiagSource(Source):
    """Samples the migration connection ``-> dst:port`` from inside ``netns``.

    pyroute2 keeps sockets per thread, so one sampler thread owns the diag socket from
    creation (in ``netns``) to close; ``batches()`` only drains what it sampled.
    Entering waits until the socket exists, so a missing namespace fails right there.
    """

    name = "sockdiag"

    def __init__(
        self,
        port: int,
        dst: str | None = None,
        netns: str | None = None,
        hz: float = 10.0,
        side: str = ev.Side.SOURCE,
    ):
        if hz <= 0:
            raise ValueError("hz must be > 0")
        self.port = port
        self.dst = dst
        self.netns = netns
        self.period = 1.0 / hz
        self.side = side
        self.samples = 0
        self.errors = 0
        self._seq = 0
        self._q: queue.SimpleQueue[list[dict[str, Any]]] = queue.SimpleQueue()
        self._halt = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._tap: Any = None

    def tap(self, fn: Any) -> None:
        """Hand each sample's rows to ``fn`` (on the sampler thread) instead of queueing
        them for ``batches()``: a recorder that wants rows, not frames, skips pandas."""
        self._tap = fn

    def __enter__(self) -> SockDiagSource:
        self._halt.clear()
        self._thread = threading.Thread(target=self._sampler, name="sockdiag-sampler", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            self.close()
            raise self._error
        return self

    def close(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _sampler(self) -> None:
        try:
            ds = _diag_socket(self.netns)
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            next_t = time.monotonic()
            while not self._halt.is_set():
                try:
                    rows = sample_rows(_dump(ds), self.port, self.dst, self.side, time.time_ns())
                except Exception as e:  # the namespace vanished at the end of a run
                    self.errors += 1
                    log.debug("sock_diag sample: %s", e)
                    rows = []
                if rows:
                    for r in rows:
                        self._seq += 1
                        r["seq"] = self._seq
                    self.samples += len(rows)
                    if self._tap is not None:
                        self._tap(rows)
                    else:
                        self._q.put(rows)
                next_t += self.period
                delay = next_t - time.monotonic()
                if delay < 0:  # fell behind: no burst of catch-up samples
                    next_t = time.monotonic()
                    delay = 0
                self._halt.wait(delay)
        finally:
            try:
                ds.close()
            except Exception as e:
                log.debug("sock_diag close: %s", e)

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        from profiler.sources.qmp import rows_to_frame

        while not stop.is_set():
            rows: list[dict[str, Any]] = []
            try:
                rows += self._q.get(timeout=0.1)
                while True:
                    rows += self._q.get_nowait()
            except queue.Empty:
                pass
            yield rows_to_frame(rows) if rows else pd.DataFrame()
            if self._thread is None and self._q.empty():
                return

    def health(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "samples": self.samples,
            "errors": self.errors,
            "netns": self.netns,
        }
