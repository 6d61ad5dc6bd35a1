"""Merge several live sources into one stream of event batches.

Each source runs in its own thread (bcc polling, QMP's asyncio loop and file tails all
block differently) and hands frames over a queue; the consumer sees one iterator.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd

from profiler.sources.base import Source

log = logging.getLogger(__name__)

_END = object()


class MergedSource(Source):
    """Runs sources side by side; batches come out in arrival order.

    A source that fails is reported in ``health()["failed"]`` and the others go on.
    """

    name = "merged"

    def __init__(self, sources: list[Source], poll_s: float = 0.1):
        self.sources = sources
        self.poll_s = poll_s
        self._q: queue.Queue = queue.Queue(maxsize=10000)
        self._threads: list[threading.Thread] = []
        self.failed: dict[str, str] = {}
        self._entered: list[Source] = []

    def __enter__(self) -> MergedSource:
        try:
            for s in self.sources:
                s.__enter__()
                self._entered.append(s)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        while self._entered:
            s = self._entered.pop()
            try:
                s.__exit__(None, None, None)
            except Exception as e:  # detaching must go on for the others
                log.warning("closing %s: %s", s.name, e)

    def _pump(self, src: Source, stop: threading.Event) -> None:
        try:
            late = 0  # batches after the stop: a source's last flush, bounded
            for batch in src.batches(stop):
                if stop.is_set():
                    late += 1
                    if late > 10:
                        break
                if batch is not None and len(batch):
                    # also after a stop: what a source flushes on its way out is kept
                    while True:
                        try:
                            self._q.put(batch, timeout=self.poll_s)
                            break
                        except queue.Full:
                            if stop.is_set():
                                log.warning("source %s: %d events dropped at stop (queue full)",
                                            src.name, len(batch))
                                break
        except Exception as e:
            log.warning("source %s failed: %s", src.name, e)
            self.failed[src.name] = str(e)
        finally:
            self._q.put(_END)

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        for s in self.sources:
            t = threading.Thread(target=self._pump, args=(s, stop), name=f"src-{s.name}", daemon=True)
            t.start()
            self._threads.append(t)
        running = len(self._threads)
        while running and not stop.is_set():
            try:
                item = self._q.get(timeout=self.poll_s)
            except queue.Empty:
                yield pd.DataFrame()  # heartbeat: lets the consumer refresh and see stop
                continue
            if item is _END:
                running -= 1
                continue
            yield item
        # let each source yield its last batch, then drain so nothing recorded is lost
        for t in self._threads:
            t.join(timeout=2)
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not _END:
                yield item

    def health(self) -> dict[str, Any]:
        h: dict[str, Any] = {"source": self.name, "failed": dict(self.failed)}
        for s in self.sources:
            h[s.name] = s.health()
        return h
