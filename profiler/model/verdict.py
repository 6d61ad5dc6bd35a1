"""Did pre-copy converge, and if not, what would have let it switch over.

Converged = the migration thread decided to complete (``migration_thread_low_pending``).
Otherwise: the check that came closest (smallest pending - threshold), the dirty rate against
the bandwidth, the downtime-limit (pending / bandwidth) or bandwidth (pending /
downtime-limit) that would have made that check pass, and the device holding pending up.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from profiler.model.results import Verdict


def fmt_bytes(n: float | None) -> str:
    """Human-readable binary size (B, KiB, MiB, GiB)."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "?"
    a = abs(n)
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if a >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def fmt_rate(n: float | None) -> str:
    return "?" if n is None else fmt_bytes(n) + "/s"


def sync_dirty_rate(pas: pd.DataFrame, page_size: int = 4096) -> float | None:
    """RAM dirty rate (bytes/s) the way QEMU computes ``dirty-pages-rate``, from the syncs.

    ``migration_bitmap_sync_end`` prints ``num_dirty_pages_period``, the pages newly dirtied
    since the rate period began; right after printing, a sync that ends more than 1 s after
    the period's start closes the period (rate = pages / its length) and starts the next.
    Replaying that rule over the syncs before stop-copy (the setup sync opens the first
    period): sum of pages over sum of time, the last, still open, period included. Needs
    timestamps.
    """
    p = pas[pas["phase"] != "stopcopy"]
    if len(p) < 2 or p["t_ns"].isna().any() or p["dur_ns"].isna().any() or p["dirty_pages"].isna().any():
        return None
    end = (p["t_ns"] + p["dur_ns"]).to_numpy(dtype="float64") / 1e9
    pages = p["dirty_pages"].to_numpy(dtype="float64")
    start = end[0]
    total_pages = total_s = 0.0
    for k in range(1, len(end)):
        if end[k] - start > 1.0 or k == len(end) - 1:
            total_pages += pages[k]
            total_s += end[k] - start
            start = end[k]
    if total_s <= 0:
        return None
    return total_pages * page_size / total_s


def rates(chk: pd.DataFrame, contrib: pd.DataFrame, win: pd.DataFrame,
          upto_pos: int | None) -> tuple[float | None, float | None]:
    """(RAM dirty rate, bandwidth) in bytes/s over the pre-copy phase.

    ``win`` are the ``migrate_transferred`` windows (pos, bytes, dur_ns): bandwidth = bytes sent /
    time over them. Dirty rate (when ``sync_dirty_rate`` cannot tell): RAM's pending only grows
    at a dirty-bitmap sync, so the sum of RAM's increases between consecutive checks over the
    time from the first to the last check (timestamps, else the windows' time_spent, which
    tile the timeline); a lower bound when checks are sparse. None when no sync happened.
    """
    if upto_pos is not None:
        win = win[win["pos"] < upto_pos]
        chk = chk[chk["pos"] < upto_pos]
    bw = None
    if len(win) and win["dur_ns"].sum() > 0:
        bw = float(win["bytes"].sum()) / (float(win["dur_ns"].sum()) / 1e9)
    dirty = None
    n = len(chk)
    if n >= 2 and chk["pass_no"].iloc[-1] != chk["pass_no"].iloc[0]:
        r = contrib[contrib["device"] == "ram"].set_index("chk")["bytes"].reindex(range(n)).ffill()
        grown = float(np.clip(np.diff(r.to_numpy(dtype="float64")), 0, None).sum())
        t = chk["t_ns"]
        if t.notna().all():
            dur = (float(t.iloc[-1]) - float(t.iloc[0])) / 1e9
        else:
            a, b = chk["pos"].iloc[0], chk["pos"].iloc[-1]
            dur = float(win[(win["pos"] > a) & (win["pos"] <= b)]["dur_ns"].sum()) / 1e9
        if dur > 0 and grown > 0:  # no increase seen: sparse checks, not a clean guest
            dirty = grown / dur
    return dirty, bw


