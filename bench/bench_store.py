"""Recording writer throughput: RecordingWriter events/s against raw pa.ipc writes of the
same batches, measured in the same run (goal: keep up with 100 000 events/s live)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profiler import events as ev  # noqa: E402
from profiler import store  # noqa: E402

TOTAL = 400_000
GOAL = 100_000


def batches(total: int, size: int) -> list[pd.DataFrame]:
    """Frames like a live BPF + trace stream: a few event names, device strings, raw text."""
    rng = np.random.default_rng(1)
    names = np.array(["bpf_data_read", "bpf_vfio_ioctl", "migrate_pending_exact",
                      "vfio_state_pending_exact", "qmp_query_migrate"])
    out = []
    for k in range(0, total, size):
        n = min(size, total - k)
        i = np.arange(k, k + n, dtype=np.int64)
        out.append(ev.conform(pd.DataFrame({
            "t_ns": pd.array(1_700_000_000_000_000_000 + i * 10_000, dtype="Int64"),
            "clock_ns": pd.array(i * 10_000, dtype="Int64"),
            "clock": pd.Categorical(["monotonic"] * n),
            "seq": pd.array(i, dtype="Int64"),
            "side": pd.Categorical(["source"] * n),
            "pid": pd.array(np.full(n, 4242), dtype="Int64"),
            "tid": pd.array(np.full(n, 4250), dtype="Int64"),
            "origin": pd.Categorical(["bpf"] * n),
            "event": pd.Categorical(names[rng.integers(0, len(names), n)]),
            "device": pd.array(["0000:3b:00.1"] * n, dtype="string"),
            "bytes": pd.array(rng.integers(0, 1 << 20, n), dtype="Int64"),
            "dur_ns": pd.array(rng.integers(1000, 100000, n), dtype="Int64"),
            "fd": pd.array(np.full(n, 37), dtype="Int64"),
            "ret": pd.array(rng.integers(0, 1 << 20, n), dtype="Int64"),
        })))
    return out


def bench_raw(frames: list[pd.DataFrame], path: Path) -> float:
    """Baseline: convert each frame and write it with pa.ipc, no buffering policy."""
    t0 = time.perf_counter()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, ev.ARROW_SCHEMA) as w:
        for f in frames:
            w.write_table(pa.Table.from_pandas(f, schema=ev.ARROW_SCHEMA, preserve_index=False))
    return time.perf_counter() - t0


def bench_writer(frames: list[pd.DataFrame], path: Path) -> tuple[float, float]:
    """RecordingWriter: (time to write + flush the stream, time to finalise to Parquet)."""
    w = store.RecordingWriter(path, {"sources": ["bench"]})
    t0 = time.perf_counter()
    for f in frames:
        w.write(f)
    w.flush()
    t1 = time.perf_counter()
    w.close()
    t2 = time.perf_counter()
    assert w.error is None and w.rows_written == sum(len(f) for f in frames)
    return t1 - t0, t2 - t1


def main() -> int:
    print(f"{'BATCH':>6} {'RAW IPC ev/s':>13} {'WRITER ev/s':>12} {'RATIO':>6} {'FINALISE s':>10} {'vs 100k/s':>9}")
    with tempfile.TemporaryDirectory() as d:
        for size in (100, 1000, 10000):
            frames = batches(TOTAL if size >= 1000 else TOTAL // 4, size)
            n = sum(len(f) for f in frames)
            raw = bench_raw(frames, Path(d) / "raw.arrows")
            wr, fin = bench_writer(frames, Path(d) / f"w{size}.parquet")
            print(f"{size:6d} {n / raw:13.0f} {n / wr:12.0f} {raw / wr:6.2f} {fin:10.2f} {n / wr / GOAL:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
