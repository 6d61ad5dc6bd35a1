"""`--record` on `migprof lab` / `migprof demo`, and attaching to a running lab QEMU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from profiler import events as ev
from profiler.cli import main
from profiler.lab import qemu as lq
from profiler.store import read_recording

MIGPROF = Path(sys.executable).parent / "migprof"


def _report(capsys, path: Path) -> dict:
    capsys.readouterr()
    assert main(["report", "--json", str(path)]) == 0
    return json.loads(capsys.readouterr().out)


def _same_migrations(capsys, rec: Path, run_dir: Path) -> list[dict]:
    """The report of the recording and of the run directory: same numbers throughout."""
    a, b = _report(capsys, rec), _report(capsys, run_dir)
    assert a["migrations"] == b["migrations"]
    assert a["events"] == b["events"]
    return a["migrations"]


@pytest.mark.slow
def test_lab_record_reads_back_like_the_run_directory(tmp_path: Path, capsys) -> None:
    run_dir, rec = tmp_path / "run", tmp_path / "run.parquet"
    rc = main(
        [
            "lab",
            "--scenario",
            "converges",
            "--accel",
            "tcg",
            "--net",
            "loopback",
            "--out",
            str(run_dir),
            "--record",
            str(rec),
            "--dataset",
            str(tmp_path / "fleet"),
            "--host",
            "lab1",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert rec.exists() and not Path(str(rec) + ".partial").exists()
    df, meta, warnings = read_recording(rec)
    assert warnings == []
    ev.validate(df, str(rec))
    # every kind of event of the run: trace lines of both sides, QMP, sock_diag, marks
    origins = set(df["origin"].astype(str))
    assert {"qemu-log", "qmp", "sockdiag", "lab"} <= origins
    log_sides = set(df.loc[df["origin"] == "qemu-log", "side"].astype(str))
    assert log_sides == {"source", "destination"}
    fin = json.loads((run_dir / "query-migrate-source.json").read_text())
    # metadata: host, kernel, QEMU version, parameters, clock offsets, scenario
    assert meta["host"] == os.uname().nodename and meta["kernel"] == os.uname().release
    assert meta["qemu_version"].startswith("7.2.")
    assert meta["scenario"] == "converges" and meta["lab"]["command"] == "lab"
    assert meta["migration_params"]["source"]["downtime-limit"] == 50
    assert meta["clock_offsets"]["source_log_to_realtime_ns"] == 0
    assert meta["run"]["status"] == "completed"
    (m,) = _same_migrations(capsys, rec, run_dir)
    assert m["outcome"] == "completed"
    assert m["dirty_syncs"] == fin["ram"]["dirty-sync-count"]
    assert m["transferred_bytes"] == fin["ram"]["transferred"]
    # --dataset: the finished recording is in the fleet dataset, with the numbers report gives
    capsys.readouterr()
    assert main(["query", str(tmp_path / "fleet"), "SELECT * FROM migrations", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["host"] == "lab1" and row["view"] == "qemu"
    assert row["qemu_version"] == meta["qemu_version"]
    for k in ("outcome", "total_ms", "downtime_ms", "setup_ms", "stopcopy_ms", "dirty_syncs",
              "transferred_bytes", "start_ns", "end_ns", "verdict", "downtime_limit_ms"):
        assert row[k] == m[k], k
    assert row["checks"] == len(m["checks"])
    # compare takes the recording on either side, beside a run directory
    capsys.readouterr()
    assert main(["compare", "--json", str(rec), "--", str(run_dir)]) == 0
    cmp = json.loads(capsys.readouterr().out)
    assert cmp  # a comparison came out
    assert "total_ms" in json.dumps(cmp)


@pytest.mark.slow
def test_demo_record_holds_both_migrations_of_a_retry(tmp_path: Path, capsys) -> None:
    """cancel-retry: the retry's destination log is appended to destination.log when the
    lab closes; the recording must still hold its lines (the tails read to the end)."""
    run_dir, rec = tmp_path / "run", tmp_path / "demo.parquet"
    rc = main(
        [
            "demo",
            "--no-tui",
            "--json",
            "--scenario",
            "cancel-retry",
            "--accel",
            "tcg",
            "--net",
            "loopback",
            "--out",
            str(run_dir),
            "--record",
            str(rec),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    migs = _same_migrations(capsys, rec, run_dir)
    # on a loaded host the TCG guest can dirty too slowly and the first attempt
    # completes before its cancel: then there is no retry, and one migration
    attempts = json.loads((run_dir / "run.json").read_text())["attempts"]
    assert [m["outcome"] for m in migs] == [a["status"] for a in attempts]
    assert migs[-1]["outcome"] == "completed"
    _, meta, _ = read_recording(rec)
    assert meta["lab"]["command"] == "demo" and meta["scenario"] == "cancel-retry"


@pytest.mark.slow
def test_live_record_attaches_to_a_lab_qemu(tmp_path: Path) -> None:
    """The lab leaves a spare QMP monitor per QEMU (qmp-<side>-attach.sock) while it
    runs; `migprof record --qmp` attaches there and records the migration."""
    out = tmp_path / "run"
    lab = subprocess.Popen(
        [
            str(MIGPROF),
            "lab",
            "--scenario",
            "never-converges",
            "--timeout",
            "6",
            "--accel",
            "tcg",
            "--net",
            "loopback",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        sock = out / "qmp-source-attach.sock"
        end = time.monotonic() + 30
        while time.monotonic() < end and not (
            sock.exists() and b"qmp_query_migrate" in _read(out / "events.jsonl")
        ):
            assert lab.poll() is None, lab.stderr.read().decode()
            time.sleep(0.1)
        assert sock.exists() and (out / "qmp-source.sock").exists()
        rec = tmp_path / "attached.parquet"
        r = subprocess.run(
            [
                str(MIGPROF),
                "record",
                "--qmp",
                str(sock),
                "--no-bpf",
                "--no-trace",
                "-d",
                "2",
                "-o",
                str(rec),
            ],
            capture_output=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr.decode()
        df, meta, _ = read_recording(rec)
        polls = df[(df["event"] == ev.QMP_QUERY_MIGRATE) & (df["side"] == "source")]
        assert len(polls) >= 10  # 10 Hz for 2 s, give or take a loaded host
        assert set(polls["state"].astype(str)) == {"active"}
        assert lab.wait(timeout=60) == 0, lab.stderr.read().decode()
        assert not list(out.glob("*.sock"))  # gone with the QEMUs
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGTERM)
            lab.wait(timeout=30)
    assert not [p for p, _ in lq.find_stray_qemus()]


def _read(p: Path) -> bytes:
    return p.read_bytes() if p.exists() else b""


@pytest.mark.slow
def test_sigterm_still_finalises_the_recording(tmp_path: Path) -> None:
    out, rec = tmp_path / "run", tmp_path / "run.parquet"
    lab = subprocess.Popen(
        [
            str(MIGPROF),
            "lab",
            "--scenario",
            "never-converges",
            "--timeout",
            "30",
            "--accel",
            "tcg",
            "--net",
            "loopback",
            "--out",
            str(out),
            "--record",
            str(rec),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and _read(out / "events.jsonl").count(b'"active"') < 10:
            assert lab.poll() is None, lab.stderr.read().decode()
            time.sleep(0.1)
        time.sleep(1.5)  # a flush or two of trace lines
        os.kill(lab.pid, signal.SIGTERM)
        assert lab.wait(timeout=60) == 130
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait()
    assert rec.exists() and not Path(str(rec) + ".partial").exists()
    df, meta, _ = read_recording(rec)
    assert meta["run"]["status"] == "interrupted"
    assert {"qemu-log", "qmp"} <= set(df["origin"].astype(str))
    assert not list(out.glob("*.sock")) and not [p for p, _ in lq.find_stray_qemus()]
