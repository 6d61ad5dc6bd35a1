"""Recordings: stream + Parquet round trips, crash safety, truncation, foreign files,
schema upgrades, a file size limit hit while recording, and the recording source."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT

from profiler import events as ev
from profiler import store
from profiler.errors import EXIT_USAGE, InputError
from profiler.sources.recording import RecordingSource


def frame(n: int, start: int = 0, event: str = "vfio_save_block") -> pd.DataFrame:
    """A schema frame of ``n`` events; NA in some columns, several categories."""
    i = np.arange(start, start + n, dtype=np.int64)
    return ev.conform(pd.DataFrame({
        "t_ns": pd.array(1_700_000_000_000_000_000 + i * 1000, dtype="Int64"),
        "seq": pd.array(i, dtype="Int64"),
        "side": pd.Categorical(np.where(i % 2 == 0, "source", "destination")),
        "origin": pd.Categorical(["qemu-log"] * n),
        "event": pd.Categorical(np.where(i % 3 == 0, event, "migrate_pending")),
        "device": pd.array(["0000:3b:00.1" if k % 5 else None for k in i], dtype="string"),
        "bytes": pd.array([int(k) * 4096 if k % 7 else None for k in i], dtype="Int64"),
        "bw_bytes_per_ms": pd.array(i.astype(float) / 3, dtype="Float64"),
        "raw": pd.array([f"line {k}" for k in i], dtype="string"),
    }))


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    ev.validate(a)
    ev.validate(b)
    for col in ev.COLUMNS:
        x, y = a[col], b[col]
        if isinstance(x.dtype, pd.CategoricalDtype):
            x, y = x.astype("string"), y.astype("string")
        pd.testing.assert_series_equal(x.reset_index(drop=True), y.reset_index(drop=True),
                                       check_names=False)


def test_round_trip_parquet_with_metadata(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    frames = [frame(100, k * 100, event=f"ev{k}") for k in range(5)]
    with store.RecordingWriter(out, {"sources": ["qemu-log"]}, flush_rows=150) as w:
        for f in frames:
            w.write(f)
        w.update_meta(qemu_version="7.2.0", migration_params={"source": {"downtime-limit": 300}})
    assert w.final_path == out and not w.partial_path.exists()
    assert store.sniff(out) == "parquet"
    df, meta, warnings = store.read_recording(out)
    assert warnings == []
    same(df, ev.concat(frames))
    assert meta["qemu_version"] == "7.2.0"
    assert meta["migration_params"] == {"source": {"downtime-limit": 300}}
    assert meta["sources"] == ["qemu-log"]
    assert meta["schema_version"] == ev.SCHEMA_VERSION
    for key in ("host", "kernel", "migprof_version", "created_ns"):
        assert meta[key]
    # columnar Parquet: one dictionary-encoded event column, the schema of events.py
    schema = pq.read_schema(out)
    assert schema.field("event").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.names == list(ev.COLUMNS)


def test_stream_readable_while_recording(tmp_path: Path) -> None:
    out = tmp_path / "live.parquet"
    w = store.RecordingWriter(out, flush_rows=10**9, flush_interval_s=0.2)
    try:
        w.write(frame(30))
        time.sleep(0.6)  # no more writes: the flush thread must push the batch out
        assert w.rows_written == 30
        df, _, warnings = store.read_recording(w.partial_path)
        assert len(df) == 30
        assert "not closed" in warnings[0]
    finally:
        w.close()
    assert len(store.read_recording(out)[0]) == 30


def test_frames_that_skipped_conform_are_conformed(tmp_path: Path) -> None:
    partial = pd.DataFrame({"t_ns": [1, 2], "event": ["a", "b"], "bytes": [1.0, None]})
    out = store.write_recording(tmp_path / "c.parquet", partial)
    df, _, _ = store.read_recording(out)
    assert df["bytes"].tolist()[0] == 1 and df["bytes"].isna().tolist() == [False, True]
    assert list(df["event"].astype(str)) == ["a", "b"]


def test_empty_recording_is_valid(tmp_path: Path) -> None:
    with store.RecordingWriter(tmp_path / "e.parquet") as w:
        pass
    df, meta, warnings = store.read_recording(w.final_path)
    assert len(df) == 0 and warnings == []
    ev.validate(df)


def test_no_finalise_keeps_the_stream(tmp_path: Path) -> None:
    with store.RecordingWriter(tmp_path / "s.parquet", finalise=False) as w:
        w.write(frame(10))
    assert w.final_path == w.partial_path and store.sniff(w.final_path) == "arrow-stream"
    df, _, warnings = store.read_recording(w.final_path)
    assert len(df) == 10 and warnings == []  # closed cleanly: end-of-stream marker present


def _stream_file(tmp_path: Path, batches: int = 6, rows: int = 50) -> Path:
    w = store.RecordingWriter(tmp_path / "t.parquet", flush_rows=rows, finalise=False)
    for k in range(batches):
        w.write(frame(rows, k * rows))
    w.close()
    return w.final_path


@pytest.mark.parametrize("keep", [0.95, 0.7, 0.5, 0.3])
def test_truncated_stream_keeps_complete_batches(tmp_path: Path, keep: float) -> None:
    data = _stream_file(tmp_path).read_bytes()
    cut = tmp_path / "cut.partial"
    cut.write_bytes(data[: int(len(data) * keep)])
    df, _, warnings = store.read_recording(cut)
    assert len(df) % 50 == 0 and 0 < len(df) < 300
    same(df, ev.concat([frame(50, k * 50) for k in range(len(df) // 50)]))
    assert len(warnings) == 1 and "breaks at byte" in warnings[0] and str(cut) in warnings[0]


def test_trailing_garbage_is_a_warning(tmp_path: Path) -> None:
    p = _stream_file(tmp_path, batches=2)
    data = p.read_bytes()[:-8]  # drop the end-of-stream marker, as a crash would
    p.write_bytes(data + b"\xff\xff\xff\xff\x40\x00\x00\x00" + os.urandom(100))
    df, _, warnings = store.read_recording(p)
    assert len(df) == 100
    assert warnings and "byte" in warnings[0]


@pytest.mark.parametrize("content,expect", [
    (b"", "empty file"),
    (b"2024-01-01 12:00:00 not a recording\n", "not a migprof recording"),
    (bytes(range(256)) * 8, "not a migprof recording"),
    (b"\xff\xff\xff\xff\x10\x00\x00\x00garbagegarbage", "unreadable Arrow IPC stream"),
    (b"PAR1" + os.urandom(200), "unreadable parquet"),
])
def test_foreign_and_corrupt_files_raise_input_error(tmp_path: Path, content: bytes, expect: str) -> None:
    p = tmp_path / "bad.parquet"
    p.write_bytes(content)
    with pytest.raises(InputError) as ei:
        store.read_recording(p)
    assert expect in str(ei.value) and str(p) in str(ei.value)
    assert ei.value.exit_code == EXIT_USAGE


def test_foreign_parquet_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), p)
    with pytest.raises(InputError, match="not a migprof recording"):
        store.read_recording(p)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    t = store.frame_to_table(frame(5)).replace_schema_metadata(
        store._schema_with_meta({}, ev.SCHEMA_VERSION + 1).metadata)
    p = tmp_path / "future.parquet"
    pq.write_table(t, p)
    with pytest.raises(InputError, match=rf"schema version {ev.SCHEMA_VERSION + 1} is newer .* upgrade migprof"):
        store.read_recording(p)


def _v0_table(n: int = 6) -> pa.Table:
    """A file as the v0 prototype layout wrote it (see store._upgrade_v0)."""
    i = np.arange(n)
    return pa.table({
        "ts_ns": pa.array([1_700_000_000_000_000_000 + int(k) for k in i], pa.int64()),
        "side": pa.array(["src", "dst"] * (n // 2)).dictionary_encode(),
        "pid": pa.array([100] * n, pa.int64()),
        "origin": pa.array(["qemu-log"] * n).dictionary_encode(),
        "name": pa.array(["vfio_save_block"] * n).dictionary_encode(),
        "device": pa.array(["0000:3b:00.1"] * n),
        "value": pa.array([4096 * int(k) for k in i], pa.int64()),
        "text": pa.array([f"raw {k}" for k in i]),
    }, metadata={store.VERSION_KEY: b"0", store.META_KEY: json.dumps({"host": "old"}).encode()})


@pytest.mark.parametrize("fmt", ["parquet", "stream"])
def test_v0_recording_is_upgraded(tmp_path: Path, fmt: str) -> None:
    t = _v0_table()
    p = tmp_path / f"v0.{fmt}"
    if fmt == "parquet":
        pq.write_table(t, p)
    else:
        with pa.OSFile(str(p), "wb") as f, pa.ipc.new_stream(f, t.schema) as w:
            w.write_table(t)
    df, meta, warnings = store.read_recording(p)
    ev.validate(df)
    assert meta["upgraded_from"] == 0 and meta["host"] == "old"
    assert list(df["side"].astype(str)) == ["source", "destination"] * 3
    assert list(df["event"].astype(str)) == ["vfio_save_block"] * 6
    assert df["bytes"].tolist() == [4096 * k for k in range(6)]
    assert df["t_ns"].tolist() == df["clock_ns"].tolist()
    assert set(df["clock"].astype(str)) == {"realtime"}
    assert df["raw"].iloc[2] == "raw 2"


_KILL_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np, pandas as pd
    sys.path.insert(0, {tests!r})
    from test_store import frame
    from profiler import store
    w = store.RecordingWriter(sys.argv[1], flush_rows=10**9, flush_interval_s=0.3)
    w.update_meta(qemu_version="10.0.2")   # learnt while recording: rides on a batch
    k = 0
    while True:
        w.write(frame(100, k * 100)); k += 1
        if w.rows_written:
            print(w.rows_written, flush=True)
        time.sleep(0.01)
""")


