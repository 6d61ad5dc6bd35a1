"""Did pre-copy converge, and if not, what would have let it switch over.

Converged = the migration thread decided to complete (``migration_thread_low_pending``).
Otherwise: the check that came closest (smallest pending - threshold), the dirty rate against
the bandwidth, the downtime-limit (pending / bandwidth) or bandwidth (pending /
downtime-limit) that would have made that check pass, and the device holding pending up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

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


def sync_dirty_rate(end_ns: np.ndarray, pages: np.ndarray, page_size: int = 4096) -> float | None:
    """RAM dirty rate (bytes/s) the way QEMU computes ``dirty-pages-rate``, from the syncs.

    ``end_ns``/``pages``: end time and ``dirty_pages`` of each sync before stop-copy, in order.
    ``migration_bitmap_sync_end`` prints ``num_dirty_pages_period``, the pages newly dirtied
    since the rate period began; right after printing, a sync that ends more than 1 s after
    the period's start closes the period and starts the next. Replaying that rule (the setup
    sync opens the first period): sum of pages over sum of time, the open last period
    included. None without timestamps.
    """
    if len(end_ns) < 2 or np.isnan(end_ns).any() or np.isnan(pages).any():
        return None
    end = end_ns / 1e9
    start = end[0]
    total_pages = total_s = 0.0
    for k in range(1, len(end)):
        if end[k] - start > 1.0 or k == len(end) - 1:
            total_pages += pages[k]
            total_s += end[k] - start
            start = end[k]
    return total_pages * page_size / total_s if total_s > 0 else None


def increase_dirty_rate(ram: np.ndarray, pass_no: np.ndarray, t_ns: np.ndarray,
                        win_dur_ns: float) -> float | None:
    """Fallback dirty rate: RAM's pending only grows at a sync, so the sum of its increases
    between consecutive checks over their time (``t_ns``, else ``win_dur_ns``, the
    ``migrate_transferred`` windows' time in between); a lower bound when checks are sparse.
    None when no sync happened or nothing grew."""
    if len(ram) < 2 or pass_no[-1] == pass_no[0]:
        return None
    grown = float(np.clip(np.diff(ram), 0, None).sum())
    dur = (t_ns[-1] - t_ns[0]) / 1e9 if not np.isnan(t_ns).any() else win_dur_ns / 1e9
    return grown / dur if dur > 0 and grown > 0 else None


def verdict(c: dict[str, np.ndarray], per: Sequence[dict[str, int]], *, decided_row: int,
            outcome: str, dirty_rate: float | None, bandwidth: float | None,
            downtime_limit_ms: float | None) -> Verdict:
    """The plain-words verdict of one migration; ``c`` holds its checks' columns (numpy),
    ``per`` the pending per device at each check; indices refer to its checks."""
    n = len(c["row"])
    if decided_row >= 0:
        before = np.flatnonzero(c["row"] < decided_row)
        converged, at = True, (int(before[-1]) if len(before) else None)
    elif outcome == "completed":
        ok = np.flatnonzero(c["below"])
        converged, at = True, (int(ok[-1]) if len(ok) else None)
    elif n == 0:
        converged, at = None, None
    else:
        converged, at = False, None
    # only the figure QEMU compared in each pass counts (not an estimate it then re-queried)
    gaps = np.where(c["decisive"], c["gap"], np.nan) if n else np.zeros(0)
    g = int(np.nanargmin(gaps)) if n and not np.isnan(gaps).all() else None
    focus = at if at is not None else g
    dominant = None
    if focus is not None and focus < len(per) and per[focus]:
        d, b = max(per[focus].items(), key=lambda kv: kv[1])
        dominant = d if b > 0 else None
    need_dl = need_bw = None
    if g is not None:
        pend = float(c["pending"][g])
        # the bandwidth QEMU used for this threshold: switchover_bw when set, else measured
        sbw = c["sbw"][g]
        bpm = sbw if not math.isnan(sbw) and sbw > 0 else c["bw"][g]
        if not math.isnan(pend) and not math.isnan(bpm) and bpm > 0:
            need_dl = math.floor(pend / float(bpm)) + 1.0
        if not math.isnan(pend) and downtime_limit_ms:
            need_bw = pend / downtime_limit_ms * 1000.0
    parts = []
    if converged and at is not None:
        p, t = c["pending"][at], c["threshold"][at]
        if p == 0:
            parts.append(f"converged at check {at + 1} of {n}: nothing pending")
        else:
            parts.append(f"converged at check {at + 1} of {n}: pending {fmt_bytes(p)} "
                         f"{'<' if p < t else '<='} threshold {fmt_bytes(t)}")
    elif converged:
        parts.append("converged (switch-over decided)")
    elif converged is None:
        parts.append("no pending checks traced: convergence unknown")
    elif outcome == "incomplete":
        parts.append(f"not converged yet after {n} checks")
    else:
        parts.append(f"did not converge in {n} checks")
    if converged is False and g is not None:
        parts.append(f"closest at check {g + 1}: pending {fmt_bytes(c['pending'][g])} vs threshold "
                     f"{fmt_bytes(c['threshold'][g])} ({fmt_bytes(c['gap'][g])} above)")
    if dirty_rate is not None and bandwidth is not None:
        rel = "exceeds" if dirty_rate >= bandwidth else "is below"
        parts.append(f"dirty rate {fmt_rate(dirty_rate)} {rel} bandwidth {fmt_rate(bandwidth)}")
    if converged is False:
        opts = []
        if need_dl is not None:
            opts.append(f"downtime-limit >= {need_dl:.0f} ms")
        if need_bw is not None:
            opts.append(f"bandwidth >= {fmt_rate(need_bw)}")
        if opts:
            parts.append("would have switched over with " + " or ".join(opts))
    if dominant is not None and focus is not None:
        parts.append(f"{dominant} holds most of pending ({fmt_bytes(per[focus][dominant])})")
    if outcome != "completed":
        parts.append(f"outcome {outcome}")
    return Verdict(
        converged=converged, converged_at_check=at, summary="; ".join(parts),
        min_gap_bytes=int(c["gap"][g]) if g is not None else None, min_gap_check=g,
        dirty_rate_bytes_per_s=dirty_rate, bandwidth_bytes_per_s=bandwidth,
        needed_downtime_limit_ms=need_dl, needed_bandwidth_bytes_per_s=need_bw,
        dominant_device=dominant,
    )
