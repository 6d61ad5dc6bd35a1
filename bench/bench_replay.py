"""Paced replay (RecordingSource speed=...): wall time to play a recording back, against the
span of its events divided by the speed (the baseline), measured in the same run.

A ratio near 1.00 means the replay keeps the recording's pace; above it, the replay lags
(pacing overhead, a loaded host). The tests check which events go out when (on a clock
they move); how long it takes on this machine is measured here.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profiler import events as ev  # noqa: E402
from profiler import store  # noqa: E402
from profiler.sources.recording import RecordingSource  # noqa: E402

SPAN_MS = 1000  # of recording time
EVENTS = 2000


def recording(d: Path) -> Path:
    step = SPAN_MS * 1_000_000 // (EVENTS - 1)
    df = ev.conform(pd.DataFrame({
        "t_ns": pd.array([1_700_000_000_000_000_000 + k * step for k in range(EVENTS)], dtype="Int64"),
        "seq": pd.array(range(EVENTS), dtype="Int64"),
        "event": pd.Categorical(["vfio_save_block"] * EVENTS),
        "side": pd.Categorical(["source"] * EVENTS),
        "origin": pd.Categorical(["qemu-log"] * EVENTS),
    }))
    return store.write_recording(d / "replay.parquet", df)


def replay(path: Path, speed: float) -> tuple[float, int, int]:
    """(wall seconds, events, heartbeats) of one paced replay."""
    with RecordingSource(path, speed=speed) as src:
        t0 = time.monotonic()
        n = beats = 0
        for b in src.batches(threading.Event()):
            n += len(b)
            beats += len(b) == 0
        return time.monotonic() - t0, n, beats


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = recording(Path(tmp))
        print(f"paced replay of {EVENTS} events over {SPAN_MS} ms; baseline = span / speed")
        print(f"{'SPEED':>6} {'BASELINE(s)':>12} {'WALL(s)':>8} {'WALL/BASE':>10} {'BEATS':>6}")
        worst = 0.0
        for speed in (1.0, 2.0, 4.0):
            wall, n, beats = replay(path, speed)
            if n != EVENTS:
                print(f"replay lost events: {n} of {EVENTS}", file=sys.stderr)
                return 1
            base = SPAN_MS / 1000 / speed
            worst = max(worst, wall / base)
            print(f"{speed:>6.1f} {base:>12.3f} {wall:>8.3f} {wall / base:>10.2f} {beats:>6}")
        print(f"worst wall/baseline {worst:.2f} (1.00: the recording's own pace)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