def test_sigkilled_writer_leaves_a_readable_file(tmp_path: Path) -> None:
    out = tmp_path / "k.parquet"
    script = tmp_path / "child.py"
    script.write_text(_KILL_CHILD.format(tests=str(ROOT / "tests")))
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        seen = 0
        t0 = time.monotonic()
        while seen < 1000 and time.monotonic() - t0 < 60:
            line = proc.stdout.readline()
            if not line:
                break
            seen = int(line)
        time.sleep(0.4)  # keep writing a little after that flush, then kill mid-stream
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert seen >= 1000
    partial = out.with_name(out.name + store.PARTIAL_SUFFIX)
    assert not out.exists() and partial.exists()
    df, meta, warnings = store.read_recording(partial)
    assert meta["qemu_version"] == "10.0.2"
    assert len(df) >= seen and len(df) % 100 == 0
    same(df, ev.concat([frame(100, k * 100) for k in range(len(df) // 100)]))
    assert warnings  # says the recorder did not close it


_FSIZE_CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    sys.path.insert(0, {tests!r})
    from test_store import frame
    from profiler import store
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of a kill, as record does
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    w = store.RecordingWriter(sys.argv[1], flush_rows=500)
    k = 0
    while w.error is None and k < 1000:
        w.write(frame(500, k * 500)); k += 1
    w.write(frame(500, k * 500))   # refused, counted
    path = w.close()
    print(json.dumps({{"error": w.error, "rows": w.rows_written, "dropped": w.dropped,
                      "path": str(path)}}))
""")


def test_file_size_limit_stops_cleanly_and_keeps_what_was_written(tmp_path: Path) -> None:
    out = tmp_path / "full.parquet"
    script = tmp_path / "child.py"
    script.write_text(_FSIZE_CHILD.format(tests=str(ROOT / "tests")))
    res = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert "File too large" in r["error"]
    assert r["rows"] > 0 and r["dropped"] >= 1000
    # the stream stays (Parquet was never attempted after the error) and reads back
    assert r["path"].endswith(store.PARTIAL_SUFFIX) and not out.exists()
    df, _, warnings = store.read_recording(r["path"])
    assert len(df) == r["rows"]
    assert warnings and "byte" in warnings[0]


def test_recording_source_yields_everything_in_time_order(tmp_path: Path) -> None:
    out = store.write_recording(tmp_path / "s.parquet", frame(2500), {"qemu_version": "10.0.0"})
    with RecordingSource(out, batch_rows=1000) as src:
        got = [b for b in src.batches(threading.Event())]
        assert [len(b) for b in got] == [1000, 1000, 500]
        assert src.meta["qemu_version"] == "10.0.0"
        assert src.health()["yielded"] == 2500
    same(ev.concat(got), frame(2500))


class FakeClock:
    """A monotonic clock the test moves (test double). What is tested is which events the
    paced replay lets out at a given replay time; on a real clock a loaded host merges
    steps, so the same check would depend on the scheduler. (Wall time is in
    bench/bench_replay.py.)"""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _seqs(batches: list[pd.DataFrame]) -> list[int]:
    return [int(x) for b in batches for x in b["seq"]]


@pytest.mark.parametrize("speed", [1.0, 2.0])
def test_recording_source_paced_replay_and_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                speed: float) -> None:
    """Paced by the events' times: an event goes out once the replay clock reaches it (at
    ``speed``), not before; waiting gives empty heartbeats; a stop ends it with nothing more."""
    from profiler.sources import recording

    clock = FakeClock()
    monkeypatch.setattr(recording, "time", clock)
    df = frame(11)
    df["t_ns"] = pd.array([1_700_000_000_000_000_000 + k * 50_000_000 for k in range(11)], dtype="Int64")
    out = store.write_recording(tmp_path / "p.parquet", df)
    stop = threading.Event()
    with RecordingSource(out, speed=speed, poll_s=0.001) as src:
        it = src.batches(stop)
        assert _seqs([next(it)]) == [0]  # replay time 0: the first event only
        assert len(next(it)) == 0  # the next is 50 ms away: a heartbeat while it waits
        clock.now += 0.120 / speed  # 120 ms of recording time
        got = [next(it)]
        assert _seqs(got) == [1, 2]  # due at 50 and 100 ms; the one at 150 ms is not
        assert len(next(it)) == 0
        clock.now += 0.380 / speed  # 500 ms: everything
        got = [b for b in it]
        assert _seqs(got) == list(range(3, 11)) and src.yielded == 11
    with RecordingSource(out, speed=speed, poll_s=0.001) as src:
        it = src.batches(stop)
        next(it)
        stop.set()
        clock.now += 10.0  # every event due: none goes out after the stop
        assert [len(b) for b in it] == []
