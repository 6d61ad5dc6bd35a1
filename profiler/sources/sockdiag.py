"""sock_diag source: the migration TCP connection as seen by the host kernel.

Samples ``tcp_info`` of the connection towards ``dst:port`` (the source QEMU's outgoing
migration socket) through NETLINK_SOCK_DIAG at ``hz`` and emits ``sockdiag_sample`` rows:
``bytes`` = data bytes acked (tcpi_bytes_acked less the SYN), ``dur_ns`` = smoothed RTT,
``bw_bytes_per_ms`` = the kernel's delivery-rate estimate, ``detail`` = JSON of the rest
(bytes sent with retransmissions, retransmits, cwnd, not-sent bytes, min RTT, ports, cookie).

A socket is bound to the namespace it was created in, so the diag socket is created once,
inside the target namespace (``netns=``), by ``_NsDiagSocket``; no thread ever switches
namespace. The sampler dumps over a duplicate of that socket's descriptor and decodes the
replies itself (``RawDiag``, ``parse_diag_reply``: ~30x cheaper than pyroute2's decoder,
which stays as the fallback). ``get_sock_stats()`` has an unstable signature upstream and
is called in one place only (``_dump``).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import struct
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


# ---- a direct NETLINK_SOCK_DIAG dump: the sampler runs at 10 Hz for a whole migration,
# and pyroute2 decodes every attribute of every socket in Python (~1 ms a dump); this
# reads the fixed-layout headers with struct and decodes tcp_info only for the
# migration socket (~0.05 ms). Same rows; ``tests/test_sockdiag.py`` checks the two
# decoders against each other on the same kernel reply.

_NLMSG_ERROR, _NLMSG_DONE, _SOCK_DIAG_BY_FAMILY = 2, 3, 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLH = struct.Struct("=IHHII")  # nlmsghdr
_REQ = struct.Struct("=BBBBI48x")  # inet_diag_req_v2 (its inet_diag_sockid left zero)
_PORTS = struct.Struct(">HH")  # id.sport, id.dport: network order
_IF_COOKIE = struct.Struct("=IQ")  # id.if, id.cookie
_MSG_TAIL = struct.Struct("=5I")  # expires, rqueue, wqueue, uid, inode
_RTA = struct.Struct("=HH")
_DIAG_MSG_LEN = 72  # sizeof(struct inet_diag_msg)
# struct tcp_info (include/uapi/linux/tcp.h): name -> (offset, format); a field beyond
# the length a kernel sends reads as absent
_TCP_INFO = {
    "tcpi_state": (0, "B"),
    "tcpi_ca_state": (1, "B"),
    "tcpi_retransmits": (2, "B"),
    "tcpi_probes": (3, "B"),
    "tcpi_backoff": (4, "B"),
    "tcpi_options": (5, "B"),
    "tcpi_rto": (8, "I"),
    "tcpi_ato": (12, "I"),
    "tcpi_snd_mss": (16, "I"),
    "tcpi_rcv_mss": (20, "I"),
    "tcpi_unacked": (24, "I"),
    "tcpi_sacked": (28, "I"),
    "tcpi_lost": (32, "I"),
    "tcpi_retrans": (36, "I"),
    "tcpi_fackets": (40, "I"),
    "tcpi_last_data_sent": (44, "I"),
    "tcpi_last_ack_sent": (48, "I"),
    "tcpi_last_data_recv": (52, "I"),
    "tcpi_last_ack_recv": (56, "I"),
    "tcpi_pmtu": (60, "I"),
    "tcpi_rcv_ssthresh": (64, "I"),
    "tcpi_rtt": (68, "I"),
    "tcpi_rttvar": (72, "I"),
    "tcpi_snd_ssthresh": (76, "I"),
    "tcpi_snd_cwnd": (80, "I"),
    "tcpi_advmss": (84, "I"),
    "tcpi_reordering": (88, "I"),
    "tcpi_rcv_rtt": (92, "I"),
    "tcpi_rcv_space": (96, "I"),
    "tcpi_total_retrans": (100, "I"),
    "tcpi_pacing_rate": (104, "Q"),
    "tcpi_max_pacing_rate": (112, "Q"),
    "tcpi_bytes_acked": (120, "Q"),
    "tcpi_bytes_received": (128, "Q"),
    "tcpi_segs_out": (136, "I"),
    "tcpi_segs_in": (140, "I"),
    "tcpi_notsent_bytes": (144, "I"),
    "tcpi_min_rtt": (148, "I"),
    "tcpi_data_segs_in": (152, "I"),
    "tcpi_data_segs_out": (156, "I"),
    "tcpi_delivery_rate": (160, "Q"),
    "tcpi_busy_time": (168, "Q"),
    "tcpi_rwnd_limited": (176, "Q"),
    "tcpi_sndbuf_limited": (184, "Q"),
    "tcpi_delivered": (192, "I"),
    "tcpi_delivered_ce": (196, "I"),
    "tcpi_bytes_sent": (200, "Q"),
    "tcpi_bytes_retrans": (208, "Q"),
    "tcpi_dsack_dups": (216, "I"),
    "tcpi_reord_seen": (220, "I"),
    "tcpi_rcv_ooopack": (224, "I"),
    "tcpi_snd_wnd": (228, "I"),
}


class DiagMsg(dict):
    """One socket of a dump: the ``idiag_*`` header fields, and ``get_attr`` like
    pyroute2's messages (only ``INET_DIAG_INFO`` is decoded)."""

    __slots__ = ("info",)

    def get_attr(self, name: str) -> dict[str, Any] | None:
        return self.info if name == "INET_DIAG_INFO" else None


