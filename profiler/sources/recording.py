"""A source that plays a recording's events back, as fast as possible or paced by their clock."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from profiler import events as ev
from profiler.sources.base import Source
from profiler.store import read_recording


class RecordingSource(Source):
    """Yields the events of one recording (stream or Parquet) in timeline order.

    ``speed=None`` yields batches of ``batch_rows`` events at once (report, compare);
    ``speed=1.0`` replays in real time by ``t_ns`` (2.0 twice as fast), sleeping in
    steps of at most ``poll_s`` so a stop is seen quickly. Events keep their original
    ``origin``; ``meta`` and ``warnings`` hold what the recording said about itself.
    """

    name = "recording"

    def __init__(self, path: str | os.PathLike[str], *, speed: float | None = None,
                 batch_rows: int = 10000, poll_s: float = 0.1):
        self.path = str(path)
        self.speed = speed
        self.batch_rows = batch_rows
        self.poll_s = poll_s
        self.meta: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.events: pd.DataFrame | None = None
        self.yielded = 0

    def __enter__(self) -> RecordingSource:
        df, self.meta, self.warnings = read_recording(self.path)
        self.events = ev.sort_timeline(df)
        return self

    def close(self) -> None:
        self.events = None

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        if self.events is None:
            self.__enter__()
        df = self.events
        assert df is not None
        if self.speed is None or df["t_ns"].isna().all():
            for i in range(0, len(df), self.batch_rows):
                if stop.is_set():
                    return
                b = df.iloc[i:i + self.batch_rows].reset_index(drop=True)
                self.yielded += len(b)
                yield b
            return
        yield from self._paced(df, stop)

    def _paced(self, df: pd.DataFrame, stop: threading.Event) -> Iterator[pd.DataFrame]:
        # events without a time go out with the one before them
        t = df["t_ns"].ffill().bfill().to_numpy(dtype=np.int64)
        t0 = int(t[0])
        wall0 = time.monotonic()
        i, n = 0, len(df)
        while i < n and not stop.is_set():
            due_ns = (time.monotonic() - wall0) * 1e9 * float(self.speed or 1.0)
            j = int(np.searchsorted(t, t0 + due_ns, side="right"))
            j = min(max(j, i), i + self.batch_rows)
            if j > i:
                b = df.iloc[i:j].reset_index(drop=True)
                self.yielded += len(b)
                i = j
                yield b
                continue
            wait_s = (int(t[i]) - t0 - due_ns) / 1e9 / float(self.speed or 1.0)
            stop.wait(min(self.poll_s, max(wait_s, 0.0)))
            yield ev.empty_frame()  # heartbeat

    def health(self) -> dict[str, Any]:
        total = 0 if self.events is None else len(self.events)
        return {"source": self.name, "path": self.path, "events": total,
                "yielded": self.yielded, "warnings": len(self.warnings)}