def verdict(chk: pd.DataFrame, contrib: pd.DataFrame, *, decided_pos: int | None, outcome: str,
            dirty_rate: float | None, bandwidth: float | None,
            downtime_limit_ms: float | None) -> Verdict:
    """The plain-words verdict of one migration; indices refer to ``chk`` rows."""
    n = len(chk)
    if decided_pos is not None:
        before = np.flatnonzero(chk["pos"].to_numpy() < decided_pos)
        converged, at = True, (int(before[-1]) if len(before) else None)
    elif outcome == "completed":
        ok = np.flatnonzero(chk["below"].fillna(False).to_numpy(dtype=bool)) if n else []
        converged, at = True, (int(ok[-1]) if len(ok) else None)
    elif n == 0:
        converged, at = None, None
    else:
        converged, at = False, None
    # only the figure QEMU compared in each pass counts (not an estimate it then re-queried)
    gaps = chk["gap"].astype("Float64").where(chk["decisive"].astype(bool)) if n else pd.Series(dtype="Float64")
    g = None
    if n and gaps.notna().any():
        g = int(gaps.fillna(np.inf).to_numpy(dtype="float64").argmin())
    focus = at if at is not None else g
    dominant = None
    if focus is not None and len(contrib):
        c = contrib[contrib["chk"] == focus]
        if len(c) and c["bytes"].max() > 0:
            dominant = str(c.loc[c["bytes"].idxmax(), "device"])
    need_dl = need_bw = None
    if g is not None:
        row = chk.iloc[g]
        pend = float(row["pending"]) if pd.notna(row["pending"]) else None
        # the bandwidth QEMU used for this threshold: switchover_bw when set, else measured
        bpm = row["sbw"] if pd.notna(row["sbw"]) and row["sbw"] > 0 else row["bw"]
        if pend is not None and pd.notna(bpm) and bpm > 0:
            need_dl = math.floor(pend / float(bpm)) + 1.0
        if pend is not None and downtime_limit_ms:
            need_bw = pend / downtime_limit_ms * 1000.0
    parts = []
    if converged and at is not None:
        r = chk.iloc[at]
        if r["pending"] == 0:
            parts.append(f"converged at check {at + 1} of {n}: nothing pending")
        else:
            rel = "<" if r["pending"] < r["threshold"] else "<="
            parts.append(f"converged at check {at + 1} of {n}: pending {fmt_bytes(r['pending'])} "
                         f"{rel} threshold {fmt_bytes(r['threshold'])}")
    elif converged:
        parts.append("converged (switch-over decided)")
    elif converged is None:
        parts.append("no pending checks traced: convergence unknown")
    elif outcome == "incomplete":
        parts.append(f"not converged yet after {n} checks")
    else:
        parts.append(f"did not converge in {n} checks")
        if g is not None:
            r = chk.iloc[g]
            parts.append(f"closest at check {g + 1}: pending {fmt_bytes(r['pending'])} vs threshold "
                         f"{fmt_bytes(r['threshold'])} ({fmt_bytes(r['gap'])} above)")
    if dirty_rate is not None and bandwidth is not None:
        rel = "exceeds" if dirty_rate >= bandwidth else "is below"
        parts.append(f"dirty rate {fmt_rate(dirty_rate)} {rel} bandwidth {fmt_rate(bandwidth)}")
    if not converged and converged is not None:
        opts = []
        if need_dl is not None:
            opts.append(f"downtime-limit >= {need_dl:.0f} ms")
        if need_bw is not None:
            opts.append(f"bandwidth >= {fmt_rate(need_bw)}")
        if opts:
            parts.append("would have switched over with " + " or ".join(opts))
    if dominant is not None and focus is not None:
        c = contrib[(contrib["chk"] == focus) & (contrib["device"] == dominant)]
        parts.append(f"{dominant} holds most of pending ({fmt_bytes(float(c['bytes'].iloc[0]))})")
    if outcome != "completed":
        parts.append(f"outcome {outcome}")
    return Verdict(
        converged=converged, converged_at_check=at, summary="; ".join(parts),
        min_gap_bytes=int(chk.iloc[g]["gap"]) if g is not None else None, min_gap_check=g,
        dirty_rate_bytes_per_s=dirty_rate, bandwidth_bytes_per_s=bandwidth,
        needed_downtime_limit_ms=need_dl, needed_bandwidth_bytes_per_s=need_bw,
        dominant_device=dominant,
    )
