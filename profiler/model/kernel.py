"""The kernel's view alone: each VFIO device's migration rebuilt from the BPF syscall events.

For a process whose migration neither QEMU's trace nor QMP shows, the BPF collector's rows on
the VFIO migration uAPI (vfio-uapi.md) are all there is, and they are enough to follow each
device:

* a **session** per device: it starts at the successful ``SET MIG_DEVICE_STATE`` that returns
  a new data fd (RUNNING -> PRE_COPY, or -> STOP_COPY on a device without pre-copy, on a
  source; -> RESUMING on a destination), else at a SET that enters the saving group or
  RESUMING from outside it; rows of a device before any start that read, write or ask
  PRECOPY_INFO are a session the collector attached to in its middle. It ends at the source's
  first SET to STOP (completed when STOP_COPY came first) or back to RUNNING/RUNNING_P2P
  (QEMU failed or cancelled: the kernel cannot tell which), at the destination's first SET to
  RUNNING (or STOP: loaded, VM left paused); ERROR or a refused SET marks it failed;
* **pre-copy rounds**: the data-fd reads in PRE_COPY(_P2P) from fresh data to its end. A round
  closes at the read that returns the end of data (``0``, or ``-ENOMSG`` on mlx5/virtio), or at
  the read that consumes what the last ``VFIO_MIG_GET_PRECOPY_INFO`` reported (initial + dirty
  bytes: QEMU's own estimate update), whichever comes first; empty reads start none;
* **pending** per device from PRECOPY_INFO (the first initial bytes, the last dirty bytes
  before the switch-over); each k-th PRECOPY_INFO of the devices is one ``Check`` (kind
  ``precopy_info``: VFIO devices only, no threshold);
* **switch-over** at the first SET to PRE_COPY_P2P or STOP_COPY (QEMU stopping the VM);
  stop-copy bytes are the reads after it; the stop-copy lasts until the last STOP_COPY read.

The sessions of one process that overlap in time form one migration (a device seen again
starts the next one); a source and a destination migration that overlap are one migration.
**When it applies**: a kernel migration of a side is reported only where the QEMU view (trace
or QMP) has no migration of that side overlapping it in time; where that side's QEMU view has
no timestamps, never. QEMU-view rows carry no pid, so the rule is per side, not per process.
Everything built here is ``view="kernel"``: no RAM, no dirty syncs, no threshold, no guest
downtime (a downtime-limit only when QMP told it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from profiler import events as E
from profiler.model.outcome import qmp_reply
from profiler.model.results import Check, Device, Migration, Round, StateChange, Verdict

_EVENTS = (E.BPF_IOCTL, E.BPF_PRECOPY_INFO, E.BPF_DATA_READ, E.BPF_DATA_WRITE)
SET = "SET MIG_DEVICE_STATE"
DATA_SIZE = "GET MIG_DATA_SIZE"
SAVING = frozenset(["PRE_COPY", "PRE_COPY_P2P", "STOP_COPY"])
PRE = frozenset(["PRE_COPY", "PRE_COPY_P2P"])
SWITCH = frozenset(["PRE_COPY_P2P", "STOP_COPY"])
SOURCE_END = frozenset(["STOP", "RUNNING", "RUNNING_P2P", "ERROR"])
DEST_END = frozenset(["RUNNING", "STOP", "ERROR"])
ENOMSG = 42
CHECK_KIND = "precopy_info"
VIEW = "kernel"


def _isin(a: np.ndarray, values: frozenset[str]) -> np.ndarray:
    return pd.Index(a, dtype=object).isin(list(values)) if len(a) else np.zeros(0, dtype=bool)


def _f(a: pd.Series) -> np.ndarray:
    return a.to_numpy(dtype="float64", na_value=np.nan)


# Sessions are contiguous runs of rows (sorted by device, then time): the per-session sums,
# carries and picks below are segment operations on flat arrays, no groupby.
def _seg_cumsum(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Running sum of ``x`` (>= 0) restarting at each ``first`` row (``first[0]`` is True)."""
    cs = np.cumsum(x)
    return cs - np.maximum.accumulate(np.where(first, cs - x, 0))


