"""`migprof record` against real QEMUs: QMP of a running QEMU, the trace logs of a real lab
migration tailed live; Ctrl-C finalises, SIGKILL leaves a readable stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from profiler import store
from profiler.cli import main
from profiler.pipeline import load

ROOT = Path(__file__).resolve().parent.parent
MIGPROF = [sys.executable, "-m", "profiler.cli"]
QEMU = "/usr/bin/qemu-system-x86_64"


@pytest.fixture
def qemu(tmp_path: Path):
    """A real QEMU (no guest, paused) with a QMP socket: (socket, pid)."""
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen([QEMU, "-M", "none", "-display", "none", "-nodefaults", "-S",
                             "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        assert sock.exists(), "QEMU did not open its QMP socket"
        yield sock, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def qemu_qmp(qemu: tuple[Path, int]) -> Path:
    return qemu[0]


def _rows(partial: Path) -> int:
    """Events readable from a recording being written (0 before its first batch)."""
    try:
        return len(store.read_recording(partial)[0])
    except Exception:
        return 0


def _wait_for(cond, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_record_qmp_for_a_duration(qemu_qmp: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.parquet"
    assert main(["record", "--qmp", str(qemu_qmp), "-o", str(out), "-d", "1", "-i", "0"]) == 0
    df, meta, warnings = store.read_recording(out)
    assert warnings == [] and not out.with_name(out.name + ".partial").exists()
    assert "qmp_params" in set(df["event"].astype(str))
    assert meta["qemu_version"].startswith("7.2")
    assert meta["sources"] == ["qmp:source"]
    assert meta["migration_params"]["source"]["downtime-limit"] >= 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_record_stops_cleanly_on_signal(qemu_qmp: Path, tmp_path: Path, sig: int) -> None:
    out = tmp_path / "s.parquet"
    partial = out.with_name(out.name + store.PARTIAL_SUFFIX)
    p = subprocess.Popen([*MIGPROF, "record", "--qmp", str(qemu_qmp), "-o", str(out)],
                         cwd=ROOT, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: partial.exists() and partial.stat().st_size > 2000)
    time.sleep(0.8)  # the first batch (QMP parameters) is flushed within 0.5 s
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "finalising" in err and out.exists() and not partial.exists()
    df, _, warnings = store.read_recording(out)
    assert len(df) >= 1 and warnings == []


def test_record_rejects_nothing_to_record(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["record", "-o", str(tmp_path / "x.parquet")]) == 2
    assert "nothing to record" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.slow
def test_record_trace_logs_of_a_real_migration(tmp_path: Path) -> None:
    """Two recorders tail a real lab migration's logs: one is stopped with Ctrl-C after the
    migration (complete, finalised), one is SIGKILLed mid-run (its stream still reads)."""
    run = tmp_path / "run"
    lab = subprocess.Popen([*MIGPROF, "lab", "-s", "converges", "--net", "loopback", "--mem-mb", "64",
                            "--dirty-mb", "8", "--rate-mbps", "4", "--max-bandwidth", "8",
                            "--downtime-limit", "100", "-o", str(run)],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    recs = {}
    try:
        _wait_for(lambda: (run / "source.log").exists() or lab.poll() is not None, 120)
        assert lab.poll() is None, "lab ended before its source log appeared"
        for name in ("clean", "killed"):
            recs[name] = subprocess.Popen(
                [*MIGPROF, "record", "--trace-log", f"source={run / 'source.log'}",
                 "--trace-log", f"destination={run / 'destination.log'}", "-i", "0",
                 "-o", str(tmp_path / f"{name}.parquet")],
                cwd=ROOT, stderr=subprocess.PIPE, text=True)
        killed_partial = tmp_path / f"killed.parquet{store.PARTIAL_SUFFIX}"
        _wait_for(lambda: _rows(killed_partial) > 0, 120)  # a batch is on disk
        os.kill(recs["killed"].pid, signal.SIGKILL)
        recs["killed"].wait(timeout=10)
        _, lab_err = lab.communicate(timeout=180)
        assert lab.returncode == 0, lab_err[-2000:]
        time.sleep(1.0)  # let the recorder read the logs' last lines
        recs["clean"].send_signal(signal.SIGINT)
        _, err = recs["clean"].communicate(timeout=60)
        assert recs["clean"].returncode == 0, err
    finally:
        for p in [lab, *recs.values()]:
            if p.poll() is None:
                p.kill()
                p.wait()
    # the clean recording holds exactly what the logs hold
    ref = load([str(run / "source.log"), str(run / "destination.log")], sides=["source", "destination"]).events
    df, meta, warnings = store.read_recording(tmp_path / "clean.parquet")
    assert warnings == [] and meta["sources"] == ["qemu-log:source", "qemu-log:destination"]
    assert len(df) == len(ref) > 0
    assert sorted(df["event"].astype(str)) == sorted(ref["event"].astype(str))
    # and its report matches the run's own logs
    assert main(["compare", str(tmp_path / "clean.parquet"), "--", str(run / "source.log"),
                 "--fail-on", "total_ms:+0", "--fail-on", "dirty_syncs:+0"]) == 0
    # the killed one: a readable prefix of the same events, and a warning that it was not closed
    kdf, _, kwarn = store.read_recording(tmp_path / "killed.parquet.partial")
    assert 0 < len(kdf) <= len(ref) and kwarn


@pytest.mark.bpf
def test_record_bpf_and_qmp_store_clock_offsets(qemu: tuple[Path, int], tmp_path: Path) -> None:
    """BPF on the real QEMU process plus its QMP: the BPF clock offset and attach path land
    in the metadata (no VFIO here, so no bpf_* events are expected)."""
    qemu_qmp, pid = qemu
    out = tmp_path / "b.parquet"
    assert main(["record", "-p", str(pid), "--qmp", str(qemu_qmp), "-o", str(out), "-d", "1", "-i", "0"]) == 0
    df, meta, warnings = store.read_recording(out)
    assert warnings == [] and meta["sources"] == ["qmp:source", "bpf"]
    assert meta["attach"]["bpf_path"] in ("tracepoint", "kprobe")
    assert meta["clock_offsets"]["bpf_monotonic_to_realtime_ns"] > 0
    assert meta["health"]["bpf"]["pids"] == [pid]

