"""Did pre-copy converge, and if not, what would have let it switch over.

Converged = the migration thread decided to complete (``migration_thread_low_pending``).
Otherwise the verdict is read from the checks QEMU can switch over on: a check below the
threshold makes QEMU re-sync the dirty bitmap first (7.2: inside ``ram_save_pending``; >= 8.0:
the exact query, qemu-trace.md §3.7), so only the pending right after a sync decides. In the
stuck steady state that figure is the dirty working set, re-sent every pass; switch-over needs
it <= bandwidth x downtime-limit. From it: the gap, whether pre-copy still shrinks pending, the
downtime-limit (pending / bandwidth) or bandwidth (pending / downtime-limit) that would switch
over, a suggestion with a margin, and the device holding pending up.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

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


# Suggested settings = needed x this: QEMU measures the bandwidth behind the threshold over
# 100 ms windows, which swing by +-15% on a loaded host, and the working set re-dirtied
# between syncs varies from pass to pass.
MARGIN = 1.25
# pending after sync that fell by less than this over the recent passes is not shrinking
_SHRINK = 0.95
_RECENT = 3  # passes the steady state is read from


def post_sync(c: dict[str, np.ndarray]) -> np.ndarray:
    """Mask of the checks made right after a dirty-bitmap sync (their pending is post-sync);
    ``c`` may hold it already (``post_sync``, computed for every migration's checks at once).

    A sync completed between the previous check and this one (``pass_no`` grew: 7.2 syncs in
    ``ram_save_pending`` before printing ``migrate_pending``; >= 8.0 the exact query syncs
    before ``migrate_pending_exact``; >= 9.2 auto-converge's timer syncs too), or an exact
    check. The first check follows only the setup sync (all of RAM pending): not one.
    """
    n = len(c["row"])
    if n == 0:
        return np.zeros(0, dtype=bool)
    pn = np.asarray(c["pass_no"], dtype=np.int64)
    synced = np.r_[False, pn[1:] > pn[:-1]]
    # an exact check always follows its sync; the kind also covers a trace without sync lines
    kind = c.get("kind")
    return synced if kind is None else synced | (np.asarray(kind) == "exact")


@dataclass(frozen=True, slots=True)
class _Steady:
    """What the post-sync checks say: ``idx`` of the decisive post-sync checks before the
    decision, the recent working set, whether it still shrinks, the pass time, its rate."""

    idx: np.ndarray
    pending: float | None
    stuck: bool | None
    pass_s: float | None
    rate: float | None  # bytes re-dirtied per second between syncs


def _nanargmin(a: np.ndarray) -> int | None:
    """``np.nanargmin`` (None when all NaN) without its per-call overhead."""
    nan = np.isnan(a)
    if nan.all():
        return None
    k = int(np.argmin(np.where(nan, np.inf, a)))
    return k if not nan[k] else int(np.nanargmin(a))  # only +inf values beside the NaNs


def _steady(c: dict[str, np.ndarray], dec: np.ndarray, decided_row: int) -> _Steady:
    n = len(c["row"])
    live = np.asarray(c["row"] < decided_row) if decided_row >= 0 else np.ones(n, dtype=bool)
    idx = np.flatnonzero(dec & live)
    pend = np.asarray(c["pending"], dtype=np.float64)
    recent = idx[-_RECENT:]
    ok = len(recent) and not np.isnan(pend[recent]).all()
    # the largest of the recent ones: the suggestion must beat a pass that re-dirties more
    steady = float(np.nanmax(pend[recent])) if ok else None
    stuck = bool(pend[recent[-1]] >= _SHRINK * np.nanmin(pend[recent[:-1]])) if len(recent) >= 2 else None
    t = np.asarray(c["t_ns"], dtype=np.float64)
    pass_s = rate = None
    if len(idx) >= 2 and not np.isnan(t[idx]).any():
        dt = np.diff(t[idx]) / 1e9
        if (dt > 0).all():
            # pending right after sync k was (nearly all) dirtied since sync k-1
            # (the stdlib median: a few values, where numpy would be mostly call overhead)
            pass_s, rate = float(statistics.median(dt.tolist())), float(pend[idx[1:]].sum() / dt.sum())
    return _Steady(idx, steady, stuck, pass_s, rate)


def _ms(x: float) -> str:
    return f"{x / 1000:.2f} s" if x >= 1000 else f"{x:.0f} ms"


def _nice(x: float) -> float:
    """Round a suggested downtime-limit up to a setting a person would type (10 ms steps)."""
    return float(math.ceil(x / 10.0) * 10) if x > 10 else float(math.ceil(x))


def _rel(a: float, b: float) -> str:
    # within 10% reads as "about": the two are measured over different windows
    return "exceeds" if a > 1.1 * b else "is below" if a < 0.9 * b else "is about"


def verdict(c: dict[str, np.ndarray], per: Sequence[dict[str, int]], *, decided_row: int,
            outcome: str, dirty_rate: float | None, bandwidth: float | None,
            downtime_limit_ms: float | None) -> Verdict:
    """The plain-words verdict of one migration; ``c`` holds its checks' columns (numpy),
    ``per`` the pending per device at each check; indices refer to its checks.
    ``dirty_rate`` and ``bandwidth`` in bytes/s (None: unknown)."""
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
    # the figures QEMU decided on: decisive (not an estimate it re-queried) and post-sync;
    # without a sync after setup, the decisive estimates (a lower bound)
    decisive = np.asarray(c["decisive"], dtype=bool) if n else np.zeros(0, dtype=bool)
    dec = decisive & (c["post_sync"] if "post_sync" in c else post_sync(c))
    gap = np.asarray(c["gap"], dtype=np.float64)
    pend = np.asarray(c["pending"], dtype=np.float64)
    gaps = np.where(dec if dec.any() else decisive, gap, np.nan) if n else np.zeros(0)
    g = _nanargmin(gaps) if n else None
    st = _steady(c, dec, decided_row)
    stuck = False if converged else st.stuck
    if dirty_rate is None:
        dirty_rate = st.rate
    if stuck is None and converged is False and dirty_rate is not None and bandwidth is not None:
        stuck = dirty_rate >= bandwidth

    # what it takes: not converged, the steady state (read at the last post-sync check);
    # converged or never re-synced, the closest check. Bandwidth = the one behind QEMU's
    # threshold: avail-switchover-bandwidth when set, else measured (the run's mean when
    # judging the steady state: single 100 ms windows swing)
    use_steady = converged is False and st.pending is not None
    ref = int(st.idx[-1]) if use_steady else g
    bpm = math.nan
    if ref is not None:
        sbw = float(c["sbw"][ref])
        bpm = sbw if sbw > 0 else bandwidth / 1000.0 if use_steady and bandwidth else float(c["bw"][ref])
    need_p = st.pending if use_steady else (float(pend[g]) if g is not None else math.nan)
    need_dl = need_bw = sug_dl = sug_bw = None
    if not math.isnan(need_p):
        if bpm > 0:
            need_dl = math.floor(need_p / bpm) + 1.0
            sug_dl = _nice(need_p / bpm * MARGIN) if use_steady else None
        if downtime_limit_ms:
            need_bw = need_p / downtime_limit_ms * 1000.0
            sug_bw = need_bw * MARGIN if use_steady else None

    # the device holding pending up where QEMU decides (a VFIO device's stop-copy size counts
    # in full in the exact, post-sync checks)
    focus = at if at is not None else ref
    dominant = None
    if focus is not None and focus < len(per) and per[focus]:
        d, b = max(per[focus].items(), key=lambda kv: kv[1])
        dominant = d if b > 0 else None

    parts: list[str] = []
    if converged and at is not None:
        p, th = c["pending"][at], c["threshold"][at]
        if p == 0:
            parts.append(f"converged at check {at + 1} of {n}: nothing pending")
        else:
            parts.append(f"converged at check {at + 1} of {n}: pending {fmt_bytes(p)} "
                         f"{'<' if p < th else '<='} threshold {fmt_bytes(th)}")
    elif converged:
        parts.append("converged (switch-over decided)")
    elif converged is None:
        parts.append("no pending checks traced: convergence unknown")
    elif outcome == "incomplete":
        parts.append(f"not converged yet after {n} checks")
    else:
        parts.append(f"did not converge in {n} checks (outcome {outcome})")
    if use_steady and ref is not None:
        # the threshold as QEMU computed it: that window's bandwidth x downtime-limit
        wbw = float(c["sbw"][ref]) if float(c["sbw"][ref]) > 0 else float(c["bw"][ref])
        how = (f" ({downtime_limit_ms:g} ms downtime-limit at {fmt_rate(wbw * 1000)})"
               if downtime_limit_ms and wbw > 0 else "")
        parts.append(f"after each dirty sync {fmt_bytes(st.pending)} is pending again, but "
                     f"switch-over needs it below the threshold, {fmt_bytes(c['threshold'][ref])}{how}")
        if g is not None:
            parts.append(f"closest: {fmt_bytes(gap[g])} above at check {g + 1}")
    elif converged is False and g is not None:
        parts.append(f"closest at check {g + 1}: pending {fmt_bytes(pend[g])} vs threshold "
                     f"{fmt_bytes(c['threshold'][g])} ({fmt_bytes(gap[g])} above)")
        parts.append("no dirty sync since the first pass, so the working set is not known yet "
                     "(QEMU re-syncs before it switches over: the real need is higher)")
    rates = None
    if dirty_rate is not None and bandwidth is not None:
        # a converged run keeps the plain comparison; a stuck one's two rates are ~equal
        rel = _rel(dirty_rate, bandwidth) if converged is False else (
            "exceeds" if dirty_rate >= bandwidth else "is below")
        rates = f"dirty rate {fmt_rate(dirty_rate)} {rel} bandwidth {fmt_rate(bandwidth)}"
    if converged is False and stuck and use_steady and dominant not in (None, "ram") and focus == ref:
        parts.append(f"{dominant} keeps {fmt_bytes(per[ref][dominant])} of it pending after every "
                     "sync (a VFIO device's stop-copy size counts in full there), which pre-copy "
                     "cannot shrink: only a larger downtime-limit or more bandwidth will end it")
    elif converged is False and stuck:
        what = "the guest dirties memory as fast as it is sent"
        if st.pending is not None:
            every = f" in each {st.pass_s:.2f} s pass" if st.pass_s is not None else ""
            what = f"the guest re-dirties {fmt_bytes(st.pending)}{every}"
        parts.append(what + (f" ({rates})" if rates else "") + ", so pre-copy cannot shrink "
                     "pending: only a larger downtime-limit, more bandwidth, or throttling "
                     "(auto-converge / dirty-limit) will end it")
    elif converged is False and len(st.idx) >= 2:
        r = st.idx[-_RECENT:]
        parts.append(f"pending after sync was still shrinking ({fmt_bytes(pend[r[0]])} -> "
                     f"{fmt_bytes(pend[r[-1]])} over the last {len(r)} syncs)")
        if rates:
            parts.append(rates)
    elif rates:
        parts.append(rates)
    if converged is False:
        opts = []
        if need_dl is not None:
            opts.append(f"downtime-limit >= {_ms(need_dl)}")
        if need_bw is not None:
            opts.append(f"bandwidth >= {fmt_rate(need_bw)}"
                        + (f" at {downtime_limit_ms:g} ms" if downtime_limit_ms else ""))
        if opts:
            parts.append(("it switches over at " if use_steady else "it needs at least ")
                         + " or ".join(opts))
        sug = ([f"downtime-limit {_ms(sug_dl)}"] if sug_dl is not None else []) + (
            [f"max-bandwidth {fmt_rate(sug_bw)} (if the link carries it)"] if sug_bw is not None else [])
        if sug:
            parts.append(f"suggested (+{round((MARGIN - 1) * 100)}% margin): " + " or ".join(sug))
    if dominant is not None and focus is not None and converged is not False:
        parts.append(f"{dominant} holds most of pending ({fmt_bytes(per[focus][dominant])})")
    elif dominant is not None and focus is not None:
        held = per[focus][dominant]
        tot = float(c["pending"][focus])
        share = f" ({held / tot:.0%})" if tot > 0 else ""
        where = "of the pending after sync" if use_steady and focus == ref else "of pending"
        parts.append(f"{dominant} holds {fmt_bytes(held)}{share} {where}")
    if outcome != "completed" and converged is not False:
        parts.append(f"outcome {outcome}")
    return Verdict(
        converged=converged, converged_at_check=at, summary="; ".join(parts),
        min_gap_bytes=int(gap[g]) if g is not None else None, min_gap_check=g,
        dirty_rate_bytes_per_s=dirty_rate, bandwidth_bytes_per_s=bandwidth,
        needed_downtime_limit_ms=need_dl, needed_bandwidth_bytes_per_s=need_bw,
        dominant_device=dominant,
        post_sync_pending_bytes=int(st.pending) if st.pending is not None else None,
        precopy_stuck=stuck,
        suggested_downtime_limit_ms=sug_dl, suggested_bandwidth_bytes_per_s=sug_bw,
    )
