"""What-if: replay one recorded migration under other settings through QEMU's switch-over rule.

``measure`` reads from one migration (its ``Migration`` result and the source's trace rows)
what the settings do not change: RAM's size and the wire bytes of its first (bulk) pass,
the dirty working set and dirty rate seen after each dirty sync, each VFIO device's
initial, dirty and stop-copy sizes, the bandwidth of every 100 ms window over time (and
whether ``max-bandwidth`` or the link held it), the stop-copy rate, the fixed part of the
downtime and the switchover-ack delay. ``predict`` replays the migration thread's loop
(qemu-trace.md §3) under a ``Setting``: a check per loop pass, the threshold re-measured
per 100 ms window as QEMU does (``bandwidth x downtime-limit``, or
``avail-switchover-bandwidth x downtime-limit`` from 8.2), the re-sync when the estimate
falls below it (7.2: RAM's remaining; 8.0-8.2: must-precopy <= threshold; >= 9.0:
pending < threshold), the exact device figures (stop-copy size; 8.1-9.1 plus initial +
dirty again) and the completion test of that release (``<`` or 0; 10.1+ ``<=``), gated
by switchover-ack. Out come: converges or not, dirty syncs (QEMU's dirty-sync-count),
total time, downtime and per-device stop-copy bytes and downtime.

When every pass re-dirties the whole working set, the dirty rate is only known from
below; the replay then re-dirties the set at once after each sync (the safe side: at the
lower bound it predicted convergence where reruns never converged), so its smallest
converging downtime-limit is the verdict's sure bound (docs/verdict.md), and the verdict's
+25% suggestion is one setting the what-if can price.

Where the input cannot pin the answer down, ``predict_range`` says how wide it is: the low
and high of each figure over the replays the input allows. A saturated recording allows
every dirty rate from the measured lower bound up (the truth lies between the replay at
that bound and the safe side); a recorded bandwidth step allows every phase of QEMU's
100 ms bandwidth window against it (where the change lands in a window decides the
threshold QEMU computes from it, and another run lands elsewhere), with that threshold
moved by the window-to-window jitter of the bandwidth around the step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from profiler.model import names as N
from profiler.model.results import Check, Migration, _plain
from profiler.model.verdict import fmt_bytes, fmt_rate

WHATIF_SCHEMA = "migprof.whatif/1"
MiB = 1 << 20
WINDOW_MS = 100.0  # BUFFER_DELAY: bandwidth and threshold are re-measured per window
FREE_STEP_MS = 50.0  # an unthrottled ram_save_iterate returns after MAX_WAIT (50 ms)
DEVICE_CHUNK = MiB  # vfio_save_iterate reads one data buffer (<= 1 MiB) per loop pass
DEFAULT_MAX_BANDWIDTH = 128 * MiB  # QEMU's default max-bandwidth (MAX_THROTTLE), bytes/s
DEFAULT_HORIZON_MS = 60_000.0
_LIMITED = 0.9  # a window at >= 90% of max-bandwidth was held by it, not by the link
_STUCK = 0.95  # pending after sync that fell by less than this is not shrinking
_SMALL_STOPCOPY = MiB  # below this a stop-copy says little about the link's rate
_STEP = 4.0  # a window's bandwidth this many times its predecessor's (or less): a step
PHASES_MS = (0.0, 25.0, 50.0, 75.0)  # QEMU's window phases a bandwidth step is replayed at
# why a prediction is a range (``Range.why``)
LOWER_BOUND = "dirty_rate_lower_bound"
BANDWIDTH_STEP = "bandwidth_step"
SIZE_ESTIMATE = "stopcopy_size_estimate"
PARAMS = ("downtime-limit", "max-bandwidth", "avail-switchover-bandwidth")


class Unpredictable(ValueError):
    """The input cannot be replayed (no timestamps, no pre-copy checks); says why."""


@dataclass(frozen=True, slots=True)
class Rule:
    """QEMU's pre-copy switch-over rule for one release family (qemu-trace.md §3.7)."""

    label: str | None
    v72: bool  # RAM re-syncs inside ram_save_pending when its remaining < threshold
    exact_on_pre: bool  # 8.0-8.2: exact query when must-precopy <= threshold
    complete_le: bool  # 10.1+: completes when pending <= threshold
    switchover_bw: bool  # >= 8.2: avail-switchover-bandwidth sets the threshold
    double_count: bool  # 8.1-9.1: the exact VFIO figure adds initial + dirty again
    device_each_pass: bool  # >= 9.0: every handler iterates on each loop pass
    known: bool = True


def rule_for(label: str | None) -> Rule:
    """The rule for a report's ``qemu_version`` label (``7.2``, ``>=8.1``, ``>=10.1``...)."""
    if label == "7.2":
        return Rule(label, True, False, False, False, False, False)
    try:
        v = tuple(int(x) for x in str(label).lstrip(">=").split(".")[:2])
    except ValueError:
        v = ()
    if len(v) != 2:
        return Rule(label, False, False, False, True, False, True, known=False)
    return Rule(label, v72=False, exact_on_pre=v < (9, 0), complete_le=v >= (10, 1),
                switchover_bw=v >= (8, 2), double_count=(8, 1) <= v < (9, 2),
                device_each_pass=v >= (9, 0))


@dataclass(frozen=True, slots=True)
class Setting:
    """Migration parameters: downtime-limit (ms), max-bandwidth and
    avail-switchover-bandwidth (bytes/s; 0 = unlimited / unset)."""

    downtime_limit_ms: float
    max_bandwidth_bytes_per_s: float
    avail_switchover_bandwidth_bytes_per_s: float = 0.0

    def with_param(self, name: str, value: float) -> Setting:
        """This setting with one parameter (``PARAMS``; bandwidths in bytes/s) changed."""
        key = {"downtime-limit": "downtime_limit_ms", "max-bandwidth": "max_bandwidth_bytes_per_s",
               "avail-switchover-bandwidth": "avail_switchover_bandwidth_bytes_per_s"}[name]
        return replace(self, **{key: float(value)})

    def value(self, name: str) -> float:
        return {"downtime-limit": self.downtime_limit_ms, "max-bandwidth": self.max_bandwidth_bytes_per_s,
                "avail-switchover-bandwidth": self.avail_switchover_bandwidth_bytes_per_s}[name]


@dataclass(frozen=True, slots=True)
class Window:
    """One recorded 100 ms window (``migrate_transferred``): when it ended (ms from the
    start), its bandwidth (bytes/ms), whether max-bandwidth held it, the rate non-zero
    pages could go at then, and whether it was in the recording's bulk pass."""

    end_ms: float
    bytes_per_ms: float
    limited: bool
    link_bytes_per_ms: float  # non-zero pages
    bulk_bytes_per_ms: float  # the bulk pass's mix (zero pages cost CPU, few wire bytes)
    bulk: bool = False


@dataclass(frozen=True, slots=True)
class DeviceInput:
    """A VFIO device as recorded: sizes in bytes, its iterable save time in ms."""

    name: str
    initial_bytes: int
    dirty_bytes: int
    stopcopy_size_bytes: int
    stopcopy_bytes: int | None  # what it sent in the recorded stop-copy
    downtime_ms: float | None
    precopy_info: bool  # reported PRE_COPY initial/dirty sizes
    precopy_bytes: int = 0  # what it sent in pre-copy


