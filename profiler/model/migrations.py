"""Split an event table into migrations, per side, and pair destination with source.

A log can hold several migrations (a cancelled one and its retry). Each trace stream (one
input file, or one simpletrace/USDT feed) is cut at migration starts: a status row
(``migrate_set_state`` or a QMP status) entering ``setup``/``active`` after no status or a
terminal one; without status rows, at ``savevm_state_setup`` / ``loadvm_state_setup``.
Rows of other origins (QMP polls and events, BPF) join the migration whose start precedes
them in time, or, without timestamps, the migration of the same ordinal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from profiler import events as E
from profiler.model import names as N

_GLOBAL = (E.QMP_PARAMS, E.LAB_MARK)  # looked up by time per migration, never segmented


@dataclass(frozen=True, slots=True)
class Split:
    rows: pd.DataFrame  # input rows + side_r, stream, trace, mig (Int64), pos (order key)
    spans: pd.DataFrame  # one row per migration: mig, side, stream, start_ns, end_ns, trace
    pairs: dict[int, int]  # destination mig -> source mig
    iso: dict[str, bool]  # trace stream -> lines carry the ISO-8601 prefix (v10.1+)


KEEP = ["t_ns", "seq", "side", "origin", "event", "device", "bytes", "pre_bytes", "post_bytes",
        "stopcopy_bytes", "init_bytes", "dirty_bytes", "threshold_bytes", "bw_bytes_per_ms",
        "switchover_bw_bytes_per_ms", "dur_ns", "dirty_pages", "dirty_syncs", "count", "ret", "state",
        "detail", "file"]


def labels(s: pd.Series, na: str) -> np.ndarray:
    """A categorical/string column as an object array of str, NA -> ``na`` (no per-row pandas)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = np.append(s.cat.categories.astype(str).to_numpy(dtype=object), na)
        return cats[s.cat.codes.to_numpy()].copy()  # code -1 (NA) picks the appended ``na``
    return s.astype(object).where(s.notna(), na).to_numpy(dtype=object, copy=True)


def resolve_sides(ev: pd.DataFrame) -> pd.Series:
    """The side of each row; ``unknown`` rows take their file's side, judged by its events."""
    side = pd.Series(labels(ev["side"], "unknown"), index=ev.index, dtype=object)
    unknown = side.eq("unknown")
    if not unknown.any():
        return side
    key = pd.Series(ev["stream"], index=ev.index)
    name = ev["event"]
    src = name.isin(N.source_only()).to_numpy(dtype=bool, copy=True)
    dst = name.isin(N.dest_only()).to_numpy(dtype=bool, copy=True)
    cpm = name.eq(N.CHECKPOINT).to_numpy(dtype=bool)
    if cpm.any():  # string tests on the few checkpoint rows only
        cp = ev["state"][cpm]
        src[cpm] |= cp.str.startswith("src-").fillna(False).to_numpy(dtype=bool)
        dst[cpm] |= cp.str.startswith("dst-").fillna(False).to_numpy(dtype=bool)
    src = pd.Series(src, index=ev.index)
    dst = pd.Series(dst, index=ev.index)
    votes = pd.DataFrame({"k": key[unknown], "s": src[unknown], "d": dst[unknown]})
    agg = votes.groupby("k", sort=False).agg(s=("s", "any"), d=("d", "any"))
    guess = pd.Series(np.where(agg["s"] | ~agg["d"], "source", "destination"), index=agg.index)
    side = side.copy()
    side[unknown] = key[unknown].map(guess)
    return side


def _segments(g: pd.DataFrame, trace: bool, side: str) -> np.ndarray:
    """Segment number per row of one ordered stream: 0 before the first start, then 1, 2, ..."""
    name = g["event"]
    st = name.eq(N.STATUS) if trace else name.isin(N.QMP_STATUS_EVENTS)
    st = st & g["state"].notna()
    if st.any():
        states = g["state"][st]
        prev = states.shift(1)
        start = states.isin(N.STARTS) & (prev.isna() | prev.isin(N.TERMINAL))
        flag = pd.Series(False, index=g.index)
        flag[start.index] = start.to_numpy()
    else:
        setup = N.SAVEVM_SETUP if side != "destination" else N.LOADVM_SETUP
        flag = name.eq(setup).fillna(False)
    return flag.to_numpy(dtype=bool).cumsum()


