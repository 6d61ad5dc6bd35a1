"""The rows of every migration as numpy columns, ordered by migration then stream order.

Each model module answers its question for all migrations at once over this table (no
per-migration pandas), so a log with thousands of migrations costs about what one long
migration of the same size does. Rows of migration ``m`` are ``start[m]:end[m]``; its trace
rows (in log order) come first, ``start[m]:trace_end[m]``, then its QMP/BPF rows by time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from profiler.model.migrations import _in, labels

NUM = ("bytes", "pre_bytes", "post_bytes", "threshold_bytes", "bw_bytes_per_ms",
       "switchover_bw_bytes_per_ms", "dirty_pages", "dirty_syncs", "count", "dur_ns", "init_bytes",
       "dirty_bytes", "stopcopy_bytes", "ret")


@dataclass(frozen=True, slots=True)
class Table:
    mig: np.ndarray  # int64 migration id (split's), one per row
    trace: np.ndarray  # bool: the row comes from a trace stream
    name: np.ndarray  # object: event name
    t: np.ndarray  # int64 t_ns (0 where unknown)
    tna: np.ndarray  # bool: t_ns unknown
    num: dict[str, np.ndarray]  # float64 columns of NUM, NaN = NA
    device: np.ndarray  # object, None = NA
    state: np.ndarray
    detail: np.ndarray
    hexsize: np.ndarray  # bool: vfio_state_pending_exact printed hex sizes
    side: np.ndarray  # object: resolved side
    start: np.ndarray  # per migration: first row
    end: np.ndarray  # per migration: one past its last row
    trace_end: np.ndarray  # per migration: one past its last trace row
    ref: int = 0  # epoch ns that t_at() counts from (float64 keeps ns exact near it)
    code: np.ndarray | None = None  # int32 event-name code per row (-1 = none)
    codes: dict[str, int] | None = None  # event name -> code

    @property
    def n_mig(self) -> int:
        return len(self.start)

    def is_(self, *events: str) -> np.ndarray:
        """Rows whose event is one of ``events`` (integer codes: ~20x faster than comparing
        the object array of names, and the model asks this a few dozen times per build)."""
        if self.code is None or self.codes is None:
            return _in(self.name, events) if len(events) > 1 else self.name == events[0]
        ids = [self.codes[e] for e in events if e in self.codes]
        if not ids:
            return np.zeros(len(self.code), dtype=bool)
        if len(ids) == 1:
            return self.code == ids[0]
        return np.isin(self.code, np.array(ids, dtype=self.code.dtype))

    def is_at(self, rows: np.ndarray, *events: str) -> np.ndarray:
        """``is_(*events)[rows]``, looking at ``rows`` only (per-migration callers: the whole
        table's mask each time would cost the table's length per migration)."""
        if self.code is None or self.codes is None:
            return self.is_(*events)[rows]
        ids = [self.codes[e] for e in events if e in self.codes]
        if not ids or not len(rows):
            return np.zeros(len(rows), dtype=bool)
        code = self.code[rows]
        if len(ids) == 1:
            return code == ids[0]
        return np.isin(code, np.array(ids, dtype=self.code.dtype))

    def first(self, mask: np.ndarray) -> np.ndarray:
        """Per migration: the first row where ``mask`` holds, or -1."""
        idx = np.flatnonzero(mask)[::-1]
        out = np.full(self.n_mig, -1, dtype=np.int64)
        out[self.mig[idx]] = idx  # with repeated targets the last write (first row) wins
        return out

    def last(self, mask: np.ndarray) -> np.ndarray:
        """Per migration: the last row where ``mask`` holds, or -1."""
        idx = np.flatnonzero(mask)
        out = np.full(self.n_mig, -1, dtype=np.int64)
        out[self.mig[idx]] = idx
        return out

    def t_at(self, rows: np.ndarray) -> np.ndarray:
        """Time at rows in ns since ``ref`` as float64 (NaN where unknown or row -1)."""
        r = np.maximum(rows, 0)
        return np.where((rows >= 0) & ~self.tna[r], (self.t[r] - self.ref).astype(np.float64), np.nan)

    def rel(self, t0: int | None) -> float:
        """An epoch-ns time on the t_at() scale (NaN for None)."""
        return math.nan if t0 is None else float(t0 - self.ref)


def build_table(rows: pd.DataFrame, n_mig: int) -> Table:
    """Order the split rows by (migration, trace first, position) and take their columns."""
    m = rows["mig"].to_numpy(dtype="float64", na_value=np.nan)
    sel = np.flatnonzero(~np.isnan(m))
    mig = m[sel].astype(np.int64)
    trace = rows["trace"].to_numpy(dtype=bool)[sel]
    pos = rows["pos"].to_numpy(dtype=np.int64)[sel]
    order = np.lexsort((pos, ~trace, mig))
    idx = sel[order]
    mig = mig[order]
    trace = trace[order]
    t = rows["t_ns"]
    tv = t.fillna(0).to_numpy(dtype=np.int64)[idx]
    tna = t.isna().to_numpy(dtype=bool)[idx]
    ids = np.arange(n_mig)
    start = np.searchsorted(mig, ids, side="left")
    end = np.searchsorted(mig, ids, side="right")
    ev = rows["event"]
    if not isinstance(ev.dtype, pd.CategoricalDtype):
        ev = ev.astype("category")
    cats = [str(c) for c in ev.cat.categories]
    return Table(
        mig=mig, trace=trace, name=labels(ev, "")[idx],
        code=ev.cat.codes.to_numpy().astype(np.int32)[idx], codes={c: i for i, c in enumerate(cats)},
        t=tv, tna=tna, ref=int(tv[~tna].min()) if (~tna).any() else 0,
        num={c: rows[c].to_numpy(dtype="float64", na_value=np.nan)[idx] for c in NUM},
        device=rows["device"].to_numpy(dtype=object)[idx],
        state=rows["state"].to_numpy(dtype=object)[idx],
        detail=rows["detail"].to_numpy(dtype=object)[idx],
        hexsize=rows["hexsize"].to_numpy(dtype=bool)[idx],
        side=rows["side_r"].to_numpy(dtype=object)[idx],
        start=start, end=end,
        trace_end=start + np.bincount(mig[trace], minlength=n_mig)[:n_mig],
    )


def notnone(a: np.ndarray) -> np.ndarray:
    """Not None/NaN, element-wise over an object array (C speed)."""
    return ~pd.isna(a)