@dataclass(frozen=True, slots=True)
class Measured:
    """What one recorded migration says that a setting does not change."""

    migration: int
    qemu_version: str | None
    rule: Rule
    recorded: Setting  # the settings at the start of the recording
    start_ms: float  # first pre-copy check, ms from the migration's start
    sync0_ms: float  # end of the setup dirty sync
    ram_bytes: float  # RAM pending at the first check (every page)
    bulk_wire_bytes: float  # what the first pass put on the wire (zero pages are cheap)
    # the first pass's RAM estimate against the wire bytes sent so far (the page order of
    # the guest's memory: non-zero pages cost their size, zero pages almost nothing)
    bulk_curve: tuple[tuple[float, ...], tuple[float, ...]]
    working_set_bytes: float | None  # re-dirtied set; None = never seen whole
    dirty_rate_bytes_per_s: float  # the largest rate a pass proves (a lower bound when saturated)
    saturated: bool  # every recent pass re-dirtied the whole set: the true rate may be higher
    windows: tuple[Window, ...]
    overshoot: float  # measured / max-bandwidth in held windows (QEMU's windows run over)
    stop_rate_bytes_per_ms: float  # stop-copy rate where max-bandwidth held pre-copy
    stop_rate_source: str
    sync_ms: float  # what a re-sync costs the loop (the sync, and its wait for the BQL)
    fixed_downtime_ms: float  # downtime besides RAM's and the devices' iterable save
    tail_ms: float  # total - switch-over decision - downtime (BQL wait, cleanup)
    ack_delay_ms: float | None  # switchover-ack: ACK after the initial data; None = off
    devices: tuple[DeviceInput, ...]
    passes_seen: int  # post-sync checks before the decision
    outcome: str
    converged: bool | None
    dirty_syncs: int
    total_ms: float | None
    downtime_ms: float | None
    verdict_needed_downtime_limit_ms: float | None
    verdict_suggested_downtime_limit_ms: float | None
    verdict_suggested_bandwidth_bytes_per_s: float | None
    weak: tuple[str, ...]
    # when the bandwidth stepped (ms from the start: the end of the window before the step)
    bandwidth_steps_ms: tuple[float, ...] = ()
    # with the stop-copy rate read from the path (no stop-copy recorded): the first bytes of
    # a stop-copy fill the socket buffers at the source's burst rate (as much as they held
    # when a held window's burst ended); the rest goes at the path's rate
    buffered_bytes: float = 0.0
    burst_bytes_per_ms: float = math.nan
    # where max-bandwidth held the whole first pass: its wire bytes against the time it was
    # busy (not asleep), along the page order: a stretch of zero pages costs scan time and
    # almost no wire, so a window that reaches it sends less than its budget (empty: not held)
    bulk_time: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())


@dataclass(frozen=True, slots=True)
class DevicePrediction:
    name: str
    stopcopy_bytes: int
    downtime_ms: float | None


@dataclass(frozen=True, slots=True)
class Prediction:
    """The replay under one setting; times in ms from the migration's start."""

    setting: Setting
    converges: bool
    dirty_syncs: int | None  # QEMU's dirty-sync-count at completion (setup + pre-copy + final)
    total_ms: float | None
    downtime_ms: float | None
    devices: tuple[DevicePrediction, ...] = ()
    switchover_ms: float | None = None
    pending_bytes: float | None = None  # at the switch-over, or after the last sync
    threshold_bytes: float | None = None
    range: Range | None = None  # how wide the answer is where the input cannot pin it (predict_range)


@dataclass(frozen=True, slots=True)
class DeviceRange:
    name: str
    stopcopy_bytes: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Range:
    """The lowest and highest of each figure over the replays the input allows (``why``:
    ``LOWER_BOUND``, ``BANDWIDTH_STEP``, ``SIZE_ESTIMATE``). ``converges`` is (False, True) when they disagree;
    the figures are over the replays that converge (None when none does)."""

    why: tuple[str, ...]
    converges: tuple[bool, bool]
    converges_at_lower_bound: bool | None  # the replay at the measured lower-bound dirty rate
    dirty_syncs: tuple[int, int] | None
    total_ms: tuple[float, float] | None
    downtime_ms: tuple[float, float] | None
    devices: tuple[DeviceRange, ...] = ()


@dataclass(frozen=True, slots=True)
class Sweep:
    """Predictions across one parameter; ``smallest`` converging value (ms or bytes/s),
    refined between the grid points."""

    param: str
    predictions: tuple[Prediction, ...]
    smallest: float | None  # at the measured dirty rate
    smallest_any_rate: float | None = None  # saturated recordings: whatever the true dirty rate


# ---------------------------------------------------------------------------------------
# measuring


def _ram(c: Check) -> float:
    v = c.devices.get("ram")
    return float(c.pending_bytes if v is None else v)


def _vfio_sum(c: Check) -> float:
    return float(sum(v for k, v in c.devices.items() if k != "ram"))


def _source_rows(m: Migration, events: pd.DataFrame) -> pd.DataFrame:
    """The source side's rows of this migration, ``t_ms`` from its start."""
    t = events["t_ns"].to_numpy(dtype="float64", na_value=np.nan)
    side = events["side"].astype(object).to_numpy()
    hi = m.end_ns if m.end_ns is not None else np.inf
    sel = (side == "source") & (t >= m.start_ns) & (t <= hi)
    rows = events[sel]
    return rows.assign(t_ms=(t[sel] - m.start_ns) / 1e6)


def _windows(rows: pd.DataFrame, max_bw: float) -> pd.DataFrame:
    """Windows with their measured and burst rates (bytes/ms): the burst rate is the bytes
    over the window's time minus its ``migration_rate_limit_pre``..``_post`` sleeps. A
    window that sent (nearly) the whole per-window budget, ``max-bandwidth / 10``, was held
    by max-bandwidth (a stretched window then measures a lower bandwidth, yet was held)."""
    ev = rows["event"].astype(object).to_numpy()
    tr = rows[ev == N.TRANSFERRED]
    end = tr["t_ms"].to_numpy()
    dur = tr["dur_ns"].to_numpy(dtype="float64", na_value=np.nan) / 1e6
    nbytes = tr["bytes"].to_numpy(dtype="float64", na_value=np.nan)
    bw = tr["bw_bytes_per_ms"].to_numpy(dtype="float64", na_value=np.nan)
    pre = rows["t_ms"].to_numpy()[ev == "migration_rate_limit_pre"]
    post = rows["t_ms"].to_numpy()[ev == "migration_rate_limit_post"]
    j = np.searchsorted(post, pre)
    ok = j < len(post)
    sleep_at, sleep = pre[ok], post[j[ok]] - pre[ok]
    # each sleep belongs to the window that ends at or after it
    w = np.searchsorted(end, sleep_at, side="left")
    slept = np.bincount(w[w < len(end)], weights=sleep[w < len(end)], minlength=len(end))[:len(end)]
    active = np.maximum(dur - slept, 1.0)
    burst = nbytes / active
    budget = max_bw / 1000.0 * WINDOW_MS if max_bw > 0 else np.inf
    return pd.DataFrame({"end_ms": end, "dur_ms": dur, "bytes": nbytes, "bw": bw,
                         "limited": nbytes >= _LIMITED * budget, "slept": slept > 0, "burst": burst,
                         "active_ms": active,
                         "sbw": tr["switchover_bw_bytes_per_ms"].to_numpy(dtype="float64", na_value=np.nan),
                         "threshold": tr["threshold_bytes"].to_numpy(dtype="float64", na_value=np.nan)})


# read by the what-if only (so not kept by `report`: no role in the registry)
_SECTION_START, _SECTION_END, _RAM_LOAD = "savevm_section_start", "savevm_section_end", "ram_load_complete"


