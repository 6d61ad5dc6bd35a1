"""sock_diag source on real TCP connections (loopback, and inside a lab namespace)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

import pytest

from profiler import events as ev
from profiler.errors import SetupError
from profiler.sources.sockdiag import SockDiagSource


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {ln.split()[0] for ln in out.splitlines() if ln.strip()}


def test_samples_a_loopback_connection() -> None:
    total = 8 * 1024 * 1024
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    got = []

    def sink() -> None:
        c, _ = srv.accept()
        n = 0
        while n < total:
            b = c.recv(1 << 20)
            if not b:
                break
            n += len(b)
        got.append(n)
        time.sleep(1.0)  # keep the connection up while the sampler looks at it
        c.close()

    t = threading.Thread(target=sink)
    t.start()
    cli = socket.create_connection(("127.0.0.1", port))
    try:
        with SockDiagSource(port=port, dst="127.0.0.1", hz=20) as sd:
            cli.sendall(b"\x5a" * total)
            stop = threading.Event()
            frames = []
            end = time.monotonic() + 0.6
            for b in sd.batches(stop):
                if len(b):
                    ev.validate(b)
                    frames.append(b)
                if time.monotonic() > end:
                    stop.set()
            df = ev.concat(frames)
        assert len(df) >= 3
        assert (df["event"] == ev.SOCKDIAG_SAMPLE).all() and (df["side"] == "source").all()
        last = df.iloc[-1]
        assert int(last["bytes"]) == total  # bytes_acked
        assert json.loads(last["detail"])["bytes_sent"] >= total  # retransmits would add
        assert int(last["dur_ns"]) > 0
        assert df["t_ns"].is_monotonic_increasing
    finally:
        cli.close()
        t.join()
        srv.close()
    assert got == [total]


def test_missing_namespace_is_a_setup_error_and_creates_nothing() -> None:
    name = "migprof-nosuch-src"
    with (
        pytest.raises(SetupError, match=f"network namespace '{name}'"),
        SockDiagSource(port=4444, netns=name),
    ):
        pass
    assert name not in _netns()


@pytest.mark.slow
def test_samples_inside_a_lab_namespace() -> None:
    """The diag socket is created in the namespace: it sees that namespace's sockets only."""
    from profiler.lab.net import LabNet
    from profiler.lab.qemu import owner_tag

    with LabNet(owner_tag()) as net:  # our pid in the name: no other lab treats it as stale
        ns_dst, ns_src = net.ns["destination"], net.ns["source"]
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns_dst,
                "python3",
                "-c",
                "import socket,time;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                f"s.bind(('{net.dst_addr}',4444));s.listen();c,_=s.accept();n=0\n"
                "while True:\n b=c.recv(1<<20)\n if not b: break\n n+=len(b)\n"
                "time.sleep(0.5)",
            ]
        )
        client = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns_src,
                "python3",
                "-c",
                "import socket,time\nfor i in range(100):\n try:\n"
                f"  c=socket.create_connection(('{net.dst_addr}',4444)); break\n"
                " except OSError: time.sleep(0.05)\n"
                "c.sendall(b'x'*(4<<20));time.sleep(1.5);c.close()",
            ]
        )
        try:
            with SockDiagSource(port=4444, dst=net.dst_addr, netns=ns_src, hz=10) as sd:
                stop = threading.Event()
                frames = []
                end = time.monotonic() + 3.0
                for b in sd.batches(stop):
                    if len(b):
                        frames.append(b)
                        if int(b["bytes"].max()) == 4 << 20 and len(frames) >= 3:
                            stop.set()
                    if time.monotonic() > end:
                        stop.set()
            df = ev.concat(frames)
            assert len(df) >= 3
            assert int(df["bytes"].max()) == 4 << 20
            # and the root namespace's diag socket does not see it
            with SockDiagSource(port=4444, dst=net.dst_addr, hz=10) as root:
                assert root.health()["samples"] == 0
                time.sleep(0.3)
                assert root.health()["samples"] == 0
        finally:
            for p in (client, server):
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def test_direct_decoder_matches_pyroute2_on_the_same_reply() -> None:
    """The sampler's own struct decoder and pyroute2's, on one kernel reply: same
    header fields, same tcp_info, same rows."""
    from pyroute2.netlink.diag import MarshalDiag

    from profiler.sources.sockdiag import RawDiag, _diag_socket, parse_diag_reply, sample_rows

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port))
    peer, _ = srv.accept()
    ds = _diag_socket(None)
    raw = RawDiag(ds)
    try:
        cli.sendall(b"\x5a" * 300_000)
        n = 0
        while n < 300_000:
            n += len(peer.recv(1 << 20))
        raw.request()
        replies = []
        while True:  # the whole dump, as the kernel sent it
            data = raw.read()
            replies.append(data)
            if parse_diag_reply(data, None, raw.seq)[1]:
                break
        ours = [m for d in replies for m in parse_diag_reply(d, port, raw.seq)[0]]
        theirs = [
            m for d in replies for m in MarshalDiag().parse(d) if m.get("header")["type"] == 20
        ]
        mine = [m for m in ours if m["idiag_dport"] == port]
        ref = [m for m in theirs if m.get("idiag_dport") == port]
        assert len(mine) == len(ref) == 1
        m, r = mine[0], ref[0]
        for k, v in m.items():
            assert r.get(k) == v, k
        info, rinfo = m.get_attr("INET_DIAG_INFO"), r.get_attr("INET_DIAG_INFO")
        assert info["tcpi_bytes_acked"] == 300_001 and info["tcpi_bytes_sent"] >= 300_000
        for k, v in info.items():
            assert rinfo.get(k) == v, k
        assert sample_rows([m], port, "127.0.0.1", "source", 1) == sample_rows(
            [r], port, "127.0.0.1", "source", 1
        )
        # sockets on other ports are listed, their tcp_info is not decoded
        assert all(o.get_attr("INET_DIAG_INFO") is None for o in ours if o["idiag_dport"] != port)
    finally:
        raw.close()
        ds.close()
        for s in (cli, peer, srv):
            s.close()
