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
from profiler.model.version import Era

CHECK_COLUMNS = ["pos", "t_ns", "kind", "pending", "pre", "post", "threshold", "gap", "below",
                 "pass_no", "bw", "sbw", "decisive"]
_EXPECT = {N.VFIO_PENDING_EST: "estimate", N.VFIO_PENDING_EXACT: "exact",
           N.VFIO_UPDATE_PENDING: "pending"}


def _need(rows: pd.DataFrame, cols: tuple[str, ...]) -> None:
    missing = [c for c in cols if c not in rows.columns]
    if missing:
        raise ValueError(f"checks: input lacks columns {missing}")


def checks(rows: pd.DataFrame, era: Era) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(checks, contributions) of one source migration's trace rows, in log order.

    ``rows`` must be ordered and indexed 0..n-1 (``pos``). ``checks`` has CHECK_COLUMNS with
    sizes in bytes and ``bw``/``sbw`` in bytes/ms; ``contributions`` has one row per
    (check index ``chk``, ``device``, ``bytes``), RAM as the remainder under ``ram``.
    """
    _need(rows, ("event", "bytes", "pre_bytes", "post_bytes", "threshold_bytes", "count",
                 "bw_bytes_per_ms", "init_bytes", "dirty_bytes", "stopcopy_bytes", "device"))
    name = rows["event"]
    is_chk = name.isin(N.CHECK_KINDS).to_numpy(dtype=bool)
    tr = name.eq(N.TRANSFERRED)
    thr = rows["threshold_bytes"].where(tr).ffill().fillna(0).astype("Int64")
    bw = rows["bw_bytes_per_ms"].where(tr).ffill()
    sbw = rows["count"].where(tr).ffill()
    pass_no = name.eq(N.SYNC_END).fillna(False).astype(np.int64).cumsum()
    c = rows[is_chk]
    kind = name[is_chk].map(N.CHECK_KINDS).astype("string")
    threshold = c["threshold_bytes"].where(kind.eq("pending"), thr[is_chk]).astype("Int64")
    pending = c["bytes"].astype("Int64")
    below = pending.eq(0) | (pending.le(threshold) if era.complete_le else pending.lt(threshold))
    out = pd.DataFrame({
        "pos": c.index.to_numpy(), "t_ns": c["t_ns"].astype("Int64"), "kind": kind,
        "pending": pending, "pre": c["pre_bytes"].astype("Int64"),
        "post": c["post_bytes"].astype("Int64"), "threshold": threshold,
        "gap": (pending - threshold).astype("Int64"), "below": below.astype("boolean"),
        "pass_no": pass_no[is_chk].astype("Int64"), "bw": bw[is_chk].astype("Float64"),
        "sbw": sbw[is_chk].astype("Int64"),
    }).reset_index(drop=True)
    # An estimate followed by an exact query in the same loop pass did not decide anything:
    # QEMU compared the exact figure (a RAM estimate of 0 right before a sync is common).
    k = out["kind"].to_numpy(dtype=object)
    nxt = np.append(k[1:], None)
    out["decisive"] = ~((k == "estimate") & (nxt == "exact"))
    return out, _contributions(rows, name, is_chk, out)


def _contributions(rows, name, is_chk, chk: pd.DataFrame) -> pd.DataFrame:
    cols = ["chk", "device", "bytes"]
    vf_mask = name.isin(list(_EXPECT)).to_numpy(dtype=bool)
    if not len(chk):
        return pd.DataFrame(columns=cols)
    # A non-check row belongs to the next check: index = number of checks before it.
    win = np.cumsum(is_chk) - is_chk
    v = rows[vf_mask]
    vname = name[vf_mask]
    init = v["init_bytes"].fillna(0)
    dirty = v["dirty_bytes"].fillna(0)
    stop = v["stopcopy_bytes"].fillna(0)
    # hex sizes = QEMU 8.1-9.1 (or a build without the RHEL backport): exact double counts
    double = v["hexsize"].to_numpy(dtype=bool) if "hexsize" in v.columns else np.zeros(len(v), dtype=bool)
    val = np.where(vname.eq(N.VFIO_PENDING_EST), init + dirty,
                   np.where(vname.eq(N.VFIO_PENDING_EXACT), stop + np.where(double, init + dirty, 0),
                            stop))
    idx = win[vf_mask]
    ok = idx < len(chk)
    expect = vname.map(_EXPECT).to_numpy()
    kinds = chk["kind"].to_numpy(dtype=object)
    ok &= kinds[np.minimum(idx, len(chk) - 1)] == expect
    dev = pd.DataFrame({"chk": idx[ok], "device": v["device"].to_numpy()[ok],
                        "bytes": np.asarray(val, dtype=np.float64)[ok]})
    dev = dev.dropna(subset=["device"]).groupby(["chk", "device"], sort=False, as_index=False).last()
    total = dev.groupby("chk")["bytes"].sum()
    pend = chk["pending"].astype("Float64").fillna(0).to_numpy(dtype=np.float64)
    taken = np.zeros(len(chk))
    taken[total.index.to_numpy(dtype=np.int64)] = total.to_numpy()
    ram = pd.DataFrame({"chk": np.arange(len(chk)), "device": "ram",
                        "bytes": np.clip(pend - taken, 0, None)})
    out = pd.concat([ram, dev], ignore_index=True)
    out["bytes"] = out["bytes"].round().astype(np.int64)
    return out[cols]