def _seg_last(valid: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per row: the index of the last ``valid`` row at or before it in its segment, else -1."""
    ix = np.arange(len(valid))
    last = np.maximum.accumulate(np.where(valid, ix, -1))
    return np.where(last >= np.maximum.accumulate(np.where(first, ix, 0)), last, -1)


def _pick(seg: np.ndarray, vals: np.ndarray, first: bool) -> tuple[list[int], list[int]]:
    """(segments, their first or last value) over rows already in segment order."""
    if not len(seg):
        return [], []
    edge = np.r_[True, seg[1:] != seg[:-1]] if first else np.r_[seg[1:] != seg[:-1], True]
    return seg[edge].tolist(), vals[edge].astype(np.int64).tolist()


@dataclass(frozen=True, slots=True)
class _Rows:
    """The BPF rows of every session, sorted by (pid, device, time), as numpy columns."""

    t: np.ndarray  # int64 epoch ns
    pid: np.ndarray
    dev: np.ndarray  # object
    event: np.ndarray
    state: np.ndarray  # object, None = NA
    detail: np.ndarray
    bytes: np.ndarray  # float64, NaN = NA (and the columns below)
    ret: np.ndarray
    dur: np.ndarray
    init: np.ndarray
    dirty: np.ndarray
    size: np.ndarray
    data_fd: np.ndarray


def _objects(s: pd.Series, at: np.ndarray) -> np.ndarray:
    """A string column at rows ``at`` as an object array, None for NA (only those rows converted)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = np.append(s.cat.categories.to_numpy(dtype=object), None)
        return cats[s.cat.codes.to_numpy()[at]]
    pa_arr = getattr(s.array, "_pa_array", None)
    if pa_arr is not None:
        return np.asarray(pa_arr.take(at).to_numpy(zero_copy_only=False), dtype=object)
    v = s.to_numpy(dtype=object)[at]
    v[pd.isna(v)] = None
    return v


def _rows(events: pd.DataFrame) -> _Rows | None:
    """The BPF device and data-fd rows, or None when there are none (the usual QEMU-view input)."""
    origin = events["origin"]
    if isinstance(origin.dtype, pd.CategoricalDtype) and E.Origin.BPF.value not in origin.cat.categories:
        return None
    m = origin.eq(E.Origin.BPF.value).to_numpy(dtype=bool, na_value=False)
    if not m.any():
        return None
    m = m & events["event"].isin(_EVENTS).to_numpy(dtype=bool, na_value=False)
    m = m & events["t_ns"].notna().to_numpy(dtype=bool)
    at = np.flatnonzero(m)
    if not len(at):
        return None
    event, dev, state, detail = (_objects(events[c], at) for c in ("event", "device", "state", "detail"))
    num = {c: _f(events[c])[at] for c in ("fd", "bytes", "ret", "dur_ns", "init_bytes", "dirty_bytes",
                                            "stopcopy_bytes", "data_fd")}
    no_dev = pd.isna(dev)
    data = event != E.BPF_IOCTL
    # a data fd whose device the collector never learnt keeps its own name; an ioctl
    # without a device is the container's (IOMMU dirty pages)
    lost = no_dev & data
    if lost.any():
        fd = np.nan_to_num(num["fd"][lost], nan=-1).astype(np.int64).astype(str)
        dev[lost] = np.char.add("data-fd", fd).astype(object)
    keep = ~(no_dev & ~data)
    t = events["t_ns"].to_numpy(dtype=np.int64, na_value=0)[at]
    seq = events["seq"].to_numpy(dtype=np.int64, na_value=0)[at]
    pid = events["pid"].to_numpy(dtype=np.int64, na_value=-1)[at]
    dcode, _ = pd.factorize(dev)
    order = np.lexsort((seq, t, dcode, pid))
    order = order[keep[order]]
    if not len(order):
        return None
    return _Rows(t=t[order], pid=pid[order], dev=dev[order], event=event[order], state=state[order],
                 detail=detail[order], bytes=num["bytes"][order], ret=num["ret"][order],
                 dur=num["dur_ns"][order], init=num["init_bytes"][order], dirty=num["dirty_bytes"][order],
                 size=num["stopcopy_bytes"][order], data_fd=num["data_fd"][order])


@dataclass(frozen=True, slots=True)
class _Session:
    """One device's data-transfer session (values for the Device it becomes)."""

    pid: int
    dev: str
    side: str  # source | destination
    start: int  # epoch ns (the start SET, else the first row)
    attached: bool  # no start seen: the collector attached in the middle
    last: int  # epoch ns of its last row (end SET included)
    end: int | None  # epoch ns of the end SET
    end_state: str | None
    stop_copy: bool  # went through STOP_COPY
    switch: int | None  # first SET to PRE_COPY_P2P/STOP_COPY
    stop_end: int | None  # end of its last STOP_COPY read (BPF stamps calls at their exit)
    refused: str | None  # the first SET the kernel refused, as text
    error_state: bool
    io: dict
    states: list[tuple[int, str, bool]]
    rounds: list[tuple[int, int, int, int, float]]  # t, end, bytes, reads, pending (NaN)
    info: tuple[np.ndarray, np.ndarray]  # (t, initial + dirty) of its PRECOPY_INFO before the switch
    writes: tuple[np.ndarray, np.ndarray]  # destination: (t, bytes) of its data-fd writes


def _sessions(r: _Rows) -> list[_Session]:
    """Every device's data-transfer sessions, with what the Device and Migration need of them."""
    n = len(r.t)
    pos = np.arange(n)
    is_ioctl, is_info = r.event == E.BPF_IOCTL, r.event == E.BPF_PRECOPY_INFO
    is_read, is_write = r.event == E.BPF_DATA_READ, r.event == E.BPF_DATA_WRITE
    ok = r.ret == 0
    is_set = is_ioctl & (r.detail == SET) & ~pd.isna(r.state)
    set_ok = is_set & ok
    key_first = np.r_[True, (r.pid[1:] != r.pid[:-1]) | (r.dev[1:] != r.dev[:-1])]
    key = np.cumsum(key_first) - 1
    # the previous accepted state of the same device, at each accepted SET
    si = np.flatnonzero(set_ok)
    st = r.state[si]
    prev = np.full(len(si), None, dtype=object)
    same = np.zeros(len(si), dtype=bool)
    same[1:] = key[si][1:] == key[si][:-1]
    prev[same] = st[np.flatnonzero(same) - 1]
    inside = SAVING | {"RESUMING"}
    enter = _isin(st, inside)
    was_out = ~_isin(prev, inside)
    known_prev = ~pd.isna(prev)
    new_fd = ~np.isnan(r.data_fd[si])
    start_si = enter & (new_fd | (was_out & (known_prev | _isin(st, frozenset(["PRE_COPY", "RESUMING"])))))
    start = np.zeros(n, dtype=bool)
    start[si[start_si]] = True
    sid = _seg_cumsum(start.astype(np.int64), key_first)
    first = key_first | start  # sessions are contiguous: a key's rows, cut at each start
    sess = np.cumsum(first) - 1
    n_s = int(sess[-1]) + 1
    f_pos = np.flatnonzero(first)
    has = {k: np.bincount(sess[m], minlength=n_s) > 0 for k, m in
           (("read", is_read), ("write", is_write), ("info", is_info))}
    s_state = r.state[f_pos]
    s_started = sid[f_pos] > 0
    side = np.where(s_started, np.where(s_state == "RESUMING", "destination", "source"),
                    np.where(has["write"], "destination",
                             np.where(has["read"] | has["info"], "source", "")))
    dst_row = side[sess] == "destination"
    cand = set_ok & ~start & np.where(dst_row, _isin(r.state, DEST_END), _isin(r.state, SOURCE_END))
    end_pos = np.full(n_s, n, dtype=np.int64)
    np.minimum.at(end_pos, sess[cand], pos[cand])
    live = (pos <= end_pos[sess]) & (side[sess] != "")
    # phase of each data-fd call: the collector's, else the device's last accepted SET
    last_set = np.maximum.accumulate(np.where(set_ok, pos, -1))
    own = last_set >= f_pos[sess]
    phase = r.state.copy()
    fill = pd.isna(phase) & own & (is_read | is_write)
    phase[fill] = r.state[last_set[fill]]
    phase = np.where(pd.isna(phase), "?", phase).astype(object)
    sw_rows = set_ok & live & _isin(r.state, SWITCH)
    switch = np.full(n_s, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(switch, sess[sw_rows], r.t[sw_rows])
    b = np.where(r.ret > 0, np.nan_to_num(r.bytes), 0.0)
    unknown = phase == "?"
    before = r.t < switch[sess]
    pre_read = is_read & live & (_isin(phase, PRE) | (unknown & before))
    stop_read = is_read & live & ~pre_read
    rounds = _rounds(r, sess, live & (side[sess] == "source"), is_info & ok & before, pre_read, b)
    io = _io(r, sess, live, is_read, is_write, pre_read, stop_read, is_info & ok & before, phase, b, n_s)
    wr = is_write & live & (r.ret > 0)
    out = []
    for s in np.flatnonzero(side != "").tolist():
        lo, e = int(f_pos[s]), int(end_pos[s])
        hi = min(e + 1, int(f_pos[s + 1]) if s + 1 < n_s else n)
        rows = slice(lo, hi)
        sets = np.flatnonzero(is_set[rows]) + lo
        refused = [i for i in sets.tolist() if not ok[i]]
        stops = np.flatnonzero(stop_read[rows]) + lo
        infos = np.flatnonzero((is_info & ok & before & live)[rows]) + lo
        out.append(_Session(
            pid=int(r.pid[lo]), dev=str(r.dev[lo]), side=str(side[s]), start=int(r.t[lo]),
            attached=not bool(s_started[s]), last=int(r.t[hi - 1]),
            end=int(r.t[e]) if e < n else None, end_state=str(r.state[e]) if e < n else None,
            stop_copy=bool((set_ok[rows] & (r.state[rows] == "STOP_COPY")).any()),
            switch=int(switch[s]) if switch[s] != np.iinfo(np.int64).max else None,
            stop_end=int(r.t[stops].max()) if len(stops) else None,
            refused=(f"the kernel refused SET {r.state[refused[0]]} (ret {int(r.ret[refused[0]])})"
                     if refused else None),
            error_state=bool((is_ioctl[rows] & (r.state[rows] == "ERROR")).any()),
            io=io.get(s, {}),
            states=[(int(r.t[i]), str(r.state[i]), bool(ok[i])) for i in sets.tolist()],
            rounds=rounds.get(s, []),
            info=(r.t[infos], r.init[infos] + r.dirty[infos]),
            writes=(r.t[rows][wr[rows]], b[rows][wr[rows]]),
        ))
    return out


def _rounds(r: _Rows, sess: np.ndarray, src: np.ndarray, info: np.ndarray, pre_read: np.ndarray,
            b: np.ndarray) -> dict[int, list[tuple[int, int, int, int, float]]]:
    """Per source session: its pre-copy rounds (first read's start, last read's end, bytes,
    reads, the pending PRECOPY_INFO reported before it)."""
    at = np.flatnonzero(src & (info | pre_read))
    if not len(at):
        return {}
    s, inf, rd = sess[at], info[at], pre_read[at]
    first = np.r_[True, s[1:] != s[:-1]]
    li = _seg_last(inf, first)  # the PRECOPY_INFO in force at each row
    pend = np.where(li >= 0, (r.init[at] + r.dirty[at])[np.maximum(li, 0)], np.nan)
    bb = np.where(rd, b[at], 0.0)
    cum = _seg_cumsum(bb, first | inf)  # bytes read since that PRECOPY_INFO
    with np.errstate(invalid="ignore"):
        drained = rd & (bb > 0) & (cum >= pend) & (cum - bb < pend)
    ret = r.ret[at]
    close = drained | (rd & ((ret == 0) | (ret == -ENOMSG)))
    rid = _seg_cumsum(close.astype(np.int64), first) - close
    pos = rd & (bb > 0)
    if not pos.any():
        return {}
    ps, pr = s[pos], rid[pos]
    end = r.t[at][pos]  # BPF stamps a call at its exit
    beg = end - np.nan_to_num(r.dur[at][pos]).astype(np.int64)
    lo = np.flatnonzero(np.r_[True, (ps[1:] != ps[:-1]) | (pr[1:] != pr[:-1])])
    out: dict[int, list] = {}
    for row in zip(ps[lo].tolist(), np.minimum.reduceat(beg, lo).tolist(), np.maximum.reduceat(end, lo).tolist(),
                   np.add.reduceat(bb[pos], lo).astype(np.int64).tolist(), np.diff(np.r_[lo, len(ps)]).tolist(),
                   pend[pos][lo].tolist(), strict=True):
        out.setdefault(row[0], []).append(row[1:])
    return out


def _io(r: _Rows, sess: np.ndarray, live: np.ndarray, is_read: np.ndarray, is_write: np.ndarray,
        pre_read: np.ndarray, stop_read: np.ndarray, info_before: np.ndarray, phase: np.ndarray,
        b: np.ndarray, n_s: int) -> dict[int, dict]:
    """Per session: data-fd calls, time and latency, bytes per phase, pre-copy and stop-copy
    bytes, the first initial / last dirty pending and the last stop-copy size."""
    out: dict[int, dict] = {}
    for op, m in (("read", live & is_read), ("write", live & is_write)):
        at = np.flatnonzero(m)
        if not len(at):
            continue
        ss, d = sess[at], r.dur[at] / 1e3
        o = np.lexsort((d, ss))  # NaN durations sort last in their session
        ss, d = ss[o], d[o]
        lo = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
        hi = np.r_[lo[1:], len(ss)]
        ok = np.add.reduceat(~np.isnan(d), lo)  # durations known per session
        mid = lo + np.maximum(ok - 1, 0) // 2
        p50 = np.where(ok % 2 == 1, d[mid], (d[mid] + d[np.minimum(mid + 1, hi - 1)]) / 2)
        mx = d[lo + np.maximum(ok - 1, 0)]
        for si, n, tot, k, a, z in zip(ss[lo].tolist(), (hi - lo).tolist(), np.add.reduceat(np.nan_to_num(d), lo).tolist(),
                                       ok.tolist(), p50.tolist(), mx.tolist(), strict=True):
            out.setdefault(si, {}).update({f"{op}_calls": n, f"{op}_ms": tot / 1e3, f"{op}_p50_us": a if k else None,
                                           f"{op}_max_us": z if k else None})
    rw = np.flatnonzero(live & (is_read | is_write))
    if len(rw):
        code, names = pd.factorize(phase[rw])
        key, inv = np.unique(sess[rw] * len(names) + code, return_inverse=True)
        tot = np.bincount(inv, weights=b[rw])
        for k, v in zip(key.tolist(), tot.tolist(), strict=True):
            out.setdefault(k // len(names), {}).setdefault("bytes_by_phase", {})[str(names[k % len(names)])] = int(v)
    for name, m in (("pre", pre_read), ("stop", stop_read)):
        seen = np.bincount(sess[m], minlength=n_s) > 0
        tot = np.bincount(sess[m], weights=b[m], minlength=n_s)
        for si in np.flatnonzero(seen).tolist():
            out.setdefault(si, {})[name] = int(tot[si])
    for name, vals, m, first in (
            ("init", r.init, live & (r.event == E.BPF_PRECOPY_INFO), True),
            ("dirty", r.dirty, live & info_before, False),
            ("size", r.size, live & (r.event == E.BPF_IOCTL) & (r.detail == DATA_SIZE), False)):
        at = np.flatnonzero(m & ~np.isnan(vals))
        for si, v in zip(*_pick(sess[at], vals[at], first), strict=True):
            out.setdefault(si, {})[name] = v
    return out


def _clusters(sessions: list[_Session]) -> list[list[_Session]]:
    """The sessions of one process and side that overlap in time; a device seen again starts
    the next migration."""
    out: list[list[_Session]] = []
    open_: dict[tuple[int, str], tuple[list[_Session], int]] = {}
    for s in sorted(sessions, key=lambda s: (s.pid, s.side, s.start)):
        k = (s.pid, s.side)
        cur = open_.get(k)
        if cur is not None and s.start <= cur[1] and all(o.dev != s.dev for o in cur[0]):
            cur[0].append(s)
            open_[k] = (cur[0], max(cur[1], s.last))
        else:
            out.append([s])
            open_[k] = (out[-1], s.last)
    return out


def _span(c: list[_Session]) -> tuple[int, int]:
    return min(s.start for s in c), max(s.last for s in c)


def _pairs(clusters: list[list[_Session]]) -> list[tuple[list[_Session] | None, list[_Session] | None]]:
    """(source, destination) clusters: a destination joins the free source it overlaps most."""
    src = [c for c in clusters if c[0].side == "source"]
    dst = [c for c in clusters if c[0].side == "destination"]
    ss = np.array([_span(c) for c in src], dtype=np.int64).reshape(-1, 2)
    free = np.ones(len(src), dtype=bool)
    taken: dict[int, list[_Session]] = {}
    alone = []
    for d in dst:
        ds, de = _span(d)
        ov = np.minimum(ss[:, 1], de) - np.maximum(ss[:, 0], ds)
        ok = np.flatnonzero(free & (ov > 0))
        if len(ok):
            best = int(ok[np.argmax(ov[ok])])
            free[best] = False
            taken[best] = d
        else:
            alone.append(d)
    pairs: list[tuple[list[_Session] | None, list[_Session] | None]] = [(c, taken.get(i)) for i, c in enumerate(src)]
    pairs += [(None, d) for d in alone]
    return sorted(pairs, key=lambda p: _span(p[0] or p[1])[0])  # type: ignore[arg-type]


def _qemu_spans(spans: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
    """Per side, the QEMU view's migrations as (starts, ends) in epoch ns; None when one of
    them has no time (then that side is the QEMU view's alone)."""
    out: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
    side = spans["side"].to_numpy(dtype=object)
    s = spans["start_ns"].to_numpy(dtype="float64", na_value=np.nan)
    e = spans["end_ns"].to_numpy(dtype="float64", na_value=np.nan)
    e = np.where(np.isnan(e), s, e)
    for k in set(side.tolist()):
        m = side == k
        out[str(k)] = None if np.isnan(s[m]).any() else (s[m], e[m])
    return out


def _covered(c: list[_Session] | None, qemu: dict[str, tuple[np.ndarray, np.ndarray] | None]) -> bool:
    """Whether the QEMU view has a migration of this side overlapping the cluster."""
    if c is None:
        return True
    side = c[0].side
    if side not in qemu:
        return False
    se = qemu[side]
    if se is None:
        return True
    lo, hi = _span(c)
    return bool(((se[0] <= hi) & (se[1] >= lo)).any())


def _all_covered(r: _Rows, qemu: dict[str, tuple[np.ndarray, np.ndarray] | None]) -> bool:
    """Whether every row that can open a session (a SET into the saving group or RESUMING, a
    data-fd call) falls inside a QEMU-view migration of its side: then every session overlaps
    one, and the sessions need not be built (the usual live case, trace and BPF together)."""
    setting = (r.event == E.BPF_IOCTL) & (r.detail == SET)
    dst = (r.event == E.BPF_DATA_WRITE) | (setting & (r.state == "RESUMING"))
    src = (r.event == E.BPF_DATA_READ) | (r.event == E.BPF_PRECOPY_INFO) | (setting & _isin(r.state, SAVING))
    for side, m in (("source", src), ("destination", dst)):
        if not m.any():
            continue
        if side not in qemu:
            return False
        se = qemu[side]
        if se is None:
            continue
        t = r.t[m].astype(np.float64)
        inside = np.zeros(len(t), dtype=bool)
        for lo, hi in zip(se[0].tolist(), se[1].tolist(), strict=True):
            inside |= (t >= lo) & (t <= hi)
        if not inside.all():
            return False
    return True


def _outcome(c: list[_Session]) -> tuple[str, str | None]:
    side = c[0].side
    errs = [f"{s.dev}: {s.refused}" for s in c if s.refused]
    if any(s.error_state or s.end_state == "ERROR" for s in c):
        bad = next(s.dev for s in c if s.error_state or s.end_state == "ERROR")
        return "failed", f"{bad}: the device reported ERROR" + ("; " + "; ".join(errs) if errs else "")
    if any(s.end is None for s in c):
        return "incomplete", None
    if side == "source":
        back = [s for s in c if s.end_state != "STOP" or not s.stop_copy]
        if back:
            s = back[0]
            what = (f"went back to {s.end_state}" if s.end_state != "STOP"
                    else "stopped without STOP_COPY")
            return "failed", (f"{s.dev} {what}: QEMU ended the migration (failed or cancelled; the kernel "
                              "cannot tell which)" + ("; " + "; ".join(errs) if errs else ""))
    return "completed", None


def _ms(t: int | float | None, t0: int) -> float | None:
    return None if t is None or (isinstance(t, float) and math.isnan(t)) else (t - t0) / 1e6


def _device(name: str, ss: list[_Session], t0: int, switch: int | None) -> Device:
    """One device from its source and/or destination session (one name: one device, as the
    QEMU view joins them)."""
    src = next((s for s in ss if s.side == "source"), None)
    dst = next((s for s in ss if s.side == "destination"), None)
    io_s = src.io if src else {}
    io_d = dst.io if dst else {}
    phases: dict[str, int] = {}
    for io in (io_s, io_d):
        for k, v in io.get("bytes_by_phase", {}).items():
            phases[k] = phases.get(k, 0) + v
    pre = stop = None
    if src is not None and ("pre" in io_s or "stop" in io_s):
        pre, stop = io_s.get("pre", 0), io_s.get("stop", 0)
    elif dst is not None and switch is not None and len(dst.writes[0]):
        # no reads of this name: the destination's writes, split at the source's switch-over
        t, b = dst.writes
        pre, stop = int(b[t < switch].sum()), int(b[t >= switch].sum())
    srcs = {k: "bpf" for k, v in (("precopy_bytes", pre), ("stopcopy_bytes", stop),
                                   ("initial_pending_bytes", io_s.get("init")),
                                   ("dirty_pending_bytes", io_s.get("dirty")),
                                   ("stopcopy_size_bytes", io_s.get("size"))) if v is not None}
    for op, io in (("read", io_s), ("write", io_d)):
        if f"{op}_calls" in io:
            srcs[f"{op}_ms"] = "bpf"
    states = [StateChange(t_ms=_ms(t, t0), state=st, side=s.side, confirmed=okay, origin="bpf")
              for s in ss for t, st, okay in s.states]
    states.sort(key=lambda x: x.t_ms if x.t_ms is not None else -math.inf)
    rounds = tuple(Round(n=i + 1, t_ms=_ms(t, t0), dur_ms=(e - t) / 1e6, bytes=nb, reads=k,
                         pending_bytes=None if math.isnan(p) else int(p))
                   for i, (t, e, nb, k, p) in enumerate(src.rounds if src else []))
    return Device(
        name=name, kind="vfio", precopy_bytes=pre, stopcopy_bytes=stop,
        initial_pending_bytes=io_s.get("init"), dirty_pending_bytes=io_s.get("dirty"),
        stopcopy_size_bytes=io_s.get("size"), read_ms=io_s.get("read_ms"), read_calls=io_s.get("read_calls"),
        read_p50_us=io_s.get("read_p50_us"), read_max_us=io_s.get("read_max_us"),
        write_ms=io_d.get("write_ms"), write_calls=io_d.get("write_calls"),
        write_p50_us=io_d.get("write_p50_us"), write_max_us=io_d.get("write_max_us"),
        bytes_by_phase=phases, side="both" if src and dst else (src or dst).side,  # type: ignore[union-attr]
        states=tuple(states), sources=srcs, rounds=rounds)


def _checks(c: list[_Session], t0: int) -> tuple[Check, ...]:
    """Each k-th PRECOPY_INFO of the devices is one check (QEMU asks every device in turn)."""
    n = [len(s.info[0]) for s in c]
    if not sum(n):
        return ()
    k = np.concatenate([np.arange(x) for x in n])
    t = np.concatenate([s.info[0] for s in c])
    p = np.concatenate([s.info[1] for s in c]).astype(np.int64)
    dev = np.repeat(np.arange(len(c)), n)
    o = np.lexsort((t, k))
    k, t, p, dev = k[o], t[o], p[o], dev[o]
    lo = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    t_ms = ((t[lo] - t0) / 1e6).tolist()
    total = np.add.reduceat(p, lo).tolist()
    names = np.array([s.dev for s in c], dtype=object)[dev]
    per = [dict(zip(a.tolist(), b.tolist(), strict=True))
           for a, b in zip(np.split(names, lo[1:]), np.split(p, lo[1:]), strict=True)]
    return tuple(Check(t_ms=tm, kind=CHECK_KIND, pending_bytes=tot, threshold_bytes=None, devices=d)
                 for tm, tot, d in zip(t_ms, total, per, strict=True))


def _qmp_params(events: pd.DataFrame) -> list[tuple[str, float, dict]]:
    """QMP's migration-parameter rows (side, t_ns, the values), in time order."""
    m = events["event"].eq(E.QMP_PARAMS).to_numpy(dtype=bool, na_value=False)
    if not m.any():
        return []
    g = events.iloc[np.flatnonzero(m)].sort_values("t_ns", kind="stable")
    return [(str(side), float(t) if t is not None and t is not pd.NA else -math.inf,
             {k: v for k, v in qmp_reply(d).items() if not isinstance(v, dict | list)})
            for side, t, d in zip(g["side"].astype(object), g["t_ns"].astype(object), g["detail"], strict=True)]


def _params(rows: list[tuple[str, float, dict]], side: str, end_ns: int) -> dict:
    """The parameters in force for ``side`` at ``end_ns`` (when QMP told them)."""
    params: dict = {}
    for s, t, d in rows:
        if s == side and t <= end_ns:
            params.update(d)
    return params


def _summary(mig_devs: Sequence[Device], outcome: str, switch_ms: float | None, stop_ms: float | None) -> str:
    src = [d for d in mig_devs if d.side != "destination"]
    pre = sum(d.precopy_bytes or 0 for d in src)
    stop = sum(d.stopcopy_bytes or 0 for d in src)
    rounds = sum(len(d.rounds) for d in src)
    parts = [f"Kernel view only (BPF on the VFIO migration uAPI; no QEMU trace or QMP for this process): "
             f"{len(mig_devs)} VFIO device(s)"]
    if src:
        parts.append(f"{pre} bytes in pre-copy over {rounds} round(s), {stop} bytes in stop-copy")
    if switch_ms is not None:
        parts.append(f"switch-over at {switch_ms:.1f} ms" + (f", stop-copy {stop_ms:.1f} ms" if stop_ms is not None else ""))
    elif outcome == "incomplete" and src:
        parts.append("still in pre-copy")
    parts.append("RAM, the switch-over threshold and the guest's downtime are not visible to the kernel")
    return "; ".join(parts) + "."


def _migration(index: int, sc: list[_Session] | None, dc: list[_Session] | None,
               qmp: list[tuple[str, float, dict]], warn: list[str]) -> Migration:
    main = sc or dc
    assert main is not None
    t0 = min(s.start for s in main)
    switches = [s.switch for s in (sc or []) if s.switch is not None]
    switch = min(switches) if switches else None
    names = list(dict.fromkeys([s.dev for s in (sc or [])] + [s.dev for s in (dc or [])]))
    devs = tuple(_device(n, [s for s in (sc or []) + (dc or []) if s.dev == n], t0, switch) for n in names)
    outcome, error = _outcome(main)
    ended = outcome != "incomplete"
    end = max((s.end or s.last) for s in main)
    stop_ends = [s.stop_end for s in (sc or []) if s.stop_end is not None]
    stop_ms = (max(stop_ends) - switch) / 1e6 if stop_ends and switch is not None else None
    switch_ms = _ms(switch, t0)
    checks = _checks(sc, t0) if sc else ()
    pend = [c for c in checks if c.devices]
    dominant = max(pend[-1].devices, key=pend[-1].devices.get) if pend else None  # type: ignore[arg-type]
    side = main[0].side
    params = _params(qmp, side, end)
    dl = params.get("downtime-limit")
    mbw = params.get("max-bandwidth")
    procs = [f"pid {c[0].pid}" + (f" ({c[0].side})" if sc and dc else "") for c in (sc, dc) if c]
    sources = {"view": "kernel: BPF on the VFIO migration uAPI (no QEMU trace, no QMP status)",
               "process": ", ".join(procs)}
    if isinstance(dl, int | float):
        sources["downtime_limit_ms"] = "qmp"
    for s in main + (dc or []):
        if s.attached:
            warn.append(f"migration {index + 1} (kernel view): attached in the middle of {s.dev}'s "
                        f"session (pid {s.pid}): data-fd bytes before the attach are missing")
    d_out = _outcome(dc)[0] if sc and dc else None
    verdict = Verdict(converged=None, converged_at_check=None,
                      summary=_summary(devs, outcome, switch_ms, stop_ms), dominant_device=dominant)
    return Migration(
        index=index, outcome=outcome, start_ns=t0, setup_ms=None,
        total_ms=(end - t0) / 1e6 if ended else None, downtime_ms=None, dirty_syncs=0,
        converged=None, verdict=verdict, checks=checks, devices=devs, switchover_ms=switch_ms,
        stopcopy_ms=stop_ms, downtime_limit_ms=float(dl) if isinstance(dl, int | float) else None,
        max_bandwidth_bytes_per_s=float(mbw) if isinstance(mbw, int | float) else None,
        error=error, side=side, dest_outcome=d_out, params=params, end_ns=end if ended else None,
        dest_start_ms=_ms(min(s.start for s in dc), t0) if sc and dc else None,
        dest_end_ms=_ms(max((s.end or s.last) for s in dc), t0) if sc and dc else None,
        sources=sources, view=VIEW)


def lost_warnings(events: pd.DataFrame, migs: Sequence[Migration], warn: list[str]) -> None:
    """A BPF loss inside a kernel-view migration's time span: its counts may be short."""
    m = events["event"].eq(E.BPF_LOST).to_numpy(dtype=bool, na_value=False)
    if not m.any():
        return
    g = events.iloc[np.flatnonzero(m)]
    t = g["t_ns"].to_numpy(dtype="float64", na_value=np.nan)
    cnt = np.nan_to_num(_f(g["count"]))
    for mg in migs:
        hi = mg.end_ns if mg.end_ns is not None else math.inf
        lost = int(cnt[(t >= (mg.start_ns or 0)) & (t <= hi)].sum())
        if lost:
            warn.append(f"migration {mg.index + 1}: BPF lost {lost} events: data-fd counts and "
                        "device states may be incomplete")


def kernel_view(events: pd.DataFrame, spans: pd.DataFrame, *, first_index: int,
                warn: list[str]) -> tuple[Migration, ...]:
    """The migrations the kernel saw where the QEMU view (``spans``: split's migrations, with
    side, start_ns, end_ns) has none, numbered from ``first_index``."""
    r = _rows(events)
    if r is None:
        return ()
    qemu = _qemu_spans(spans)
    if _all_covered(r, qemu):
        return ()
    sessions = _sessions(r)
    if not sessions:
        return ()
    out: list[Migration] = []
    qmp: list[tuple[str, float, dict]] | None = None
    for sc, dc in _pairs(_clusters(sessions)):
        sc = None if _covered(sc, qemu) else sc
        dc = None if _covered(dc, qemu) else dc
        if sc is None and dc is None:
            continue
        qmp = _qmp_params(events) if qmp is None else qmp
        out.append(_migration(first_index + len(out), sc, dc, qmp, warn))
    lost_warnings(events, out, warn)
    return tuple(out)