def parse_tcp_info(data: bytes | memoryview) -> dict[str, int]:
    """``struct tcp_info`` as a dict of the ``tcpi_*`` fields the kernel sent."""
    n = len(data)
    out = {
        k: struct.unpack_from("=" + f, data, off)[0]
        for k, (off, f) in _TCP_INFO.items()
        if off + struct.calcsize(f) <= n
    }
    if n > 7:
        out["tcpi_snd_wscale"] = data[6] & 0x0F
        out["tcpi_rcv_wscale"] = data[6] >> 4
        out["tcpi_delivery_rate_app_limited"] = data[7] & 0x1
    return out


def parse_diag_reply(
    data: bytes, port: int | None = None, seq: int | None = None
) -> tuple[list[DiagMsg], bool]:
    """Messages in one netlink read: (sockets, done). tcp_info is decoded only for
    sockets whose peer port is ``port`` (all when None)."""
    out: list[DiagMsg] = []
    mv = memoryview(data)
    off, end, done = 0, len(data), False
    while off + _NLH.size <= end:
        length, mtype, _flags, mseq, _pid = _NLH.unpack_from(data, off)
        if length < _NLH.size or off + length > end:
            raise OSError(f"sock_diag: truncated netlink message at byte {off}")
        if seq is not None and mseq != seq:
            off += (length + 3) & ~3
            continue
        if mtype == _NLMSG_DONE:
            done = True
            break
        if mtype == _NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, off + _NLH.size)
            if err:
                raise OSError(-err, f"sock_diag dump refused: {os.strerror(-err)}")
        elif mtype == _SOCK_DIAG_BY_FAMILY and length >= _NLH.size + _DIAG_MSG_LEN:
            o = off + _NLH.size
            family, state, timer, retrans = data[o : o + 4]
            sport, dport = _PORTS.unpack_from(data, o + 4)
            alen = 4 if family == socket.AF_INET else 16
            m = DiagMsg(
                idiag_family=family,
                idiag_state=state,
                idiag_timer=timer,
                idiag_retrans=retrans,
                idiag_sport=sport,
                idiag_dport=dport,
                idiag_src=socket.inet_ntop(family, data[o + 8 : o + 8 + alen]),
                idiag_dst=socket.inet_ntop(family, data[o + 24 : o + 24 + alen]),
            )
            m["idiag_if"], m["idiag_cookie"] = _IF_COOKIE.unpack_from(data, o + 40)
            (
                m["idiag_expires"],
                m["idiag_rqueue"],
                m["idiag_wqueue"],
                m["idiag_uid"],
                m["idiag_inode"],
            ) = _MSG_TAIL.unpack_from(data, o + 52)
            m.info = None
            if port is None or dport == port:
                a, a_end = o + _DIAG_MSG_LEN, off + length
                while a + _RTA.size <= a_end:
                    alen_, atype = _RTA.unpack_from(data, a)
                    if alen_ < _RTA.size:
                        break
                    if atype == INET_DIAG_INFO:
                        m.info = parse_tcp_info(mv[a + _RTA.size : a + alen_])
                        break
                    a += (alen_ + 3) & ~3
            out.append(m)
        off += (length + 3) & ~3
    return out, done


class RawDiag:
    """Dumps connected TCP/IPv4 sockets over a NETLINK_SOCK_DIAG socket already made
    (and bound) by pyroute2 inside the right namespace: its descriptor is duplicated,
    the namespace comes with it."""

    def __init__(self, ds: Any, timeout: float = 2.0):
        self.sock = socket.socket(fileno=os.dup(ds.fileno()))
        self.sock.settimeout(timeout)
        self.seq = 0x4D50_0000  # distinct from pyroute2's own sequence numbers

    def request(self) -> None:
        """Send one dump request (the reply is read by ``dump``/``read``)."""
        from pyroute2.netlink.diag import SS_CONN

        self.seq += 1
        req = _REQ.pack(socket.AF_INET, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0, SS_CONN)
        hdr = _NLH.pack(
            _NLH.size + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, self.seq, 0
        )
        self.sock.sendto(hdr + req, (0, 0))

    def read(self) -> bytes:
        return self.sock.recv(1 << 16)

    def dump(self, port: int | None = None) -> list[DiagMsg]:
        """Connected TCP/IPv4 sockets; tcp_info decoded for peer port ``port`` only."""
        self.request()
        out: list[DiagMsg] = []
        while True:
            msgs, done = parse_diag_reply(self.read(), port, self.seq)
            out += msgs
            if done:
                return out

    def close(self) -> None:
        self.sock.close()


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
            "bytes_sent": info.get("tcpi_bytes_sent"),
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
        raw: RawDiag | None = None
        try:
            raw = RawDiag(ds)
        except OSError as e:  # no dup'able descriptor: pyroute2 decodes every dump
            log.debug("sock_diag: direct dump unavailable (%s); using pyroute2", e)
        try:
            next_t = time.monotonic()
            while not self._halt.is_set():
                try:
                    msgs = raw.dump(self.port) if raw is not None else _dump(ds)
                    rows = sample_rows(msgs, self.port, self.dst, self.side, time.time_ns())
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
            if raw is not None:
                raw.close()
            try:
                ds.close()
            except Exception as e:
                log.debug("sock_diag close: %s", e)

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        from profiler.events import rows_to_frame

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