def split(events: pd.DataFrame) -> Split:
    """Assign every used row to a migration (``mig``), or NA when it belongs to none."""
    used = events["event"].isin(N.used()).to_numpy(dtype=bool)
    at = np.flatnonzero(used)
    ev = _take(events, at)
    # what the model needs from the raw text: read at the few rows that need it (filtering
    # the whole, large, raw column costs more than the rest of split)
    raw_all = events["raw"]
    hexsize = np.zeros(len(ev), dtype=bool)
    ex = (ev["event"] == N.VFIO_PENDING_EXACT).to_numpy(dtype=bool)
    if ex.any():
        txt = raw_all.iloc[at[ex]]
        hexsize[ex] = txt.str.contains(" stopcopy size 0x", regex=False).fillna(False).to_numpy(dtype=bool)
    ev["hexsize"] = hexsize
    ev["_i"] = np.arange(len(ev))
    # stream = the input file, else origin:side; built from integer codes (the file column is
    # Arrow strings: factorising it is cheap, turning it into Python strings is not)
    fcode, funiq = pd.factorize(ev["file"])
    funiq = [str(f) for f in funiq]
    nofile = (fcode < 0) | np.isin(fcode, [i for i, f in enumerate(funiq) if f == ""])
    if nofile.any():
        oc = ev["origin"].cat.codes.to_numpy().astype(np.int64)
        sc = ev["side"].cat.codes.to_numpy().astype(np.int64)
        ocat = [str(c) for c in ev["origin"].cat.categories] + ["?"]
        scat = [str(c) for c in ev["side"].cat.categories] + ["unknown"]
        combo = np.where(oc < 0, len(ocat) - 1, oc) * len(scat) + np.where(sc < 0, len(scat) - 1, sc)
        extra = {int(k): f"{ocat[k // len(scat)]}:{scat[k % len(scat)]}" for k in np.unique(combo[nofile])}
        base = len(funiq)
        order = sorted(extra)
        funiq += [extra[k] for k in order]
        remap = np.zeros(int(combo.max()) + 1, dtype=np.int64)
        remap[order] = np.arange(base, base + len(order))
        fcode = np.where(nofile, remap[combo], fcode)
    fcode = fcode.astype(np.int64)
    # object columns stay object: pandas 3 would infer Arrow strings, and every later
    # to_numpy(dtype=object) would convert them back
    ev["stream"] = pd.Series(np.array(funiq, dtype=object)[fcode] if len(funiq) else
                             np.zeros(0, dtype=object), index=ev.index, dtype=object)
    ev["_sc"] = fcode
    ev["trace"] = ev["origin"].isin(N.TRACE_ORIGINS).to_numpy(dtype=bool)
    ev["side_r"] = pd.Series(resolve_sides(ev).to_numpy(dtype=object), index=ev.index, dtype=object)
    # what follows takes many row subsets: plain object/numpy columns take far faster than
    # pyarrow strings, and the side/origin/file columns are folded into side_r/stream/trace
    ev = ev.drop(columns=["side", "origin", "file"])
    sv = ev["side_r"].to_numpy(dtype=object)
    ev["_dc"] = np.where(sv == "source", 0, np.where(sv == "destination", 1, 2))
    iso = {}
    tr_a = ev["trace"].to_numpy(dtype=bool)
    for code in np.unique(fcode[tr_a]).tolist():
        first = raw_all.iloc[at[np.flatnonzero(fcode == code)[:40]]].dropna().head(20)
        iso[funiq[code]] = bool(first.str.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").any())
    mig, pos, spans = _assign(ev)
    ev["mig"] = pd.arrays.IntegerArray(mig, mask=mig < 0)
    ev["pos"] = pos
    span_df = pd.DataFrame(spans, columns=["mig", "side", "stream", "start_ns", "end_ns", "trace"])
    return Split(rows=ev, spans=span_df, pairs=_pair(spans), iso=iso)


_OBJ = ("device", "state", "detail")  # taken as object arrays (None = NA)


def _take(events: pd.DataFrame, at: np.ndarray) -> pd.DataFrame:
    """The KEEP columns at rows ``at``. The string columns the model subsets many times
    become object arrays in the same step (Arrow take, then one conversion of the taken
    rows only); the rest keep their dtype."""
    cols: dict[str, object] = {}
    for c in KEEP:
        a = events[c].array
        if c in _OBJ:
            pa_arr = getattr(a, "_pa_array", None)
            if pa_arr is not None:
                vals = pa_arr.take(at).to_numpy(zero_copy_only=False)
            else:
                vals = np.asarray(a.to_numpy(dtype=object, na_value=None))[at]
            # object, not inferred: pandas 3 would make Arrow strings of it again
            cols[c] = pd.Series(np.asarray(vals, dtype=object), dtype=object, copy=False)
        else:
            cols[c] = pd.Series(a.take(at), copy=False)
    return pd.DataFrame(cols, copy=False)


def _in(a: np.ndarray, values) -> np.ndarray:
    """Hash-based membership for object arrays (None-safe, O(n))."""
    if len(a) < 256:  # pandas' per-call overhead dominates small arrays
        s = values if isinstance(values, set | frozenset | dict) else set(values)
        return np.fromiter((x in s for x in a), dtype=bool, count=len(a))
    return pd.Index(a, dtype=object).isin(list(values))


def _assign(ev: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(migration id per row, -1 for none; order within its stream; one dict per migration)."""
    n = len(ev)
    a = _Rows(
        name=labels(ev["event"], ""),
        state=ev["state"].to_numpy(dtype=object),
        t=ev["t_ns"].fillna(0).to_numpy(dtype=np.int64),
        tna=ev["t_ns"].isna().to_numpy(dtype=bool),
        seq=ev["seq"].fillna(np.iinfo(np.int64).max).to_numpy(dtype=np.int64),
    )
    side = ev["side_r"].to_numpy(dtype=object)
    stream = ev["stream"].to_numpy(dtype=object)
    trace = ev["trace"].to_numpy(dtype=bool)
    glob = _in(a.name, _GLOBAL)
    mig = np.full(n, -1, dtype=np.int64)
    pos = np.zeros(n, dtype=np.int64)
    spans: list[dict] = []
    c_side = ev["_dc"].to_numpy(dtype=np.int64)
    c_stream = ev["_sc"].to_numpy(dtype=np.int64)
    key = c_side * (int(c_stream.max(initial=0)) + 1) + c_stream
    key[glob] = -1
    groups = [k for k in pd.unique(key) if k >= 0]
    aux = []
    for k in groups:
        idx = np.flatnonzero(key == k)
        g_side, g_stream, g_trace = str(side[idx[0]]), str(stream[idx[0]]), bool(trace[idx[0]])
        if g_trace:
            _cut(a, idx, True, g_side, g_stream, mig, pos, spans)
        else:
            aux.append((idx, g_side, g_stream))
    for idx, g_side, g_stream in aux:
        primary = [sp for sp in spans if sp["side"] == g_side and sp["trace"]]
        if primary:
            _attach(a, idx, primary, g_side, mig, pos)
        else:
            _cut(a, idx, False, g_side, g_stream, mig, pos, spans)
    return mig, pos, spans


@dataclass(frozen=True, slots=True)
class _Rows:
    name: np.ndarray  # event names (object)
    state: np.ndarray  # state column (object, None = NA)
    t: np.ndarray  # t_ns (int64, 0 where NA)
    tna: np.ndarray  # t_ns is NA
    seq: np.ndarray  # seq (int64, max where NA)


def _order(a: _Rows, idx: np.ndarray, trace: bool) -> np.ndarray:
    # A trace file is in causal order already (timestamps are read before the log lock, so
    # they can be slightly out of order); other streams go by time.
    if trace:
        return idx[np.lexsort((idx, a.seq[idx]))]
    tk = np.where(a.tna[idx], np.iinfo(np.int64).max, a.t[idx])
    return idx[np.lexsort((idx, a.seq[idx], tk))]


def _segments(names: np.ndarray, states: np.ndarray, trace: bool, side: str) -> np.ndarray:
    """Segment number per row of one ordered stream: 0 before the first start, then 1, 2, ..."""
    st = (names == N.STATUS) if trace else _in(names, N.QMP_STATUS_EVENTS)
    st &= ~pd.isna(states)
    flag = np.zeros(len(names), dtype=bool)
    if st.any():
        sidx = np.flatnonzero(st)
        sv = states[sidx]
        prev = np.empty(len(sv), dtype=object)
        prev[1:] = sv[:-1]
        start = _in(sv, N.STARTS) & (pd.isna(prev) | _in(prev, N.TERMINAL))
        flag[sidx[start]] = True
    else:
        flag = names == (N.SAVEVM_SETUP if side != "destination" else N.LOADVM_SETUP)
    return np.cumsum(flag)


def _cut(a: _Rows, idx: np.ndarray, trace: bool, side: str, stream: str, mig: np.ndarray,
         pos: np.ndarray, spans: list[dict]) -> None:
    o = _order(a, idx, trace)
    pos[o] = np.arange(len(o))
    seg = _segments(a.name[o], a.state[o], trace, side)
    keep0 = bool(_in(a.name[o][seg == 0], N.core()).any())
    # seg counts up along ``o``: each segment is one run of it
    nos, lo = np.unique(seg, return_index=True)
    hi = np.append(lo[1:], len(seg))
    for s_no, a_, b_ in zip(nos.tolist(), lo.tolist(), hi.tolist(), strict=True):
        if s_no == 0 and not keep0:
            continue
        rows = o[a_:b_]
        timed = rows[~a.tna[rows]]
        first = rows[0]
        start = int(a.t[first]) if not a.tna[first] else (int(a.t[timed[0]]) if len(timed) else None)
        mig_id = len(spans)
        mig[rows] = mig_id
        spans.append({"mig": mig_id, "side": side, "stream": stream, "trace": trace, "start_ns": start,
                      "end_ns": int(a.t[timed].max()) if len(timed) else None})


def _attach(a: _Rows, idx: np.ndarray, primary: list[dict], side: str, mig: np.ndarray,
            pos: np.ndarray) -> None:
    """Give rows of a non-trace stream (QMP, BPF) the migration of the side's trace streams."""
    o = _order(a, idx, False)
    pos[o] = np.arange(len(o))
    if not a.tna[o].any() and all(sp["start_ns"] is not None for sp in primary):
        prim = sorted(primary, key=lambda sp: sp["start_ns"])
        starts = np.array([sp["start_ns"] for sp in prim], dtype=np.int64)
        ids = np.array([sp["mig"] for sp in prim], dtype=np.int64)
        k = np.searchsorted(starts, a.t[o], side="right") - 1
        # QMP rows stamped just before the trace start line (client clock, poll latency) still
        # belong to it: allow 50 ms.
        early = (k < 0) & (a.t[o] >= starts[0] - 50_000_000)
        k[early] = 0
        mig[o] = np.where(k >= 0, ids[np.maximum(k, 0)], -1)
        return
    # No common clock: align the stream's own migrations with the trace's, last with last.
    seg = _segments(a.name[o], a.state[o], False, side)
    own = [s_no for s_no in np.unique(seg) if s_no > 0] or ([0] if len(o) else [])
    migs = sorted(sp["mig"] for sp in primary)
    for j, s_no in enumerate(reversed(own)):
        if j >= len(migs):
            break
        mig[o[seg == s_no]] = migs[-1 - j]


def _pair(spans: list[dict]) -> dict[int, int]:
    """Destination migration -> the source migration it received (by time overlap, else order)."""
    src = [sp for sp in spans if sp["side"] != "destination"]
    dst = [sp for sp in spans if sp["side"] == "destination"]
    if not src or not dst:
        return {}
    pairs: dict[int, int] = {}
    if all(sp["start_ns"] is not None and sp["end_ns"] is not None for sp in src + dst):
        # the source migration whose time span overlaps the destination's most (a destination
        # may enter `setup` when it starts listening, before the source starts)
        for d in dst:
            best, best_ov = None, -1_000_000_000  # allow a 1 s gap (clock skew between hosts)
            for sp in src:
                if sp["mig"] in pairs.values():
                    continue
                ov = min(sp["end_ns"], d["end_ns"]) - max(sp["start_ns"], d["start_ns"])
                if ov >= best_ov:
                    best, best_ov = sp["mig"], ov
            if best is not None:
                pairs[d["mig"]] = best
        return pairs
    s_ids = [sp["mig"] for sp in src]
    d_ids = [sp["mig"] for sp in dst]
    for j in range(min(len(s_ids), len(d_ids))):
        pairs[d_ids[-1 - j]] = s_ids[-1 - j]
    return pairs
