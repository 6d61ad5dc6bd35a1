"""The one interface every event source implements (files, QMP, BPF, sock_diag, recordings).

A source is a context manager: entering attaches (opens files, loads BPF, connects),
leaving detaches, also on error. ``batches(stop)`` yields frames in the schema of
``profiler.events`` until the source ends or ``stop`` is set; it must poll with a short
timeout (<= 0.1 s) so a stop is seen quickly, and may yield empty frames as heartbeats.
``health()`` reports counters users should see (lost, skipped, malformed, ...).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd


class Source:
    """Base class; subclasses override ``batches`` and usually ``__enter__``/``__exit__``."""

    name = "source"

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Detach and release everything; safe to call twice."""

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        raise NotImplementedError

    def health(self) -> dict[str, Any]:
        return {"source": self.name}
