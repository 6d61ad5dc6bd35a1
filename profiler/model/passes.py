"""Dirty-bitmap syncs (RAM passes): one per ``migration_bitmap_sync_start``/``_end`` pair.

Their number is QEMU's ``dirty-sync-count``: the setup sync, one per exact pending query,
the final one in stop-copy (and, >=9.2 with auto-converge, timer-driven ones).
All migrations at once, over the ordered ``Table``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.model import names as N
from profiler.model.table import Table

PASS_COLUMNS = ["mig", "n", "row", "t_ns", "dur_ns", "dirty_pages", "phase"]


def passes(T: Table, setup_done: np.ndarray, switch: np.ndarray) -> pd.DataFrame:
    """One row per sync: mig, n (1-based within it), row, t_ns, dur_ns (float, NaN unknown),
    dirty_pages, phase: setup (before ``migration_thread_setup_complete``; else the first sync),
    stopcopy (after the switch-over row ``switch``), else precopy. Per-migration arrays use -1
    for "none"."""
    starts = np.flatnonzero(T.trace & T.is_(N.SYNC_START))
    ends = np.flatnonzero(T.trace & T.is_(N.SYNC_END))
    if len(ends):
        # each end pairs with the last start before it in its migration (a log may begin mid-sync)
        if len(starts):
            j = np.searchsorted(starts, ends, side="right") - 1
            sp = starts[np.maximum(j, 0)]
            valid = (j >= 0) & (T.mig[sp] == T.mig[ends])
        else:
            sp = ends
            valid = np.zeros(len(ends), dtype=bool)
        row = np.where(valid, sp, ends)
        t_start = np.where(valid, T.t_at(sp), np.nan)
        t_end = T.t_at(ends)
        dirty = T.num["dirty_pages"][ends]
    else:
        row = starts
        t_start = T.t_at(starts)
        t_end = np.full(len(starts), np.nan)
        dirty = np.full(len(starts), np.nan)
    m = T.mig[row]
    first = np.searchsorted(row, T.start[m], side="left")
    n = np.arange(len(row)) - first + 1
    sd = setup_done[m]
    sw = switch[m]
    phase = np.where((sw >= 0) & (row > sw), "stopcopy",
                     np.where(np.where(sd >= 0, row < sd, n == 1), "setup", "precopy"))
    return pd.DataFrame({"mig": m, "n": n, "row": row,
                         "t_ns": np.where(np.isnan(t_start), t_end, t_start),
                         "dur_ns": t_end - t_start, "dirty_pages": dirty,
                         "phase": pd.Series(phase.astype(object), dtype=object)})[PASS_COLUMNS]
