"""Tail a growing QEMU trace log as a live Source: whole lines, parsed as they arrive.

The file is followed by ``profiler.sources.follow`` (rotation, truncation, true line
numbers) and each batch of lines goes through the log parser
(``profiler.sources.qemu_log.parse_bytes``). A QEMU without ``-msg timestamp=on`` prints
no time: with ``stamp_untimed`` such lines get their arrival time in ``t_ns`` (within
one poll) while ``clock_ns`` stays NA and ``clock`` says ``none``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from profiler import events
from profiler.sources.base import Source
from profiler.sources.follow import FileFollower, Lines
from profiler.sources.qemu_log import MAX_WARNINGS, detect_side, parse_bytes

# both prefix forms QEMU writes, and the events the line views read: parsed once at
# attach so the parser's tables and compiled scanners (a second or more of CPU on first
# use) are ready before the migration's lines arrive
WARM_LINES = (
    b"12@1700000000.000001:migrate_set_state new state setup\n"
    b"12@1700000000.000002:migrate_pending_estimate estimate pending size 1 (pre = 1 post=0)\n"
    b"12@1700000000.000003:migrate_transferred transferred 1 time_spent 100 bandwidth 1 "
    b"switchover_bw 0 max_size 1\n",
    b"migrate_pending pending size 1 max 1 (pre = 1 compat=0 post=0)\n"
    b"migrate_transferred transferred 1 time_spent 100 bandwidth 1 max_size 1\n",
)


def warm_parser() -> None:
    """Build the log parser's tables now rather than on the first live lines."""
    for sample in WARM_LINES:
        parse_bytes(sample, side="source")


class QemuLogSource(Source):
    """Follows a QEMU trace log and yields its events.

    ``follow=False`` reads the file to its end once and ends. Following, a stop ends it
    after one last read of the whole lines there; with ``drain`` (the writer has
    exited, as in the lab) the half line at the end is read too. ``from_start=False``
    starts at the file's current end: lines already there are never yielded.
    ``pid`` fills the ``pid`` column (the QEMU writing the log).
    """

    name = "qemu-log"

    def __init__(self, path: str | os.PathLike[str], side: str | None = None, *,
                 follow: bool = True, poll_s: float = 0.1, from_start: bool = True,
                 drain: bool = False, pid: int | None = None, stamp_untimed: bool = False,
                 name: str | None = None):
        self.path = str(path)
        self.side = side or detect_side(set(), self.path)
        self.follow = follow
        self.poll_s = poll_s
        self.drain = drain
        self.pid = pid
        self.stamp_untimed = stamp_untimed
        self.name = name or f"qemu-log:{Path(self.path).name}"
        self.tail = FileFollower(self.path, from_start=from_start)
        self.lines = 0
        self.skipped = 0
        self.malformed = 0
        self.events = 0
        self.stamped = 0  # lines without a timestamp, given their arrival time
        self.warnings: list[str] = []

    def __enter__(self) -> QemuLogSource:
        warm_parser()
        self.tail.open()  # from_start=False: the file's end now is where following starts
        return self

    def close(self) -> None:
        self.tail.close()

    def parse(self, got: Lines) -> pd.DataFrame:
        """Events of lines read from the file (counts go to health())."""
        res = parse_bytes(got.data, side=self.side, file=self.path, first_line=got.first_line)
        self.lines += res.lines
        self.skipped += res.skipped
        self.malformed += res.malformed
        self.warnings.extend(res.warnings[: max(0, MAX_WARNINGS - len(self.warnings))])
        df = res.frame
        if not len(df):
            return df
        self.events += len(df)
        if self.pid is not None:
            df["pid"] = pd.array([self.pid] * len(df), dtype="Int64")
        if self.stamp_untimed:
            untimed = df["t_ns"].isna()
            if untimed.any():
                df.loc[untimed, "t_ns"] = time.time_ns()
                self.stamped += int(untimed.sum())
        return df

    def _pending(self) -> Iterator[pd.DataFrame]:
        """Everything readable now."""
        while (got := self.tail.read()) is not None:
            yield self.parse(got)

    def poll_now(self) -> list[pd.DataFrame]:
        """Everything readable now, for a caller that follows many logs on one thread
        (``profiler.targets``) instead of a thread per log polling ``batches``."""
        return [f for f in self._pending() if len(f)]

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        if not self.follow:
            yield from self._pending()
            if (got := self.tail.flush()) is not None:
                yield self.parse(got)
            return
        while not stop.is_set():
            yield from self._pending()
            yield events.empty_frame()  # heartbeat
            stop.wait(self.poll_s)
        yield from self._pending()
        if self.drain and (got := self.tail.flush()) is not None:
            yield self.parse(got)

    def health(self) -> dict[str, Any]:
        return {"source": self.name, "file": self.path, "lines": self.lines, "events": self.events,
                "skipped": self.skipped, "malformed": self.malformed,
                "rotations": self.tail.rotations + self.tail.truncations,
                "stamped_on_arrival": self.stamped, "warnings": self.warnings[-5:]}
