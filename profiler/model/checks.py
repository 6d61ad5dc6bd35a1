"""Every convergence check of the migration thread: pending against the threshold, per device.

One check per pending line of the source log (``migrate_pending_estimate``, ``_exact``, or the
v7.2 ``migrate_pending``), in log order. The threshold is the one printed on the check line
where the version has it (7.2 ``max``), else the latest ``migrate_transferred ... max_size``
of this migration (0 before the first 100 ms window: QEMU resets it in ``migrate_init``).
Per-device contributions come from the ``vfio_state_pending_*`` lines printed just before,
inside the same pending call: estimate = initial + dirty pre-copy size; exact = stop-copy size,
plus initial + dirty again where QEMU 8.1-9.1 double counts (hex sizes, qemu-trace.md §9.2);
v7.2 = the device's ``vfio_update_pending``. Never the cumulative ``precopy`` argument.
All migrations at once, over the ordered ``Table``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from profiler.model import names as N
from profiler.model.table import Table, notnone

_EXPECT = {N.VFIO_PENDING_EST: "estimate", N.VFIO_PENDING_EXACT: "exact",
           N.VFIO_UPDATE_PENDING: "pending"}


def checks(T: Table, complete_le: np.ndarray
           ) -> tuple[pd.DataFrame, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(checks, contributions) of every migration, in table (= log) order.

    ``checks``: row, mig, k (index within its migration), t_ns (float, NaN unknown), kind,
    pending, pre, post, threshold, gap (bytes, float), below, pass_no, bw, sbw (bytes/ms),
    decisive. ``contributions``: arrays chk (row of ``checks``), device, bytes (int), RAM
    as the remainder under ``ram``, first in each check. ``complete_le`` per migration: v10.1+ compares with <=.
    """
    kinds = N.check_kinds()
    at = np.flatnonzero(T.trace & T.is_(*kinds))
    nm = T.name[at]
    kind = np.full(len(at), "pending", dtype=object)
    for ev_name, k in kinds.items():
        kind[nm == ev_name] = k
    cm = T.mig[at]
    win = np.flatnonzero(T.trace & T.is_(N.TRANSFERRED))
    if len(win):
        j = np.searchsorted(win, at, side="right") - 1
        jw = win[np.maximum(j, 0)]
        has = (j >= 0) & (T.mig[jw] == cm)
    else:
        jw = np.zeros(len(at), dtype=np.int64)
        has = np.zeros(len(at), dtype=bool)
    num = T.num
    threshold = np.where(kind == "pending", num["threshold_bytes"][at],
                         np.where(has, num["threshold_bytes"][jw], 0.0))
    pending = num["bytes"][at]
    le = complete_le[cm] if len(cm) else np.zeros(0, dtype=bool)
    below = (pending == 0) | np.where(le, pending <= threshold, pending < threshold)
    syncs = np.flatnonzero(T.trace & T.is_(N.SYNC_END))
    first = np.searchsorted(at, T.start[cm], side="left")
    nxt = np.append(kind[1:], None)
    same = np.append(cm[1:] == cm[:-1], False) if len(cm) else np.zeros(0, dtype=bool)
    out = pd.DataFrame({
        "row": at, "mig": cm, "k": np.arange(len(at)) - first, "t_ns": T.t_at(at),
        "kind": pd.Series(kind, dtype=object),  # object: pandas 3 would infer (slow) Arrow strings
        "pending": pending, "pre": num["pre_bytes"][at], "post": num["post_bytes"][at],
        "threshold": threshold, "gap": pending - threshold, "below": below,
        "pass_no": np.searchsorted(syncs, at, side="right") - np.searchsorted(syncs, T.start[cm], side="left"),
        "bw": np.where(has, num["bw_bytes_per_ms"][jw], np.nan),
        "sbw": np.where(has, num["switchover_bw_bytes_per_ms"][jw], np.nan),
        # An estimate followed by an exact query in the same loop pass decided nothing: QEMU
        # compared the exact figure (a RAM estimate of 0 right before a sync is common).
        "decisive": ~((kind == "estimate") & (nxt == "exact") & same),
    })
    return out, _contributions(T, at, kind, pending)


def _contributions(T: Table, at: np.ndarray, kind: np.ndarray, pending: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not len(at):
        return np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, np.int64)
    vf = np.flatnonzero(T.trace & T.is_(*_EXPECT))
    vname = T.name[vf]
    init = np.nan_to_num(T.num["init_bytes"][vf])
    dirty = np.nan_to_num(T.num["dirty_bytes"][vf])
    stop = np.nan_to_num(T.num["stopcopy_bytes"][vf])
    # hex sizes = QEMU 8.1-9.1 (or a build without the RHEL backport): exact double counts
    double = T.hexsize[vf]
    val = np.where(vname == N.VFIO_PENDING_EST, init + dirty,
                   np.where(vname == N.VFIO_PENDING_EXACT, stop + np.where(double, init + dirty, 0), stop))
    # a device line belongs to the next check of its migration (same pending call)
    idx = np.searchsorted(at, vf, side="left")
    c = np.minimum(idx, len(at) - 1)
    is_est, is_ex = vname == N.VFIO_PENDING_EST, vname == N.VFIO_PENDING_EXACT
    k_est, k_ex = kind == "estimate", kind == "exact"
    match = np.where(is_est, k_est[c], np.where(is_ex, k_ex[c], ~k_est[c] & ~k_ex[c]))
    dev = T.device[vf]
    ok = (idx < len(at)) & (T.mig[at[c]] == T.mig[vf]) & match & notnone(dev)
    chk, dev, val = idx[ok], dev[ok], val[ok]
    # one value per (check, device): the last line printed (numpy, not drop_duplicates)
    code, _ = pd.factorize(dev)
    key = chk.astype(np.int64) * (int(code.max(initial=0)) + 1) + code
    _, last = np.unique(key[::-1], return_index=True)
    keep = np.sort(len(key) - 1 - last)
    chk, dev, val = chk[keep], dev[keep], val[keep]
    taken = np.bincount(chk, weights=val, minlength=len(at))
    ram = np.clip(np.nan_to_num(pending) - taken, 0, None)
    # RAM first in each check, then its devices in print order (a stable merge by check)
    all_chk = np.concatenate([np.arange(len(at)), chk])
    order = np.argsort(all_chk, kind="stable")
    return (all_chk[order], np.concatenate([np.full(len(at), "ram", dtype=object), dev])[order],
            np.round(np.concatenate([ram, val])[order]).astype(np.int64))
