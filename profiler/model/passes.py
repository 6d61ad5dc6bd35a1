"""Dirty-bitmap syncs (RAM passes): one per ``migration_bitmap_sync_start``/``_end`` pair.

Their number is QEMU's ``dirty-sync-count``: the setup sync, one per exact pending query,
the final one in stop-copy (and, >=9.2 with auto-converge, timer-driven ones).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.model import names as N

PASS_COLUMNS = ["n", "t_ns", "dur_ns", "dirty_pages", "phase"]


def passes(rows: pd.DataFrame, setup_done_pos: int | None, switch_pos: int | None) -> pd.DataFrame:
    """One row per sync of one source migration (``rows`` ordered, indexed by position).

    ``phase`` is setup (before ``migration_thread_setup_complete``), stopcopy (after the
    switch-over decision) or precopy.
    """
    name = rows["event"]
    starts = rows.index[(name == N.SYNC_START).to_numpy(dtype=bool)].to_numpy()
    ends = rows.index[(name == N.SYNC_END).to_numpy(dtype=bool)].to_numpy()
    if len(ends) == 0 and len(starts) == 0:
        return pd.DataFrame(columns=PASS_COLUMNS)
    if len(ends):
        # each end pairs with the last start before it (a log may begin mid-sync)
        j = np.searchsorted(starts, ends, side="right") - 1
        sp = np.where(j >= 0, starts[np.maximum(j, 0)], -1)
        t_end = rows["t_ns"].to_numpy(dtype="float64", na_value=np.nan)[ends]
        t_start = np.where(sp >= 0, rows["t_ns"].to_numpy(dtype="float64", na_value=np.nan)[np.maximum(sp, 0)], np.nan)
        pos = np.where(sp >= 0, sp, ends)
        dirty = rows["count"].to_numpy(dtype="float64", na_value=np.nan)[ends]
    else:
        pos = starts
        t_start = rows["t_ns"].to_numpy(dtype="float64", na_value=np.nan)[starts]
        t_end = np.full(len(starts), np.nan)
        dirty = np.full(len(starts), np.nan)
    phase = np.full(len(pos), "precopy", dtype=object)
    if setup_done_pos is not None:
        phase[pos < setup_done_pos] = "setup"
    elif len(pos):
        phase[0] = "setup"  # the first sync is RAM's setup sync (ram_init_bitmaps)
    if switch_pos is not None:
        phase[pos > switch_pos] = "stopcopy"
    return pd.DataFrame({
        "n": np.arange(1, len(pos) + 1),
        "t_ns": pd.array(np.where(np.isnan(t_start), t_end, t_start), dtype="Float64").round().astype("Int64"),
        "dur_ns": pd.array(t_end - t_start, dtype="Float64").round().astype("Int64"),
        "dirty_pages": pd.array(dirty, dtype="Float64").astype("Int64"),
        "phase": phase,
    })
