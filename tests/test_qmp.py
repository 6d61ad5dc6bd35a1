"""QMP source: row mapping, events.jsonl reading, and control of a real QEMU over QMP."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from profiler import events as ev
from profiler.errors import InputError
from profiler.events import rows_to_frame
from profiler.lab import qemu as lq
from profiler.qmpctl import QmpControl
from profiler.sources.jsonl import read_events_jsonl
from profiler.sources.qmp import (
    QmpGone,
    QmpRefused,
    QmpSource,
    event_row,
    params_row,
    query_row,
)

DATA = Path(__file__).resolve().parent / "data" / "real"
FIXTURES = sorted(p for p in DATA.iterdir() if (p / "events.jsonl").exists())


def test_migration_event_rows() -> None:
    ts = {"seconds": 1795710417, "microseconds": 43400}
    r = event_row("source", {"event": "MIGRATION", "data": {"status": "active"}, "timestamp": ts})
    assert r["event"] == ev.QMP_MIGRATION and r["state"] == "active" and r["side"] == "source"
    assert r["t_ns"] == 1795710417_043400_000 and r["origin"] == ev.Origin.QMP
    r = event_row("source", {"event": "MIGRATION_PASS", "data": {"pass": 3}, "timestamp": ts})
    assert r["event"] == ev.QMP_MIGRATION_PASS and r["dirty_syncs"] == 3
    # VFIO_MIGRATION as QAPI documents it (qapi/vfio.json, QEMU >= 9.1)
    r = event_row(
        "destination",
        {
            "event": "VFIO_MIGRATION",
            "timestamp": ts,
            "data": {
                "device-id": "vfio0",
                "qom-path": "/machine/peripheral/vfio0",
                "device-state": "stop-copy",
            },
        },
    )
    assert (r["event"], r["device"], r["state"]) == (ev.QMP_VFIO_MIGRATION, "vfio0", "stop-copy")
    r = event_row(
        "source", {"event": "STOP", "timestamp": {"seconds": -1, "microseconds": -1}}, recv_ns=42
    )
    assert r["event"] == ev.QMP_EVENT and r["state"] == "STOP" and r["t_ns"] == 42


@pytest.mark.parametrize("fixture", ["7.2-converges", "10.0-converges"])
def test_query_row_from_real_reply(fixture: str) -> None:
    reply = json.loads((DATA / fixture / "query-migrate-source.json").read_text())
    r = query_row("source", reply, t_ns=7)
    assert r["state"] == "completed"
    assert r["bytes"] == reply["ram"]["transferred"]
    assert r["dirty_syncs"] == reply["ram"]["dirty-sync-count"]
    assert r["dur_ns"] == reply["total-time"] * 1_000_000
    assert json.loads(r["detail"]) == reply


def test_params_row_units() -> None:
    r = params_row("source", {"max-bandwidth": 128 * 1024 * 1024, "downtime-limit": 50}, why="set")
    assert r["state"] == "set" and r["dur_ns"] == 50_000_000
    assert r["bw_bytes_per_ms"] == pytest.approx(134217.728)


@pytest.mark.parametrize("fixture", [p.name for p in FIXTURES])
def test_real_events_jsonl_reads_as_schema(fixture: str) -> None:
    df = read_events_jsonl(DATA / fixture / "events.jsonl")
    ev.validate(df, fixture)
    assert (df["event"] == ev.QMP_QUERY_MIGRATE).sum() > 0
    assert df["t_ns"].notna().all()
    assert set(df["origin"].dropna().unique()) <= {"qmp", "lab", "sockdiag"}


def test_events_jsonl_bad_line_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    p.write_text('{"event": "lab_mark", "t_ns": 1}\n[1, 2]\n')
    with pytest.raises(InputError) as e:
        read_events_jsonl(p)
    assert e.value.line == 2 and str(p) in str(e.value)
    p.write_text('{"event": "lab_mark"}\n{not json\n')
    with pytest.raises(InputError, match=":2: not JSON"):
        read_events_jsonl(p)
    with pytest.raises(InputError, match="cannot read"):
        read_events_jsonl(tmp_path / "missing.jsonl")


def test_rows_to_frame_empty_and_mixed() -> None:
    ev.validate(rows_to_frame([]))
    df = rows_to_frame([{"event": "lab_mark", "t_ns": 1}, {"event": "qmp_params", "dur_ns": 5}])
    ev.validate(df)
    assert df["dur_ns"].tolist()[1] == 5


@pytest.fixture
def qemu_qmp(tmp_path: Path):
    """A real, paused QEMU 7.2 with a QMP socket."""
    sock = tmp_path / "qmp.sock"
    p = _paused_qemu(sock)
    yield p, sock
    if p.poll() is None:
        p.kill()
    p.wait()


@pytest.mark.slow
def test_qmp_source_against_real_qemu(qemu_qmp) -> None:
    proc, sock = qemu_qmp
    with QmpSource({"source": str(sock)}, poll_hz=20, params_hz=2) as q:
        ctl = QmpControl(q)
        assert ctl.version("source").startswith("7.2.")
        ctl.enable_migration_events("source")
        new = ctl.set_parameters("source", downtime_limit=123, max_bandwidth=2**20)
        assert new["downtime-limit"] == 123 and new["max-bandwidth"] == 2**20
        with pytest.raises(QmpRefused) as e:
            ctl.set_parameters("source", avail_switchover_bandwidth=1)
        msg = str(e.value)
        assert "QEMU 7.2" in msg and "(source)" in msg and "avail-switchover-bandwidth" in msg
        stop = threading.Event()
        frames = []
        deadline = time.monotonic() + 60  # a failure bound only: the loop ends on a state
        for b in q.batches(stop):
            if len(b):
                ev.validate(b)
                frames.append(b)
            # ten idle polls answered, and the parameters read again by the params task
            if q.health()["source_polls"] >= 10 and sum(
                    (f["event"] == ev.QMP_PARAMS).sum() for f in frames) >= 2:
                stop.set()
            assert time.monotonic() < deadline, q.health()
        df = ev.concat(frames)
        sets = df[(df["event"] == ev.QMP_PARAMS) & (df["state"] == "set")]
        assert (sets["dur_ns"] == 123_000_000).any()
        # no migration yet: idle polls are not recorded
        assert not (df["event"] == ev.QMP_QUERY_MIGRATE).any()
        proc.kill()
        proc.wait()
        with pytest.raises(QmpGone):
            for _ in range(20):  # the poll task notices the hang-up first, or this call does
                ctl.execute("source", "query-status", timeout=2)
                time.sleep(0.1)


def test_qmp_source_missing_socket(tmp_path: Path) -> None:
    with (
        pytest.raises(QmpGone, match="cannot connect to QMP"),
        QmpSource({"source": str(tmp_path / "none.sock")}, connect_timeout=0.3),
    ):
        pass


def _paused_qemu(sock: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(lq.SYSTEM_QEMU),
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-m",
            "32",
            "-nodefaults",
            "-display",
            "none",
            "-S",
            "-qmp",
            f"unix:{sock},server=on,wait=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_qmp_source_reconnects_to_a_restarted_qemu(qemu_qmp) -> None:
    """A live source follows QEMU through a restart on the same socket (runstate_changed):
    rows say when it dropped and came back, and the capabilities it set are restored."""
    proc, sock = qemu_qmp
    frames = []
    with QmpSource({"source": str(sock)}, poll_hz=10, params_hz=0) as q:
        ctl = QmpControl(q)
        ctl.enable_migration_events("source")
        proc.kill()
        proc.wait()
        sock.unlink()
        second = _paused_qemu(sock)
        try:
            end = time.monotonic() + 20
            while q.sides["source"].reconnects < 1 and time.monotonic() < end:
                time.sleep(0.05)
            assert q.sides["source"].reconnects == 1 and q.sides["source"].gone is None
            assert q.health()["source_reconnects"] == 1
            caps = ctl.execute("source", "query-migrate-capabilities")
            assert {c["capability"]: c["state"] for c in caps}["events"] is True
            assert "status" not in ctl.query_migrate("source")  # the new QEMU: no migration yet
            stop = threading.Event()
            stop.set()
            frames = [b for b in q.batches(stop) if len(b)]
        finally:
            second.kill()
            second.wait()
    df = ev.concat(frames)
    conn = df.loc[df["event"] == ev.QMP_EVENT, "state"].astype(str).tolist()
    assert conn == ["qmp-disconnected", "qmp-reconnected"]


@pytest.mark.slow
def test_held_monitor_named_then_picked_up(qemu_qmp) -> None:
    """A monitor another client holds: the kernel names the holder (sock_diag + /proc),
    the live source says so once and connects when the client lets go."""
    import os
    import socket

    from profiler.sources.unixpeer import connected_peers

    proc, sock = qemu_qmp
    while not sock.exists():
        assert proc.poll() is None
        time.sleep(0.05)
    assert connected_peers(sock) == []  # free
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    holder.connect(str(sock))
    holder.makefile("r").readline()  # QEMU's greeting: this client is the one it serves
    (peer,) = connected_peers(sock)
    assert peer.pid == os.getpid() and peer.describe().startswith(f"pid {os.getpid()} (")
    # the lab's kind of source (no waiting) fails: nothing answers on a held monitor
    with pytest.raises(QmpGone, match="cannot connect"), QmpSource({"source": str(sock)},
                                                                   connect_timeout=0.5):
        pass
    said: list[str] = []
    with QmpSource({"source": str(sock)}, params_hz=0, wait_if_held=True, notify=said.append) as q:
        conn = q.sides["source"]
        assert not conn.up.is_set() and f"pid {os.getpid()}" in q.health()["source_held_by"]
        with pytest.raises(QmpGone, match="held by"):
            QmpControl(q).execute("source", "query-status")
        holder.close()
        assert conn.up.wait(60), q.health()
        assert QmpControl(q).execute("source", "query-status")["status"] == "prelaunch"
        stop = threading.Event()
        stop.set()
        df = ev.concat([b for b in q.batches(stop) if len(b)])
    assert len(said) == 2 and "is held by" in said[0] and "is free now" in said[1]
    conn_rows = df.loc[df["event"] == ev.QMP_EVENT, "state"].astype(str).tolist()
    assert conn_rows == ["qmp-held", "qmp-connected"]
