"""Overloaded event-schema columns, each read through one named accessor.

The schema's ``count`` column holds different things per event (a switchover bandwidth, a
multifd buffer index, ...). A rename to named columns is under way; the what-if and the
device findings read those values only through the functions here, so the rename is a
one-line change of the column name below.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# migrate_transferred: switchover_bw, bytes/ms (QEMU >= 8.2; NA before)
SWITCHOVER_BW_COLUMN = "count"
# vfio_load_state_device_buffer_{incoming,starved,load_start,load_end}: multifd buffer idx
BUFFER_IDX_COLUMN = "count"


def _floats(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), np.nan)
    return df[col].to_numpy(dtype="float64", na_value=np.nan)


def switchover_bw_bytes_per_ms(df: pd.DataFrame) -> np.ndarray:
    """``switchover_bw`` of ``migrate_transferred`` rows (bytes/ms, NaN where not printed)."""
    return _floats(df, SWITCHOVER_BW_COLUMN)


def buffer_idx(df: pd.DataFrame) -> np.ndarray:
    """The multifd buffer index of ``vfio_load_state_device_buffer_*`` rows (NaN: none)."""
    return _floats(df, BUFFER_IDX_COLUMN)
