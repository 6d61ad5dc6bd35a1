"""USDT: QEMU's dtrace probes decoded into the same events the log parser makes.

The probes come from ``tests/fake_vfio/fake_qemu_dtrace.c`` (no dtrace build of QEMU on
this host: Debian ships the log back end); it also writes the QEMU 10.0 log line of each
call, and the test compares the USDT events field by field with the parser's reading.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from profiler import events as ev

pytestmark = [pytest.mark.bpf]

HERE = Path(__file__).resolve().parent / "fake_vfio"
COMPARED = ["event", "device", "bytes", "pre_bytes", "post_bytes", "stopcopy_bytes", "init_bytes",
            "dirty_bytes", "count", "ret", "flags", "state", "detail", "tid"]


@pytest.fixture(scope="module")
def dtrace_run(tmp_path_factory):
    from profiler.sources.usdt import UsdtSource

    d = tmp_path_factory.mktemp("usdt")
    exe = d / "fake_qemu_dtrace"
    subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", str(exe), str(HERE / "fake_qemu_dtrace.c")],
                   check=True, capture_output=True)
    logf = d / "qemu.log"
    p = subprocess.Popen([str(exe), str(logf)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("ready")
        frames: list[pd.DataFrame] = []
        with UsdtSource(p.pid, side="source") as src:
            probes = [pr.event for pr in src.probes]
            p.stdin.write("go\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "done"
            deadline = time.monotonic() + 10
            while sum(len(f) for f in frames) < 17 and time.monotonic() < deadline:
                frames.append(src.drain())
                time.sleep(0.05)
            health = src.health()
        p.stdin.write("end\n")
        p.stdin.flush()
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    from profiler.sources.qemu_log import read_log

    parsed = read_log(logf, side="source").frame
    return {"usdt": ev.concat([f for f in frames if len(f)]), "log": parsed, "probes": probes,
            "health": health, "pid": p.pid}


def test_probes_found(dtrace_run):
    assert sorted(dtrace_run["probes"]) == sorted([
        "migrate_set_state", "vfio_migration_set_state", "vfio_state_pending_exact", "vfio_save_block",
        "vfio_vmstate_change", "migrate_pending_exact", "vfio_load_state_device_data",
        "vmstate_downtime_checkpoint"])
    assert dtrace_run["health"]["lost"] == 0


def test_same_events_as_log_parser(dtrace_run):
    u, lg = dtrace_run["usdt"], dtrace_run["log"]
    ev.validate(u, "usdt")
    assert len(u) == len(lg) == 17
    assert (u["origin"] == "usdt").all() and (u["pid"] == dtrace_run["pid"]).all()
    u = u.sort_values("seq").reset_index(drop=True)
    lg = lg.sort_values("line").reset_index(drop=True)
    for col in COMPARED:
        a = u[col].astype("string" if ev.COLUMNS[col] in ("string", "category") else ev.COLUMNS[col])
        b = lg[col].astype(a.dtype)
        pd.testing.assert_series_equal(a, b, check_names=False, obj=col)


def test_values(dtrace_run):
    u = dtrace_run["usdt"].sort_values("seq")
    states = u[u["event"] == "migrate_set_state"]["state"].tolist()
    assert states == ["setup", "active", "device", "completed"]
    blocks = u[u["event"] == "vfio_save_block"]
    assert blocks["bytes"].tolist() == [1048576, 1048576, -42]
    exact = u[u["event"] == "vfio_state_pending_exact"]
    assert exact["stopcopy_bytes"].tolist() == [1000, 1001, 1002]
    assert exact["dirty_bytes"].tolist() == [0, 4096, 8192]
    big = u[u["event"] == "migrate_pending_exact"]
    assert big["bytes"].tolist() == [5000000000, 5000000001, 5000000002]
    load = u[u["event"] == "vfio_load_state_device_data"]
    assert load["ret"].tolist() == [-5]
    # the wall clock of USDT events agrees with the log's within scheduling noise
    lg = dtrace_run["log"].sort_values("line")
    skew = (u["t_ns"].to_numpy() - lg["t_ns"].to_numpy()).astype("int64")
    assert abs(skew).max() < 50_000_000


def test_no_probes_is_a_clear_error():
    """A process without qemu:* probes (this Python): SetupError naming the cause."""
    import os

    from profiler.errors import SetupError
    from profiler.sources.usdt import UsdtSource

    with pytest.raises(SetupError, match="no qemu:\\* USDT probes"), UsdtSource(os.getpid()):
        pass