def _path_rates(m: Migration, events: pd.DataFrame, rows: pd.DataFrame, W: pd.DataFrame,
                use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per window that max-bandwidth held (of those ``use`` picks): its bytes over the time
    from its RAM section's start on the source to the destination's load of it
    (``ram_load_complete``, by the section's sequence number): the rate the whole path
    sustains; and the bytes still in flight when the source's burst ended (its lag behind
    the source at that rate), which the socket buffers held. Inside a held window the source
    only fills those buffers (the destination drains them while it sleeps), so its burst
    rate overstates what a stop-copy larger than them gets. Empty without the destination's
    trace, with multifd (the main channel's section loads before its pages), or when the two
    clocks disagree (a load before its send, no setup load)."""
    none = (np.zeros(0), np.zeros(0))
    ev = rows["event"].astype(object).to_numpy()
    if any(isinstance(e, str) and e.startswith("multifd_send") for e in set(ev)):
        return none
    ram = rows["device"].eq("ram").fillna(False).to_numpy(dtype=bool)
    t = rows["t_ms"].to_numpy()
    st, en = t[(ev == _SECTION_START) & ram], t[(ev == _SECTION_END) & ram]
    n = min(len(st), len(en))
    side = events["side"].astype(object).to_numpy()
    sel = (side == "destination") & (events["event"].astype(object).to_numpy() == _RAM_LOAD)
    if n < 3 or not sel.any():
        return none
    d = events[sel]
    dt = (d["t_ns"].to_numpy(dtype="float64", na_value=np.nan) - m.start_ns) / 1e6
    seq = d["count"].to_numpy(dtype="float64", na_value=np.nan)
    ok = ~np.isnan(dt) & ~np.isnan(seq) & (dt >= 0.0)
    if m.end_ns is not None:
        ok &= dt <= (m.end_ns - m.start_ns) / 1e6
    order = np.argsort(dt[ok], kind="stable")
    dt, seq = dt[ok][order], seq[ok][order].astype(np.int64)
    # QEMU numbers the RAM sections a destination process loads from 1, the setup section
    # (which prints no section line on the source): the k-th iterate section is k + 2. A
    # number that falls is another process (a retry's destination): stop there
    if not len(seq) or seq[0] != 1:
        return none
    drop = np.flatnonzero(np.diff(seq) <= 0)
    if len(drop):
        dt, seq = dt[:drop[0] + 1], seq[:drop[0] + 1]
    st, en = st[:n], en[:n]
    done = np.full(n, np.nan)
    k = seq - 2
    inr = (k >= 0) & (k < n)
    done[k[inr]] = dt[inr]
    # a section cannot be loaded before it was begun (its end may print after the load)
    if np.nanmin(done - st, initial=np.inf) <= 0.0:
        return none
    ends = W["end_ms"].to_numpy()
    held = use & (W["limited"] & W["slept"]).to_numpy()
    w = np.searchsorted(ends, st, side="left")  # the window each section starts in
    rates, flight = [], []
    for i in np.flatnonzero(held):
        inw = np.flatnonzero(w == i)
        if not len(inw) or np.isnan(done[inw[-1]]):
            continue
        span = done[inw[-1]] - st[inw[0]]
        if span > 0:
            rate = float(W["bytes"].iloc[i]) / span
            rates.append(rate)
            flight.append(max(done[inw[-1]] - en[inw[-1]], 0.0) * rate)
    return np.array(rates), np.array(flight)


def _iterable_saves(rows: pd.DataFrame) -> dict[str, float]:
    """idstr -> ms of its iterable save in the stop-copy (``vmstate_downtime_save``)."""
    ev = rows["event"].astype(object).to_numpy()
    sv = rows[(ev == N.DOWNTIME_SAVE) & rows["state"].eq("iterable").fillna(False).to_numpy(dtype=bool)]
    out: dict[str, float] = {}
    for d, ns in zip(sv["device"].astype(object), sv["dur_ns"].to_numpy(dtype="float64", na_value=np.nan),
                     strict=True):
        if isinstance(d, str) and not math.isnan(ns):
            out[d] = out.get(d, 0.0) + ns / 1e6
    return out


def _pass_end(m: Migration) -> dict[int, float]:
    return {p.n: (p.t_ms + (p.dur_ms or 0.0)) for p in m.passes if p.t_ms is not None}


def _new_dirt(m: Migration, page_size: int = 4096) -> dict[int, float]:
    """Pass (sync) number -> bytes that sync newly added to RAM's pending, from
    ``migration_bitmap_sync_end dirty_pages``: QEMU prints ``num_dirty_pages_period``, the
    pages newly set in the migration bitmap since the rate period began, and a sync ending
    more than 1 s after the period's start closes it (the count restarts); the setup sync
    opens the first (``verdict.sync_dirty_rate`` reads the same rule)."""
    out: dict[int, float] = {}
    syncs = sorted((p for p in m.passes if p.t_ms is not None), key=lambda p: p.n)
    if not syncs or syncs[0].dirty_pages is None:
        return out
    start = syncs[0].t_ms + (syncs[0].dur_ms or 0.0)
    before = 0.0
    for p in syncs[1:]:
        if p.dirty_pages is None:
            break
        end = p.t_ms + (p.dur_ms or 0.0)
        out[p.n] = max(float(p.dirty_pages) - before, 0.0) * page_size
        if end - start > 1000.0:
            start, before = end, 0.0
        else:
            before = float(p.dirty_pages)
    return out


def _left_72(prev: Check, c: Check, first: Check, sync_ms: float) -> float:
    """7.2 re-syncs inside the pending call, after an iterate the trace does not size: what
    RAM had left then is below the threshold; extrapolate the pages sent per ms since the
    first check (0 when the previous line was not below the threshold yet)."""
    left = _ram(prev)
    if c.threshold_bytes is None or left >= c.threshold_bytes:
        return 0.0
    span = prev.t_ms - first.t_ms
    rate = (_ram(first) - left) / span if span > 0 else 0.0
    return max(left - rate * max(sync_ms - prev.t_ms, 0.0), 0.0)


def _bulk_tail(W: pd.DataFrame, seq: list[Check], bulk_end: float, last_end: float, last_bw: float,
               new_dirt: dict[int, float]) -> float:
    """Wire bytes the first pass sent between the last window it closed and its end. Held
    by max-bandwidth, a window is sent at full speed from its start until the budget is
    spent, then sleeps: spreading the window's mean rate over that time counted a fraction
    of it (5.2 of 33 MiB short on a 128 MiB/s converges run). The window that holds the end
    is split: the next pass's share is its pending drop until the check at the window's end
    (re-dirtied pages cost their size; 7.2 prints that check after the sync it triggers, less
    what the sync found new), else the share of the window's busy time."""
    nxt = W[W["end_ms"] > bulk_end]
    if not len(nxt):
        return max(bulk_end - last_end, 0.0) * last_bw
    if not bool(nxt["limited"].iloc[0]):
        # not held: it ran at the rate of the window it ended in, not the one before (a link
        # lifted as that window began sent the rest of the first pass at the new rate)
        return max(bulk_end - last_end, 0.0) * float(nxt["bw"].iloc[0])
    w = nxt.iloc[0]
    after = [c for c in seq if bulk_end <= c.t_ms <= w["end_ms"] + 1.0 and (c.pass_no or 1) > 1]
    same = [c for c in after if after and c.pass_no == after[0].pass_no]
    if len(same) >= 2 and same[-1].kind != "exact":  # no sync between the two
        return max(float(w["bytes"]) - max(_ram(same[0]) - _ram(same[-1]), 0.0), 0.0)
    nxt_pass = [c for c in after if after and c.pass_no == after[0].pass_no + 1 and c.pass_no in new_dirt]
    if after and nxt_pass and nxt_pass[0].kind == "pending":
        left = max(_ram(nxt_pass[0]) - new_dirt[nxt_pass[0].pass_no], 0.0)
        return max(float(w["bytes"]) - max(_ram(after[0]) - left, 0.0), 0.0)
    busy = float(w["bytes"]) / max(float(w["burst"]), 1e-9)  # the window's time not asleep
    return float(w["bytes"]) * min(max(bulk_end - last_end, 0.0) / max(busy, 1e-9), 1.0)


def measure(m: Migration, events: pd.DataFrame) -> Measured:
    """Everything the replay needs from migration ``m`` (built from ``events``)."""
    if m.view == "kernel":
        raise Unpredictable(f"migration {m.index + 1}: kernel view only (BPF alone): no RAM and no "
                            "switch-over threshold to replay")
    if m.start_ns is None or not m.checks or any(c.t_ms is None for c in m.checks):
        raise Unpredictable(f"migration {m.index + 1}: " + (
            "no pre-copy checks (migrate_pending*) traced" if not m.checks else
            "the trace carries no timestamps (QEMU needs -msg timestamp=on)"))
    weak: list[str] = []
    rows = _source_rows(m, events)
    checks = list(m.checks)
    sw = m.switchover_ms if m.converged else None
    live = [c for c in checks if sw is None or c.t_ms <= sw]  # up to the deciding check
    decision = live[-1] if (sw is not None and live) else None
    first = checks[0]
    start_ms = float(first.t_ms)
    ends = _pass_end(m)
    starts = {p.n: p.t_ms for p in m.passes if p.t_ms is not None}
    sync0 = ends.get(1, start_ms)
    ram_bytes = max(_ram(first), 1.0)

    params = m.params or {}
    max_bw = m.max_bandwidth_bytes_per_s
    if max_bw is None:
        max_bw = float(DEFAULT_MAX_BANDWIDTH)
        weak.append(f"max-bandwidth not in the input: QEMU's default {fmt_rate(max_bw)} assumed")
    W = _windows(rows, max_bw)
    # the settings at the start: read back from the first windows (max_size / bandwidth)
    dl = m.downtime_limit_ms
    asb = float(params.get("avail-switchover-bandwidth") or 0.0)
    ok = W[(W["bw"] > 0) & (W["threshold"] > 0)]
    if len(ok):
        w0 = ok.iloc[0]
        per_ms = w0["sbw"] if w0["sbw"] > 0 else w0["bw"]
        dl = float(round(w0["threshold"] / per_ms))
        asb = w0["sbw"] * 1000.0 if w0["sbw"] > 0 else 0.0
    if dl is None:
        raise Unpredictable(f"migration {m.index + 1}: downtime-limit unknown (no QMP parameters, "
                            "no migrate_transferred window)")
    recorded = Setting(dl, float(max_bw), asb)
    if any("downtime-limit" in str(mk.get("label")) or "bandwidth" in str(mk.get("label")) for mk in m.markers):
        changes = "; ".join(f"{mk['label']} at {mk['t_ms']:.0f} ms" for mk in m.markers if mk.get("t_ms") is not None)
        weak.append(f"settings changed mid-run ({changes}): the recording is measured across it; "
                    f"'as recorded' means the settings at the start")

    # the dirty working set and rate, from the pending right after each sync
    points = []  # (pending after sync, leftover before it, time since the previous sync)
    # what each sync found newly dirtied, where the trace prints it: then the leftover is
    # known, not inferred (7.2 prints RAM's pending only after the sync it triggers, when
    # the leftover was anywhere below the threshold: read as 0, a 50 MiB/s guest measured
    # 98 MiB/s over a 10 MiB set)
    new_dirt = _new_dirt(m)
    for prev, c in zip(live, live[1:], strict=False):
        if c.pass_no is None or prev.pass_no is None or not c.decisive:
            continue
        if c.pass_no > prev.pass_no or c.kind == "exact":
            t1, t0 = ends.get(c.pass_no), ends.get(c.pass_no - 1)
            if t1 is not None and t0 is not None and t1 > t0:
                # >= 8.0 prints the estimate right before the sync
                left = _ram(prev) if prev.pass_no < c.pass_no else 0.0
                if c.pass_no in new_dirt:
                    left = max(_ram(c) - new_dirt[c.pass_no], 0.0)
                elif c.kind == "pending":
                    left = _left_72(prev, c, first, starts.get(c.pass_no, t1))
                points.append((_ram(c), left, t1 - t0))
    ram_dev = next((d for d in m.devices if d.kind == "ram"), None)
    ram_stop = float(ram_dev.stopcopy_bytes) if ram_dev and ram_dev.stopcopy_bytes is not None else None
    if not points and decision is not None and ram_stop is not None:
        # no re-sync before the decision: the final sync's pages were dirtied since the last
        fin = [p for p in m.passes if p.phase == "stopcopy" and p.t_ms is not None]
        if fin and fin[0].n - 1 in ends:
            points.append((ram_stop, _ram(decision), ends[fin[0].n] - ends[fin[0].n - 1]))
    rate = floor = ws = None
    one = False
    recent = [p for p, _, _ in points[-3:]]
    stuck = len(recent) >= 2 and recent[-1] >= _STUCK * min(recent[:-1])
    if stuck:
        ws = max(recent)
        rate = floor = ws / (min(dt for *_, dt in points[-3:]) / 1000.0)
        weak.append(f"every pass re-dirtied the whole working set ({fmt_bytes(ws)}): the dirty rate is "
                    f"only known to be >= {fmt_rate(floor)}; each prediction re-dirties the whole set at once "
                    "after each sync (what holds at any dirty rate, as the verdict's bound does), and its range "
                    "reaches down to the replay at that floor: a guest no faster converges sooner, with less "
                    "downtime, or converges where the safe side does not")
    elif len(points) == 1 and points[0][2] >= WINDOW_MS / 2.0:
        # one pass after the first: what it found may be a larger set re-dirtied over and
        # over, or a part of one dirtied once; only the safe side holds for both (the nested
        # VFIO lab's 4 MiB set re-dirtied flat out read as 7.6 MiB/s from a 0.5 s pass, and
        # a replay at that rate converged at 400 ms where the rerun stayed stuck)
        p, left, dt = points[0]
        ws = p
        rate = floor = max(p - left, 0.0) / (dt / 1000.0)
        stuck = one = True
        weak.append(f"one pass after the first: the dirty rate is only known to be >= {fmt_rate(floor)} "
                    f"and the working set >= {fmt_bytes(ws)}; each prediction re-dirties that set at once "
                    "after each sync (what holds at any dirty rate), and its range reaches down to the "
                    "replay at that floor")
    elif points:
        # every pass proves rate >= what it dirtied / its time (a pass that re-dirtied the
        # whole set proves less): the largest is the rate; a pass well below it was saturated,
        # and its pending is the working set
        dirt = np.array([max(p - left, 0.0) for p, left, _ in points])
        dts = np.array([dt for *_, dt in points]) / 1000.0
        rate = floor = float(np.max(dirt / dts))
        # (a pass shorter than half a window is too short to tell: a few ms of sync timing
        # and page rounding put a 0.25 MiB pass at 70 % of the rate, and its 0.2 MiB pending
        # was then taken for the working set)
        sat = [p for (p, _, _), d, t in zip(points, dirt, dts, strict=True)
               if d < 0.8 * rate * t and t >= WINDOW_MS / 2000.0]
        ws = max(sat) if sat else None
    if len(points) < 2:
        weak.append(f"too few passes seen ({len(points)} dirty sync{'s' if len(points) != 1 else ''} "
                    "after the first pass): the dirty rate and working set are extrapolated")
    if rate is None and not stuck:
        rate = 0.0
        weak.append("no dirtying measured: the replay assumes the guest dirties nothing")

    # what a re-sync costs the loop: >= 8.0 from the estimate that asked for it to the exact
    # figure (the sync takes the BQL, which a busy vCPU thread holds), 7.2 the sync itself
    waits = [c.t_ms - prev.t_ms for prev, c in zip(live, live[1:], strict=False)
             if c.kind == "exact" and prev.kind == "estimate"]
    if not waits:
        waits = [p.dur_ms for p in m.passes if p.phase == "precopy" and p.dur_ms is not None]
    sync_ms = float(np.median(waits)) if waits else 0.0

    # the bulk pass: its wire bytes (zero pages are cheap), up to the first re-sync or the
    # decision, scaled to every page when a sync cut it short
    seq = live + ([decision] if decision is not None else [])
    k = next((i for i, c in enumerate(seq) if c.pass_no and c.pass_no > 1), None)
    if k is not None and k > 0 and 2 in starts:
        if seq[k].kind == "pending":  # 7.2: the sync ran inside this check's pending call
            bulk_end = starts[2]
            left = _left_72(seq[k - 1], seq[k], first, bulk_end)
        else:  # the estimate that asked for the sync (which may wait for the BQL)
            bulk_end, left = float(seq[k - 1].t_ms), _ram(seq[k - 1])
    elif decision is not None:
        bulk_end, left = float(decision.t_ms), _ram(decision)
    else:
        bulk_end, left = float(seq[-1].t_ms), _ram(seq[-1])
    before = W[W["end_ms"] <= bulk_end]
    sent = float(before["bytes"].sum())
    last_end = float(before["end_ms"].iloc[-1]) if len(before) else start_ms
    if len(before):
        sent += _bulk_tail(W, seq, bulk_end, last_end, float(before["bw"].iloc[-1]), new_dirt)
    elif ram_dev is not None and ram_dev.precopy_bytes:
        sent = float(ram_dev.precopy_bytes)  # no window closed before it: query-migrate's count
    tail_w = sent - float(before["bytes"].sum())
    done = 1.0 - left / ram_bytes
    if sent > 0 and done > 0.05:
        bulk_wire = sent / done
        if done < 0.5:
            weak.append(f"the first pass was cut short at {done:.0%} of RAM: its cost on the wire is "
                        "extrapolated")
    else:
        bulk_wire = ram_bytes
        weak.append("the first pass never got far: every page is assumed to cost its full size on the wire")

    # the bulk's RAM estimate against the cumulative wire bytes at each of its checks
    cum_t = np.r_[start_ms, W["end_ms"].to_numpy()]
    cum_b = np.r_[0.0, np.cumsum(np.nan_to_num(W["bytes"].to_numpy()))]
    if not len(before):  # no window closed in the bulk: spread what it sent over its time
        cum_t, cum_b = np.array([start_ms, max(bulk_end, start_ms + 1e-3)]), np.array([0.0, sent])
    bc = [c for c in seq if (c.pass_no or 1) <= 1 and c.t_ms <= bulk_end]
    cw = np.interp([c.t_ms for c in bc], cum_t, cum_b)
    cw = np.r_[np.maximum.accumulate(np.minimum(cw, bulk_wire)), bulk_wire]
    cp = np.r_[np.minimum.accumulate([_ram(c) for c in bc]), 0.0]
    if len(cw) > 2 and cw[0] == 0.0:
        curve = (tuple(float(v) for v in cw), tuple(float(v) for v in cp))
    else:
        curve = ((0.0, float(bulk_wire)), (float(ram_bytes), 0.0))
    btime: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
    nxt = W[W["end_ms"] > bulk_end]
    if len(before) >= 2 and bool(before["limited"].all()):
        tail_ms = max(bulk_end - last_end, 0.0)  # busy up to the pass's end, unless held and asleep
        if len(nxt) and bool(nxt["limited"].iloc[0]):
            tail_ms = min(tail_ms, tail_w / max(float(nxt["burst"].iloc[0]), 1e-9))
        bw_ = np.r_[0.0, np.cumsum(before["bytes"].to_numpy(dtype="float64")), sent]
        bt_ = np.r_[0.0, np.cumsum(before["active_ms"].to_numpy(dtype="float64")), 0.0]
        bt_[-1] = bt_[-2] + tail_ms
        if bulk_wire > sent:  # cut short: the rest at the pass's mean
            bw_, bt_ = np.r_[bw_, bulk_wire], np.r_[bt_, bt_[-1] + (bulk_wire - sent) * bt_[-1] / max(sent, 1.0)]
        keep = np.r_[True, (np.diff(bw_) > 0) & (np.diff(bt_) > 0)]
        if keep.sum() >= 3:
            btime = (tuple(float(v) for v in bw_[keep]), tuple(float(v) for v in bt_[keep]))

    # the stop-copy rate: RAM's stop-copy bytes over its iterable save (>= 8.2), else over
    # the downtime (7.2); without one, the path's rate (else the send rate inside throttled
    # windows)
    stop_rate, stop_src, buffered = math.nan, "", 0.0
    saves = _iterable_saves(rows)
    ram_iter = saves.get("ram")
    if ram_stop is not None and ram_stop >= 64 * 1024:
        if ram_iter and ram_iter > 0.05:
            stop_rate, stop_src = ram_stop / ram_iter, "the recorded stop-copy (RAM's iterable save)"
        elif ram_stop >= _SMALL_STOPCOPY and m.downtime_ms:
            stop_rate, stop_src = ram_stop / m.downtime_ms, "the recorded stop-copy (downtime)"
    held = W[W["limited"]]
    over = float(np.clip(np.median(held["bytes"]) / (max_bw / 1000.0 * WINDOW_MS), 1.0, 1.1)) if len(held) else 1.0
    # inside a held window RAM bursts, then sleeps. The bulk pass bursts slower (scanning
    # zero pages costs CPU); later passes carry non-zero pages, and the guest's vCPU threads
    # compete with them for the host CPU, which they do not in stop-copy (the guest is
    # stopped): the upper quartile of the later bursts stands for the stop-copy rate
    slept = W[W["limited"] & W["slept"]]
    late = slept[slept["end_ms"] > bulk_end]
    early = slept[slept["end_ms"] <= bulk_end]
    burst = float(np.percentile((late if len(late) else slept)["burst"], 75)) if len(slept) else math.nan
    bulk_burst = float(np.median(early["burst"])) if len(early) else burst
    # the path after the first pass (the destination's first touches of its pages slow it)
    path, flight = _path_rates(m, events, rows, W, (W["end_ms"] > bulk_end).to_numpy()) \
        if len(late) else (np.zeros(0), np.zeros(0))
    if math.isnan(stop_rate):
        if len(path) >= 3:
            stop_rate, stop_src = float(np.median(path)), ("the path's rate in throttled windows, source "
                                                           "send to destination load")
            if not math.isnan(burst) and burst > stop_rate:
                # the buffers hold at least what was in flight when a burst ended; a stop-copy
                # fills them at the send rate while the path drains them, so its first
                # held * burst / (burst - path) bytes go at the send rate (at most a window's)
                held_b = float(np.median(flight))
                buffered = min(held_b * burst / (burst - stop_rate), float(np.median(late["bytes"])))
        elif not math.isnan(burst):
            stop_rate, stop_src = burst, "the send rate inside throttled windows"
        elif len(W):
            stop_rate, stop_src = float(W["bw"].max()), "the fastest window"
        else:
            stop_rate, stop_src = max(sent, 1.0) / max(bulk_end - start_ms, 1.0), "the bulk pass"
        weak.append(f"no sizable stop-copy in the input: downtime assumes a stop-copy rate of "
                    f"{fmt_rate(stop_rate * 1000)} ({stop_src})" + (
                        f", its first {fmt_bytes(buffered)} at {fmt_rate(burst * 1000)} (into the socket "
                        "buffers, as each throttled window's burst went)" if buffered else ""))
    # the link over time: where max-bandwidth held a window, the rate it bursts at; else the
    # window's own rate, except in the bulk pass, where cheap zero pages (CPU-bound) made
    # the wire rate: there non-zero pages go as fast as the first later window, or the stop-copy
    cap = burst if not math.isnan(burst) else stop_rate
    free_after = W[(W["end_ms"] > bulk_end) & ~W["limited"]]
    bulk_cap = float(free_after["bw"].iloc[0]) if len(free_after) else stop_rate
    # in a run max-bandwidth held (most windows), a window short of its budget was slowed by
    # the source (scanning zero pages, a stalled host), not by the link: its bursts show
    # what the link carries
    throttled = bool(len(W)) and float(W["limited"].mean()) >= 0.5 and not math.isnan(burst)
    windows = []
    for r in W.itertuples():
        if not r.bw > 0:
            continue
        in_bulk = bool(r.end_ms <= bulk_end)
        if r.limited:
            link, bulk_rate = cap, (bulk_burst if in_bulk and not math.isnan(bulk_burst) else cap)
        elif throttled:
            link, bulk_rate = cap, r.bw
        else:
            link, bulk_rate = (max(r.bw, bulk_cap) if in_bulk else r.bw), r.bw
        windows.append(Window(float(r.end_ms), float(r.bw), bool(r.limited), float(link), float(bulk_rate),
                              in_bulk))
    steps: list[tuple[float, float, float]] = []  # (time, before, after)
    if len(W) >= 3:
        bws = W["bw"].to_numpy()[1:]
        lo, hi = float(np.min(bws)), float(np.max(bws))
        if hi > 1.3 * lo:
            weak.append(f"the bandwidth varied ({fmt_rate(lo * 1000)} .. {fmt_rate(hi * 1000)} over "
                        f"{len(W)} windows): the replay follows it window by window in time, "
                        "and keeps the last one after the recording ends")
        ends = W["end_ms"].to_numpy()[1:]  # a step between windows k and k+1 comes after ends[k]
        steps = [(float(e), float(a), float(b)) for a, b, e in zip(bws, bws[1:], ends, strict=False)
                 if a > 0 and b > 0 and max(a, b) >= _STEP * min(a, b)]
    if steps:
        t0, a, b = steps[0]
        more = f" and {len(steps) - 1} more time{'s' if len(steps) > 2 else ''}" if len(steps) > 1 else ""
        weak.append(f"the bandwidth stepped ({fmt_rate(a * 1000)} -> {fmt_rate(b * 1000)} after {t0:.0f} ms{more}): "
                    "where a change lands in QEMU's 100 ms bandwidth window sets the threshold it computes "
                    "from that window, and passes that end near a window's close, or near that threshold, "
                    "can go either way; another run lands elsewhere, so each prediction is a range over the "
                    "window's phase and the bandwidth's window-to-window jitter")

    # devices
    devs = []
    idstr_time = {k: v for k, v in saves.items() if k != "ram"}
    for d in m.devices:
        if d.kind != "vfio" or d.side == "destination":
            continue
        info = d.initial_pending_bytes is not None or d.dirty_pending_bytes is not None
        size = d.stopcopy_size_bytes if d.stopcopy_size_bytes is not None else d.stopcopy_bytes
        if not info:
            weak.append(f"{d.name} reported no PRE_COPY info (initial/dirty sizes): its pre-copy is "
                        "taken as empty and its stop-copy as the size last seen")
        down = idstr_time.get(d.idstr) if d.idstr else None
        devs.append(DeviceInput(d.name, int(d.initial_pending_bytes or 0), int(d.dirty_pending_bytes or 0),
                                int(size or 0), d.stopcopy_bytes, down if down is not None else d.downtime_ms,
                                info, int(d.precopy_bytes or 0)))
    ack = None
    if m.switchover_ack_ms is not None and devs:
        # the ACK comes once the destination has loaded the devices' initial data
        done_t = next((c.t_ms for c in checks if c.kind == "estimate" and all(
            c.devices.get(d.name, 0) <= d.dirty_bytes for d in devs)), start_ms)
        ack = max(m.switchover_ack_ms - done_t, 0.0)

    # downtime: what is not RAM's or the devices' iterable save is fixed
    fixed, tail = 0.0, 0.0
    if m.converged and m.downtime_ms is not None:
        if ram_iter is not None:
            fixed = m.downtime_ms - ram_iter - sum(d.downtime_ms or 0.0 for d in devs)
        elif ram_stop is not None and not math.isnan(stop_rate):
            fixed = m.downtime_ms - ram_stop / stop_rate - sum(d.downtime_ms or 0.0 for d in devs)
        fixed = max(fixed, 0.0)
        if m.total_ms is not None and m.switchover_ms is not None:
            tail = max(m.total_ms - m.switchover_ms - m.downtime_ms, 0.0)
    elif m.downtime_ms is None:
        weak.append("no switch-over in the input: the fixed part of the downtime (VM stop, "
                    "non-iterable state) is not known and taken as 0")
    if not rule_for(m.qemu_version).known:
        weak.append(f"QEMU version unknown ({m.qemu_version}): the >= 9.0 rule is assumed")
    v = m.verdict
    x = Measured(
        migration=m.index, qemu_version=m.qemu_version, rule=rule_for(m.qemu_version), recorded=recorded,
        start_ms=start_ms, sync0_ms=float(sync0), ram_bytes=ram_bytes, bulk_wire_bytes=float(bulk_wire),
        bulk_curve=curve, bulk_time=btime,
        working_set_bytes=ws, dirty_rate_bytes_per_s=rate, saturated=stuck,
        windows=tuple(windows), overshoot=over, stop_rate_bytes_per_ms=float(stop_rate), stop_rate_source=stop_src,
        sync_ms=sync_ms, fixed_downtime_ms=fixed, tail_ms=tail, ack_delay_ms=ack, devices=tuple(devs),
        passes_seen=len(points), outcome=m.outcome, converged=m.converged, dirty_syncs=m.dirty_syncs,
        total_ms=m.total_ms, downtime_ms=m.downtime_ms,
        verdict_needed_downtime_limit_ms=v.needed_downtime_limit_ms,
        verdict_suggested_downtime_limit_ms=v.suggested_downtime_limit_ms,
        verdict_suggested_bandwidth_bytes_per_s=v.suggested_bandwidth_bytes_per_s,
        weak=tuple(weak), bandwidth_steps_ms=tuple(t for t, _, _ in steps), buffered_bytes=buffered,
        burst_bytes_per_ms=burst)
    return _consistent(x, float(live[-1].t_ms) if live else start_ms) if stuck and not one else x


def _consistent(x: Measured, until_ms: float) -> Measured:
    """A saturated recording only bounds the dirty rate from below; raise it until the replay
    of the recording's own settings stays stuck as long as the recording did."""
    for k in (1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0):
        y = replace(x, dirty_rate_bytes_per_s=x.dirty_rate_bytes_per_s * k)
        p = predict(y, x.recorded, horizon_ms=until_ms, any_rate=False)
        if not p.converges or (p.switchover_ms or 0.0) >= until_ms:
            return y
    return replace(x, dirty_rate_bytes_per_s=math.inf)


def pick(migrations: Sequence[Migration]) -> Migration:
    """The migration a what-if replays by default: the source migration with the longest
    pre-copy (most checks), the latest on a tie."""
    src = [m for m in migrations if m.side == "source" and m.checks]
    if not src:
        raise Unpredictable("no source migration with pre-copy checks in the input")
    return max(src, key=lambda m: (len(m.checks), m.index))


# ---------------------------------------------------------------------------------------
# replaying


class _Timeline:
    """Recorded windows as a step function of time (ms from the migration's start)."""

    def __init__(self, x: Measured):
        self.w = x.windows
        self.end = np.array([w.end_ms for w in x.windows]) if x.windows else np.zeros(0)
        self.stop = x.stop_rate_bytes_per_ms
        self.last_end = float(self.end[-1]) if len(self.end) else 0.0
        # the recording's own stop-copy measured the link where it switched over: from its
        # last window on that beats the window's mean, which may straddle a step (a window
        # that was slow until the link was lifted put a 16 MiB stop-copy at 94 ms, not 46)
        self.stop_from = (float(self.end[-2]) if len(self.end) >= 2 else -math.inf) \
            if x.stop_rate_source.startswith("the recorded stop-copy") else math.inf

    def at(self, t: float) -> Window | None:
        if not self.w:
            return None
        i = min(int(np.searchsorted(self.end, t, side="left")), len(self.w) - 1)
        return self.w[i]

    def link(self, t: float, bulk: bool) -> float:
        """The rate RAM goes at, at ``t`` (bytes/ms): in the bulk pass the recorded bulk's
        own rate (zero pages are cheap), else the rate non-zero pages could go at."""
        w = self.at(t)
        if w is None:
            return self.stop
        return w.bulk_bytes_per_ms if bulk and w.bulk else w.link_bytes_per_ms

    def stopcopy_rate(self, t: float) -> float:
        """The stop-copy's rate after a switch-over at ``t``: the recording's, unless the link
        held the window then; the link's then is the median of that window and two either
        side (a link that changed stays changed; a host that stalled one or two windows of a
        throttled run, as the nested lab's does, is no link)."""
        w = self.at(t)
        if w is None or w.limited or t > self.stop_from:
            return self.stop
        i = min(int(np.searchsorted(self.end, t, side="left")), len(self.w) - 1)
        near = [v.link_bytes_per_ms for v in self.w[max(i - 2, 0):i + 3]]
        return min(float(np.median(near)), self.stop)


def predict(x: Measured, s: Setting, horizon_ms: float = DEFAULT_HORIZON_MS, *,
            any_rate: bool = True, phase_ms: float = 0.0, threshold_scale: float = 1.0) -> Prediction:
    """Replay the migration thread's loop under ``s`` until it switches over or ``horizon_ms``.
    ``any_rate`` (the default): when the recording only bounds the dirty rate from below
    (``saturated``), re-dirty the whole set at once after each sync (what holds at any dirty
    rate: a faster guest than the recording proves would otherwise turn a "converges" into
    a migration that never does); False replays at the measured lower bound. ``phase_ms``
    closes the first bandwidth window that much early (QEMU's windows against the recorded
    bandwidth, shifted); ``threshold_scale`` scales each threshold QEMU computes (another
    run's window measures another bandwidth)."""
    R = x.rule
    tl = _Timeline(x)
    instant = any_rate and x.saturated
    ws = x.working_set_bytes if x.working_set_bytes is not None else x.ram_bytes
    cap = s.max_bandwidth_bytes_per_s / 1000.0 * x.overshoot if s.max_bandwidth_bytes_per_s > 0 else math.inf
    asb = s.avail_switchover_bandwidth_bytes_per_s / 1000.0 if R.switchover_bw else 0.0
    t = x.start_ms
    pages, wire = x.ram_bytes, x.bulk_wire_bytes  # RAM's estimate and its cost on the wire
    # RAM's pending is the first pass's leftover, which QEMU's scan finishes first (it resumes
    # where a sync found it), then the pages dirtied again behind it: those lie among the
    # pages already sent (that is what made them new), and are non-zero, so each costs its size
    bulk_sent = 0.0  # wire bytes of the first pass sent so far (x.bulk_curve maps them to pages)
    redirtied = 0.0  # re-dirtied pages pending behind the scan (bytes, = their wire bytes)
    bulk = True
    last_sync, syncs = x.sync0_ms, 1
    init = [float(d.initial_bytes) for d in x.devices]
    dirty = [float(d.dirty_bytes) for d in x.devices]
    ack_at = None if x.ack_delay_ms is None else (x.start_ms + x.ack_delay_ms if not any(init) else None)
    threshold = 0.0
    win_start, win_bytes = t, 0.0
    win_end = t + WINDOW_MS - phase_ms
    budget = cap * WINDOW_MS  # max-bandwidth's per-window budget (inf: unlimited)
    history: list[float] = []
    pending = pages
    while t <= horizon_ms:
        # --- the check at the top of the loop pass
        est = pages + sum(init) + sum(dirty)
        if R.v72:
            sync = pages < threshold
        elif R.exact_on_pre:
            sync = est <= threshold
        else:
            sync = est < threshold
        pending = est
        if sync:
            since = t - last_sync
            grown = ws if instant else min(ws, x.dirty_rate_bytes_per_s * since / 1000.0)
            # the share of the set still unsent is dirtied again for nothing. Of the first
            # pass's leftover that share is its wire bytes still to go, not its pages: the
            # guest dirties non-zero pages, and those are what the bulk spends its wire bytes
            # on (zero pages cost almost none), wherever the set lies in RAM
            left_wire = max(x.bulk_wire_bytes - bulk_sent, 0.0)
            overlap = min(left_wire / max(x.bulk_wire_bytes, 1.0) + redirtied / max(ws, 1.0), 1.0)
            new = grown * (1.0 - overlap)
            redirtied += new
            pages, wire = pages + new, wire + new
            bulk = False
            t += x.sync_ms
            last_sync, syncs = t, syncs + 1
            history.append(pages)
            pending = pages + sum(d.stopcopy_size_bytes for d in x.devices) + (
                sum(init) + sum(dirty) if R.double_count else 0.0)
        can = x.ack_delay_ms is None or (ack_at is not None and t >= ack_at)
        ok = pending <= threshold if R.complete_le else (pending == 0 or pending < threshold)
        if ok and can:
            return _switch(x, s, tl, t, syncs, wire, init, pending, threshold, t - last_sync, instant)
        if (t > tl.last_end and len(history) >= 4 and not any(init)
                and max(history[-4:]) <= min(history[-4:]) * 1.01 and pending > threshold):
            break  # the same pending after every sync, and nothing left to change: stuck
        # --- iterate: send until the pass ends, the window's budget is spent (then sleep to
        # the window's end), or MAX_WAIT passes
        link = tl.link(t, bulk)
        left_bulk = x.bulk_wire_bytes - bulk_sent
        if budget <= 0:  # the window's budget is spent: sleep to its end
            send, dt = 0.0, max(win_end - t, 0.01)
        elif bulk and left_bulk > 0 and x.bulk_time[0] and cap < link:
            # the first pass where max-bandwidth holds: as busy per wire byte as the
            # recording was at that point of the page order; the window closes on what it
            # reached (zero pages scanned, little sent) or its budget, then sleeps
            bw_, bt_ = x.bulk_time
            a0 = float(np.interp(bulk_sent, bw_, bt_))
            rest = max(win_end - t, 0.01)
            reach = float(np.interp(a0 + rest, bt_, bw_, right=math.inf)) - bulk_sent
            send = min(budget, left_bulk, wire, reach)
            dt = float(np.interp(bulk_sent + send, bw_, bt_)) - a0 if send < reach else rest
            if send >= budget:
                dt = max(dt, win_end - t)
            budget -= send
        elif cap < link:  # max-bandwidth holds: send the budget at the link's rate, then sleep
            send = min(max(budget, 0.0), wire)
            dt = send / link
            if send >= budget:
                dt = max(dt, win_end - t)
            budget -= send
        else:
            span = max(min(win_end - t, FREE_STEP_MS), 0.01)
            send = min(link * span, wire, max(budget, 0.0))
            dt = send / link if send < link * span else span
            budget -= send
        if send <= 0:
            dt = max(dt, 1.0)  # nothing to send (waiting for the ACK): QEMU loops on
        from_bulk = min(send, max(x.bulk_wire_bytes - bulk_sent, 0.0))
        bulk_sent += from_bulk
        redirtied = max(redirtied - (send - from_bulk), 0.0)
        pages = float(np.interp(bulk_sent, *x.bulk_curve)) + redirtied
        wire -= send
        win_bytes += send
        if R.device_each_pass or wire <= 0:
            init = [max(i - DEVICE_CHUNK, 0.0) for i in init]
            if ack_at is None and x.ack_delay_ms is not None and not any(init):
                ack_at = t + dt + x.ack_delay_ms
        t += dt
        if t >= win_end - 1e-6:
            # the window closes: QEMU re-measures the bandwidth and the threshold
            bw = win_bytes / max(t - win_start, 1.0)
            threshold = (asb if asb > 0 else bw) * s.downtime_limit_ms * threshold_scale
            win_start, win_bytes, budget = t, 0.0, cap * WINDOW_MS
            win_end = t + WINDOW_MS
    return Prediction(setting=s, converges=False, dirty_syncs=None, total_ms=None, downtime_ms=None,
                      devices=tuple(DevicePrediction(d.name, d.stopcopy_size_bytes, None) for d in x.devices),
                      pending_bytes=float(pending), threshold_bytes=float(threshold))


def _switch(x: Measured, s: Setting, tl: _Timeline, t: float, syncs: int, wire: float,
            init: list[float], pending: float, threshold: float, since_sync: float,
            instant: bool) -> Prediction:
    """The stop-copy after a switch-over decided at ``t``: RAM's remaining wire bytes plus
    what was dirtied since the last sync (the final sync finds it) at the stop-copy rate of
    that time, each device's stop-copy and save time, the fixed part."""
    ws = x.working_set_bytes if x.working_set_bytes is not None else x.ram_bytes
    grown = (ws if since_sync > 0 else 0.0) if instant else min(ws, x.dirty_rate_bytes_per_s * since_sync / 1000.0)
    wire = max(wire, 0.0) + grown
    rate = max(tl.stopcopy_rate(t), 1e-9)
    fast = min(wire, x.buffered_bytes) if rate >= x.stop_rate_bytes_per_ms else 0.0
    ram_ms = fast / x.burst_bytes_per_ms + (wire - fast) / rate if fast > 0 else wire / rate
    devs = [DevicePrediction("ram", int(round(max(wire, 0.0))), ram_ms)]
    for d, left in zip(x.devices, init, strict=True):
        sent = (d.stopcopy_bytes + left) if d.stopcopy_bytes is not None else d.stopcopy_size_bytes
        rec = d.stopcopy_bytes or 0
        dt = d.downtime_ms
        if dt is not None and rec >= _SMALL_STOPCOPY:
            dt = dt * sent / rec  # a large device state scales with its size; a small one is latency
        devs.append(DevicePrediction(d.name, int(round(sent)), dt))
    down = x.fixed_downtime_ms + sum(d.downtime_ms or 0.0 for d in devs)
    return Prediction(setting=s, converges=True, dirty_syncs=syncs + 1, total_ms=t + x.tail_ms + down,
                      downtime_ms=down, devices=tuple(devs), switchover_ms=t,
                      pending_bytes=float(pending), threshold_bytes=float(threshold))


def step_jitter(x: Measured) -> float:
    """How much QEMU's bandwidth (so its threshold) moved from one window to the next before
    the first step: half the spread of the last three windows, relative (at most 25 %)."""
    if not x.bandwidth_steps_ms:
        return 0.0
    before = [w.bytes_per_ms for w in x.windows if w.end_ms <= x.bandwidth_steps_ms[0]][-3:]
    if len(before) < 2:
        return 0.0
    return min((max(before) - min(before)) / (max(before) + min(before)), 0.25)


def predict_range(x: Measured, s: Setting, horizon_ms: float = DEFAULT_HORIZON_MS) -> Prediction:
    """``predict`` (the point: the safe side, at the recorded phase), with its ``range`` when
    the input allows other replays: a saturated recording at the measured lower-bound dirty
    rate as well as at the safe side; a recorded bandwidth step at every phase of QEMU's
    window against it (``PHASES_MS``), each with the threshold as recorded and moved by the
    window-to-window jitter around the step (``step_jitter``: where a pass ends just above
    or below the threshold, another run goes the other way); a device whose stop-copy the
    recording never saw down to its size less what it sent in pre-copy. None when the input
    pins the answer (no such doubt, or every replay says "does not converge")."""
    point = predict(x, s, horizon_ms)
    why = ((LOWER_BOUND,) if x.saturated else ()) + ((BANDWIDTH_STEP,) if x.bandwidth_steps_ms else ())
    # a device's stop-copy size is its own estimate: one the recording never saw send its
    # stop-copy may count what it already sent in pre-copy (mtty's 96 B counts its 24 B
    # header), so it may send that much less; the replay with the smaller size also checks
    # the switch-over against it (a large device's could decide convergence)
    counted = [min(d.precopy_bytes, d.stopcopy_size_bytes) if d.stopcopy_bytes is None else 0 for d in x.devices]
    variants = [x]
    if any(counted):
        why += (SIZE_ESTIMATE,)
        variants.append(replace(x, devices=tuple(replace(d, stopcopy_size_bytes=d.stopcopy_size_bytes - c)
                                                 for d, c in zip(x.devices, counted, strict=True))))
    if not why:
        return point
    rates = (True, False) if x.saturated else (True,)
    phases = PHASES_MS if x.bandwidth_steps_ms else (0.0,)
    eps = step_jitter(x)
    scales = (1.0 - eps, 1.0, 1.0 + eps) if eps >= 0.01 else (1.0,)
    reps = {(v, r, ph, k): point if (v, r, ph, k) == (0, True, 0.0, 1.0) else predict(
        y, s, horizon_ms, any_rate=r, phase_ms=ph, threshold_scale=k)
        for v, y in enumerate(variants) for r in rates for ph in phases for k in scales}
    conv = [p for p in reps.values() if p.converges]
    if not conv:
        return point

    def span(vals: list[Any]) -> tuple[Any, Any] | None:
        vals = [v for v in vals if v is not None]
        return (min(vals), max(vals)) if vals else None

    devs = tuple(DeviceRange(d.name, span([p.devices[i].stopcopy_bytes for p in conv]))
                 for i, d in enumerate(conv[0].devices))
    low = reps[(0, False, 0.0, 1.0)].converges if x.saturated else None
    rng = Range(why=why, converges=(len(conv) == len(reps), True), converges_at_lower_bound=low,
                dirty_syncs=span([p.dirty_syncs for p in conv]), total_ms=span([p.total_ms for p in conv]),
                downtime_ms=span([p.downtime_ms for p in conv]), devices=devs)
    return replace(point, range=rng)


def default_settings(x: Measured) -> list[Setting]:
    """With no setting asked: as recorded, and the verdict's suggestions if it made any."""
    out = [x.recorded]
    if x.verdict_suggested_downtime_limit_ms:
        out.append(x.recorded.with_param("downtime-limit", x.verdict_suggested_downtime_limit_ms))
    if x.verdict_suggested_bandwidth_bytes_per_s:
        out.append(x.recorded.with_param("max-bandwidth", x.verdict_suggested_bandwidth_bytes_per_s))
    return out


def grid(lo: float, hi: float, n: int = 16, unit: float = 1.0) -> list[float]:
    """Up to ``n`` values from ``lo`` to ``hi``, evenly spaced on a log scale (linear from 0),
    rounded to whole ``unit``s as a person would type them."""
    if hi <= lo:
        return [float(lo)]
    raw = np.linspace(lo, hi, n) if lo <= 0 else np.geomspace(lo, hi, n)
    return sorted({float(max(round(v / unit), 1 if lo > 0 else 0) * unit) for v in raw})


def sweep(x: Measured, base: Setting, param: str, values: Iterable[float],
          horizon_ms: float = DEFAULT_HORIZON_MS) -> Sweep:
    """Predict at each value of ``param``, and bisect the smallest value that converges (to
    1 ms, or 1% of a bandwidth): at the measured dirty rate, and at any dirty rate."""
    vals = sorted(set(float(v) for v in values))
    preds = [predict_range(x, base.with_param(param, v), horizon_ms) for v in vals]  # any rate
    conv = [p.converges for p in preds]
    return Sweep(param=param, predictions=tuple(preds),
                 smallest=_smallest(x, base, param, vals, None if x.saturated else conv, horizon_ms, False),
                 smallest_any_rate=_smallest(x, base, param, vals, conv, horizon_ms, True)
                 if x.saturated else None)


def _smallest(x: Measured, base: Setting, param: str, vals: list[float], conv: list[bool] | None,
              horizon_ms: float, any_rate: bool) -> float | None:
    def ok(v: float) -> bool:
        return predict(x, base.with_param(param, v), horizon_ms, any_rate=any_rate).converges

    if conv is None:
        conv = [ok(v) for v in vals]
    i = next((k for k, c in enumerate(conv) if c), None)
    if i is None:
        return None
    hi, lo = vals[i], (vals[i - 1] if i > 0 else None)
    step = 1.0 if param == "downtime-limit" else 0.01 * hi
    while lo is not None and hi - lo > step:
        mid = math.floor((lo + hi) / 2) if param == "downtime-limit" else (lo + hi) / 2
        if mid <= lo:
            break
        hi, lo = (mid, lo) if ok(mid) else (hi, mid)
    return hi


# ---------------------------------------------------------------------------------------
# JSON


def _setting_json(s: Setting) -> dict[str, Any]:
    return {"downtime_limit_ms": s.downtime_limit_ms, "max_bandwidth_bytes_per_s": s.max_bandwidth_bytes_per_s,
            "avail_switchover_bandwidth_bytes_per_s": s.avail_switchover_bandwidth_bytes_per_s}


def _span_json(v: tuple[Any, Any] | None) -> list[Any] | None:
    return None if v is None else [_plain(v[0]), _plain(v[1])]


def _range_json(r: Range | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"why": list(r.why), "converges": list(r.converges), "converges_at_lower_bound": r.converges_at_lower_bound,
            "dirty_syncs": _span_json(r.dirty_syncs), "total_ms": _span_json(r.total_ms),
            "downtime_ms": _span_json(r.downtime_ms),
            "devices": [{"name": d.name, "stopcopy_bytes": _span_json(d.stopcopy_bytes)} for d in r.devices]}


def _prediction_json(p: Prediction) -> dict[str, Any]:
    return {"setting": _setting_json(p.setting), "converges": p.converges, "dirty_syncs": p.dirty_syncs,
            "total_ms": _plain(p.total_ms), "downtime_ms": _plain(p.downtime_ms),
            "devices": [{"name": d.name, "stopcopy_bytes": d.stopcopy_bytes, "downtime_ms": _plain(d.downtime_ms)}
                        for d in p.devices],
            "range": _range_json(p.range)}


def _bw_summary(ws: Sequence[Window]) -> dict[str, Any]:
    bw = np.array([w.bytes_per_ms * 1000.0 for w in ws])
    if not len(bw):
        return {"windows": 0, "mean": None, "min": None, "max": None}
    return {"windows": len(bw), "mean": float(bw.mean()), "min": float(bw.min()), "max": float(bw.max()),
            "held_by_max_bandwidth": int(sum(w.limited for w in ws))}


def to_json(x: Measured, predictions: Sequence[Prediction], sweep_: Sweep | None = None,
            inputs: Sequence[str] = ()) -> dict[str, Any]:
    """The one JSON form of a what-if (``schema: migprof.whatif/1``, docs/whatif.md)."""
    inp = {
        "files": list(inputs), "migration": x.migration, "qemu_version": x.qemu_version,
        "setting": _setting_json(x.recorded), "outcome": x.outcome, "converged": x.converged,
        "dirty_syncs": x.dirty_syncs, "total_ms": _plain(x.total_ms), "downtime_ms": _plain(x.downtime_ms),
        "ram_bytes": x.ram_bytes, "bulk_wire_bytes": x.bulk_wire_bytes,
        "working_set_bytes": _plain(x.working_set_bytes), "dirty_rate_bytes_per_s": _plain(x.dirty_rate_bytes_per_s),
        "dirty_rate_is_lower_bound": x.saturated, "bandwidth_steps_ms": list(x.bandwidth_steps_ms),
        "bandwidth_bytes_per_s": _bw_summary(x.windows),
        "stopcopy_rate_bytes_per_s": _plain(x.stop_rate_bytes_per_ms * 1000.0),
        "stopcopy_rate_source": x.stop_rate_source, "stopcopy_buffered_bytes": _plain(x.buffered_bytes),
        "fixed_downtime_ms": x.fixed_downtime_ms,
        "passes_seen": x.passes_seen, "switchover_ack_delay_ms": _plain(x.ack_delay_ms),
        "devices": [{"name": d.name, "initial_bytes": d.initial_bytes, "dirty_bytes": d.dirty_bytes,
                     "stopcopy_size_bytes": d.stopcopy_size_bytes, "stopcopy_bytes": d.stopcopy_bytes,
                     "downtime_ms": _plain(d.downtime_ms), "precopy_info": d.precopy_info} for d in x.devices],
        "verdict": {"needed_downtime_limit_ms": x.verdict_needed_downtime_limit_ms,
                    "suggested_downtime_limit_ms": x.verdict_suggested_downtime_limit_ms,
                    "suggested_bandwidth_bytes_per_s": _plain(x.verdict_suggested_bandwidth_bytes_per_s)},
        "weak": list(x.weak),
    }
    out: dict[str, Any] = {"schema": WHATIF_SCHEMA, "input": inp,
                           "predictions": [_prediction_json(p) for p in predictions]}
    if sweep_ is not None:
        out["sweep"] = {"param": sweep_.param, "smallest_converging": sweep_.smallest,
                        "smallest_converging_any_dirty_rate": sweep_.smallest_any_rate,
                        "predictions": [_prediction_json(p) for p in sweep_.predictions]}
    return out
