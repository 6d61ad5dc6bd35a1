"""The event log's data: the events seen, their search text, the newest matching rows.

The ``/`` filter matches a lower-cased text per event; rows come formatted as ``LogRow``s.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from profiler import events as ev
from tui.view import LogRow

LOG_ROWS = 200  # event-log lines kept in each view


class EventIndex:
    """The events seen so far, with a lower-cased search column for the event-log filter."""

    _TEXT_COLS = ("event", "device", "side", "state", "detail", "raw")

    def __init__(self) -> None:
        self.frame = ev.empty_frame()
        self._hay: list[np.ndarray] = []
        self._hay_all: np.ndarray | None = None
        self.filter = ""
        self._mask = np.zeros(0, dtype=bool)
        self.first_ns: int | None = None

    def __len__(self) -> int:
        return len(self.frame)

    def append(self, batch: pd.DataFrame) -> None:
        if not len(batch):
            return
        self.frame = (
            ev.concat([self.frame, batch]) if len(self.frame) else batch.reset_index(drop=True)
        )
        hay = self._haystack(batch)
        self._hay.append(hay)
        self._hay_all = None
        self._mask = np.concatenate([self._mask, self._match(hay)])
        if self.first_ns is None:
            t = batch["t_ns"].dropna()
            if len(t):
                self.first_ns = int(t.min())

    def _haystack(self, df: pd.DataFrame) -> np.ndarray:
        parts = [df[c].astype("string").fillna("") for c in self._TEXT_COLS]
        s = parts[0]
        for p in parts[1:]:
            s = s + " " + p
        return s.str.lower().to_numpy(dtype=object)

    def _match(self, hay: np.ndarray) -> np.ndarray:
        terms = self.filter.lower().split()
        if not terms:
            return np.ones(len(hay), dtype=bool)
        s = pd.Series(hay, dtype="string")
        m = np.ones(len(hay), dtype=bool)
        for term in terms:
            if term.startswith("-") and len(term) > 1:
                m &= ~s.str.contains(term[1:], regex=False).to_numpy(dtype=bool, na_value=False)
            else:
                m &= s.str.contains(term, regex=False).to_numpy(dtype=bool, na_value=False)
        return m

    def set_filter(self, text: str) -> None:
        self.filter = text.strip()
        if self._hay_all is None:
            self._hay_all = np.concatenate(self._hay) if self._hay else np.zeros(0, dtype=object)
            self._hay = [self._hay_all]
        self._mask = self._match(self._hay_all)

    def rows(self, upto: int, k: int = LOG_ROWS) -> tuple[tuple[LogRow, ...], int]:
        """The last ``k`` matching rows among the first ``upto`` events, and the match count."""
        mask = self._mask[:upto]
        if self.filter:
            hits = np.flatnonzero(mask)
            n = len(hits)
            idx = hits[-k:]
        else:
            n = upto
            idx = np.arange(max(0, upto - k), upto)
        if not len(idx):
            return (), n
        sub = self.frame.iloc[idx]
        return tuple(_log_row(r, self.first_ns) for r in sub.to_dict("records")), n


_SUMMARY_COLS = (
    ("bytes", "bytes"),
    ("pre_bytes", "pre"),
    ("threshold_bytes", "threshold"),
    ("init_bytes", "init"),
    ("dirty_bytes", "dirty"),
    ("stopcopy_bytes", "stopcopy"),
    ("dirty_syncs", "dirty_syncs"),
    ("count", "count"),
    ("dur_ns", "dur_ns"),
    ("state", "state"),
    ("detail", "detail"),
)


_SIDE = {"source": "src", "destination": "dst", "unknown": "?"}


def _isna(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _log_row(r: dict[str, Any], first_ns: int | None) -> LogRow:
    t = r.get("t_ns")
    if not _isna(t) and first_ns is not None:
        ts = f"{(int(t) - first_ns) / 1e9:9.3f}"
    else:
        seq = r.get("seq")
        ts = f"#{seq}" if not _isna(seq) else "-"
    raw = r.get("raw")
    if _isna(raw) or not raw:
        text = " ".join(f"{name}={r[col]}" for col, name in _SUMMARY_COLS if not _isna(r.get(col)))
    else:
        text = str(raw)
        name = str(r.get("event") or "")
        at = text.find(name) if name else -1
        if at >= 0:  # drop the trace prefix (pid@time:) and the name shown in its own column
            text = text[at + len(name) :].strip()
    dev = r.get("device")
    return LogRow(
        t=ts,
        side=_SIDE.get(str(r.get("side") or ""), "?"),
        event=str(r.get("event") or ""),
        device="" if _isna(dev) else str(dev),
        text=text,
    )
