"""`migprof record` against a real QEMU (QMP, QEMU trace, BPF): Ctrl-C and SIGTERM finalise
the file, SIGKILL leaves a readable stream, a file size limit stops it cleanly.

`record` is `live --no-tui --record` (profiler/commands/live.py); these tests hold it to
what recordings promise (docs/recordings.md)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from profiler import store
from profiler.cli import main
from profiler.errors import InputError

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
    except InputError:  # not there yet, or still empty (any other error is a failure)
        return 0


def _wait_for(cond, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_record_qmp_for_a_duration(qemu_qmp: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.parquet"
    assert main(["record", "--qmp", str(qemu_qmp), "--no-bpf", "-o", str(out), "-d", "1", "-i", "0"]) == 0
    df, meta, warnings = store.read_recording(out)
    assert warnings == [] and not out.with_name(out.name + store.PARTIAL_SUFFIX).exists()
    assert "qmp_params" in set(df["event"].astype(str))
    assert "qmp" in meta["origins"] and meta["sources"]
    # the writer keeps the migration parameters it saw go by
    assert meta["migration_params"]["source"]["downtime-limit"] == 300  # QEMU's default (ms)
    for key in ("host", "kernel", "migprof_version", "schema_version"):
        assert meta[key]


def _start(qemu_qmp: Path, out: Path) -> subprocess.Popen:
    p = subprocess.Popen([*MIGPROF, "record", "--qmp", str(qemu_qmp), "--no-bpf", "-i", "0", "-o", str(out)],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    partial = out.with_name(out.name + store.PARTIAL_SUFFIX)
    _wait_for(lambda: _rows(partial) > 0 or p.poll() is not None)  # a batch is on disk
    assert p.poll() is None, p.stderr.read()
    return p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_record_stops_cleanly_on_signal(qemu_qmp: Path, tmp_path: Path, sig: int) -> None:
    out = tmp_path / "s.parquet"
    p = _start(qemu_qmp, out)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.exists() and not out.with_name(out.name + store.PARTIAL_SUFFIX).exists()
    df, _, warnings = store.read_recording(out)
    assert len(df) >= 1 and warnings == []


def test_sigkilled_recorder_leaves_a_readable_file(qemu_qmp: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k.parquet"
    p = _start(qemu_qmp, out)
    time.sleep(0.5)
    p.kill()
    p.wait(timeout=10)
    partial = out.with_name(out.name + store.PARTIAL_SUFFIX)
    assert not out.exists()
    df, meta, warnings = store.read_recording(partial)
    assert len(df) >= 1 and "qmp_params" in set(df["event"].astype(str))
    assert meta["migration_params"]["source"]  # metadata learnt while recording survives too
    assert warnings and "not closed" in warnings[0]
    capsys.readouterr()
    # readable by report: the file loads (no "error:" line); a paused QEMU never migrated,
    # and a report without a migration exits 2
    assert main(["report", str(partial)]) == 2
    assert "error:" not in capsys.readouterr().err


def test_record_without_a_target_is_a_usage_error(tmp_path: Path) -> None:
    res = subprocess.run([*MIGPROF, "record", "-o", str(tmp_path / "x.parquet")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.bpf
def test_record_bpf_stores_clock_offsets(qemu: tuple[Path, int], tmp_path: Path) -> None:
    """BPF on a real QEMU process: the BPF clock offset and attach path land in the
    metadata (no VFIO on this host, so no bpf_* events are expected)."""
    _, pid = qemu
    out = tmp_path / "b.parquet"
    assert main(["record", "-p", str(pid), "-o", str(out), "-d", "1", "-i", "0"]) == 0
    df, meta, warnings = store.read_recording(out)
    assert warnings == []
    assert meta["attach"] in ("tracepoint", "kprobe")
    assert meta["clock_offsets"]["bpf_monotonic_to_realtime_ns"] > 0
    assert meta["health"]["bpf"]["pids"] == [pid]


def test_record_hits_a_file_size_limit_cleanly(qemu_qmp: Path, tmp_path: Path) -> None:
    """A full disk, as a file size limit: the recording stops with a message naming the
    error, no traceback, and the stream it leaves reads back."""
    import resource

    out = tmp_path / "full.parquet"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4500, 4500))

    # --no-trace: QMP events only, so what the stream may hold is known (below)
    res = subprocess.run([*MIGPROF, "record", "--qmp", str(qemu_qmp), "--no-bpf", "--no-trace",
                          "-o", str(out), "-d", "2", "-i", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, preexec_fn=limit)
    assert "Traceback" not in res.stderr, res.stderr
    assert "recording stopped" in res.stderr and "File too large" in res.stderr
    # the live loop itself went on for its 2 s: a full disk ends the recording, not the run,
    # but the exit status says the recording is incomplete
    assert res.returncode == 2, res.stderr
    assert "recording incomplete" in res.stderr
    partial = out.with_name(out.name + store.PARTIAL_SUFFIX)
    assert not out.exists() and 0 < partial.stat().st_size <= 4500
    df, _, _ = store.read_recording(partial)
    assert set(df["event"].astype(str)) <= {"qmp_params", "qmp_query_migrate", "qmp_event"}


# ---------------------------------------------------------------- --dataset: into a fleet dataset


def _dataset_rows(d: Path, sql: str) -> list[dict]:
    import json

    res = subprocess.run([*MIGPROF, "query", str(d), sql, "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_record_dataset_adds_the_final_recording(qemu_qmp: Path, tmp_path: Path) -> None:
    """After a clean stop (here SIGINT, as Ctrl-C) the finished recording is one unit of the
    dataset, under --host, holding exactly the recording's events."""
    out, d = tmp_path / "r.parquet", tmp_path / "fleet"
    p = subprocess.Popen([*MIGPROF, "record", "--qmp", str(qemu_qmp), "--no-bpf", "-i", "0",
                          "-o", str(out), "--dataset", str(d), "--host", "hv-rec"],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    partial = out.with_name(out.name + store.PARTIAL_SUFFIX)
    _wait_for(lambda: _rows(partial) > 0 or p.poll() is not None)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    df, meta, _ = store.read_recording(out)
    assert f"migprof: added to {d}: host=hv-rec" in err
    got = _dataset_rows(d, "SELECT host, recorded_on, events, source_path, migrations FROM recordings")
    assert got == [{"host": "hv-rec", "recorded_on": meta["host"], "events": len(df),
                    "source_path": str(out), "migrations": 0}]  # a paused QEMU never migrated
    n = _dataset_rows(d, "SELECT count(*) AS n, count(DISTINCT event) AS kinds FROM events")[0]
    assert n == {"n": len(df), "kinds": df["event"].astype(str).nunique()}


def test_record_dataset_refused_before_recording(qemu_qmp: Path, tmp_path: Path) -> None:
    """A directory that is not a dataset, or a host that cannot name a partition: one line,
    exit 2, before anything is attached or written."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not a dataset")
    for extra, msg in ((["--dataset", str(tmp_path / "notes")], "not a migprof dataset"),
                       (["--dataset", str(tmp_path / "new"), "--host", "a/b"], "cannot name a partition"),
                       (["--host", "hv1"], "give --dataset DIR too")):
        out = tmp_path / "x.parquet"
        res = subprocess.run([*MIGPROF, "record", "--qmp", str(qemu_qmp), "--no-bpf", "-o", str(out),
                              "-d", "1", *extra], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and msg in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert not list(tmp_path.glob("x.parquet*")) and not (tmp_path / "new").exists()


def test_record_dataset_keeps_out_a_short_recording(qemu_qmp: Path, tmp_path: Path) -> None:
    """A recorder error (a file size limit): exit 2 as without --dataset, and nothing added."""
    import resource

    out, d = tmp_path / "full.parquet", tmp_path / "fleet"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4500, 4500))

    res = subprocess.run([*MIGPROF, "record", "--qmp", str(qemu_qmp), "--no-bpf", "--no-trace",
                          "-o", str(out), "-d", "2", "-i", "0", "--dataset", str(d)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, preexec_fn=limit)
    assert res.returncode == 2 and "recording incomplete" in res.stderr, res.stderr
    assert "added to" not in res.stderr
    assert not d.exists() or not list(d.rglob("*.parquet"))
