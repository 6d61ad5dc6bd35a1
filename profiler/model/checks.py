"""Every convergence check of the migration thread: pending against the threshold, per device.

One check per pending line of the source log (``migrate_pending_estimate``, ``_exact``, or the
v7.2 ``migrate_pending``), in log order. The threshold is the one printed on the check line
where the version has it (7.2 ``max``), else the latest ``migrate_transferred ... max_size``
of this migration (0 before the first 100 ms window: QEMU resets it in ``migrate_init``).
Per-device contributions come from the ``vfio_state_pending_*`` lines printed just before,
inside the same pending call: estimate = initial + dirty pre-copy size; exact = stop-copy size,
plus initial + dirty again where QEMU 8.1-9.1 double counts (hex sizes, qemu-trace.md §9.2);
v7.2 = the device's ``vfio_update_pending``. Never the cumulative ``precopy`` argument.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.model import names as N
from profiler.model.migrations import _in, labels
from profiler.model.version import Era

CHECK_COLUMNS = ["pos", "t_ns", "kind", "pending", "pre", "post", "threshold", "gap", "below",
                 "pass_no", "bw", "sbw", "decisive"]
_EXPECT = {N.VFIO_PENDING_EST: "estimate", N.VFIO_PENDING_EXACT: "exact",
           N.VFIO_UPDATE_PENDING: "pending"}


def _need(rows: pd.DataFrame, cols: tuple[str, ...]) -> None:
    missing = [c for c in cols if c not in rows.columns]
    if missing:
        raise ValueError(f"checks: input lacks columns {missing}")


def _f(rows: pd.DataFrame, col: str, idx: np.ndarray) -> np.ndarray:
    """Column values at row positions as float64, NaN for NA."""
    return rows[col].to_numpy(dtype="float64", na_value=np.nan)[idx]


def _int(a: np.ndarray) -> pd.arrays.IntegerArray:
    m = np.isnan(a)
    return pd.arrays.IntegerArray(np.where(m, 0, a).astype(np.int64), mask=m)


def _last_at(src: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Index into ``src`` (sorted row positions) of the last one before each ``at``; -1 if none."""
    return np.searchsorted(src, at, side="right") - 1


def checks(rows: pd.DataFrame, era: Era) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(checks, contributions) of one source migration's trace rows, in log order.

    ``rows`` must be ordered and indexed 0..n-1 (``pos``). ``checks`` has CHECK_COLUMNS with
    sizes in bytes and ``bw``/``sbw`` in bytes/ms; ``contributions`` has one row per
    (check index ``chk``, ``device``, ``bytes``), RAM as the remainder under ``ram``.
    """
    _need(rows, ("event", "bytes", "pre_bytes", "post_bytes", "threshold_bytes", "count",
                 "bw_bytes_per_ms", "init_bytes", "dirty_bytes", "stopcopy_bytes", "device"))
    name = labels(rows["event"], "")
    at = np.flatnonzero(_in(name, N.CHECK_KINDS))
    kind = np.array([N.CHECK_KINDS[x] for x in name[at]], dtype=object)
    win = np.flatnonzero(name == N.TRANSFERRED)
    j = _last_at(win, at)
    has = j >= 0
    jw = win[np.maximum(j, 0)] if len(win) else np.zeros(len(at), dtype=np.int64)

    def window(col: str, missing: float) -> np.ndarray:
        if not len(win):
            return np.full(len(at), missing)
        return np.where(has, _f(rows, col, jw), missing)

    threshold = np.where(kind == "pending", _f(rows, "threshold_bytes", at), window("threshold_bytes", 0.0))
    pending = _f(rows, "bytes", at)
    below = (pending == 0) | ((pending <= threshold) if era.complete_le else (pending < threshold))
    syncs = np.flatnonzero(name == N.SYNC_END)
    out = pd.DataFrame({
        "pos": at, "t_ns": rows["t_ns"].take(at).reset_index(drop=True).astype("Int64"),
        "kind": kind, "pending": _int(pending), "pre": _int(_f(rows, "pre_bytes", at)),
        "post": _int(_f(rows, "post_bytes", at)), "threshold": _int(threshold),
        "gap": _int(pending - threshold), "below": below,
        "pass_no": np.searchsorted(syncs, at, side="right"),
        "bw": window("bw_bytes_per_ms", np.nan), "sbw": window("count", np.nan),
    })
    # An estimate followed by an exact query in the same loop pass did not decide anything:
    # QEMU compared the exact figure (a RAM estimate of 0 right before a sync is common).
    nxt = np.append(kind[1:], None)
    out["decisive"] = ~((kind == "estimate") & (nxt == "exact"))
    return out, _contributions(rows, name, at, kind, pending)


def _contributions(rows, name, at, kind, pending) -> pd.DataFrame:
    cols = ["chk", "device", "bytes"]
    if not len(at):
        return pd.DataFrame(columns=cols)
    vf = np.flatnonzero(_in(name, _EXPECT))
    vname = name[vf]
    init = np.nan_to_num(_f(rows, "init_bytes", vf))
    dirty = np.nan_to_num(_f(rows, "dirty_bytes", vf))
    stop = np.nan_to_num(_f(rows, "stopcopy_bytes", vf))
    # hex sizes = QEMU 8.1-9.1 (or a build without the RHEL backport): exact double counts
    double = rows["hexsize"].to_numpy(dtype=bool)[vf] if "hexsize" in rows.columns else np.zeros(len(vf), bool)
    val = np.where(vname == N.VFIO_PENDING_EST, init + dirty,
                   np.where(vname == N.VFIO_PENDING_EXACT, stop + np.where(double, init + dirty, 0), stop))
    # a device line belongs to the next check (printed inside the same pending call)
    idx = np.searchsorted(at, vf, side="left")
    ok = idx < len(at)
    expect = np.array([_EXPECT[v] for v in vname], dtype=object)
    ok &= kind[np.minimum(idx, len(at) - 1)] == expect
    dev = rows["device"].to_numpy(dtype=object)[vf]
    ok &= np.array([d is not None and d == d for d in dev], dtype=bool)
    d = pd.DataFrame({"chk": idx[ok], "device": dev[ok], "bytes": val[ok]})
    d = d.drop_duplicates(["chk", "device"], keep="last")
    taken = np.bincount(d["chk"].to_numpy(dtype=np.int64), weights=d["bytes"].to_numpy(), minlength=len(at))
    ram = pd.DataFrame({"chk": np.arange(len(at)), "device": "ram",
                        "bytes": np.clip(np.nan_to_num(pending) - taken, 0, None)})
    out = pd.concat([ram, d], ignore_index=True)
    out["bytes"] = out["bytes"].round().astype(np.int64)
    return out[cols]
