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
        "dur_ns", "count", "ret", "flags", "state", "detail", "file"]


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
    cp = ev["state"].where(name.eq(N.CHECKPOINT))
    src = name.isin(N.SOURCE_ONLY) | cp.str.startswith("src-").fillna(False).astype(bool)
    dst = name.isin(N.DEST_ONLY) | cp.str.startswith("dst-").fillna(False).astype(bool)
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
    used = events["event"].isin(N.USED).to_numpy(dtype=bool)
    ev = events.loc[used, KEEP].reset_index(drop=True)
    # what the model needs from the raw text, so the (large) raw column is dropped here
    raw = events["raw"][used].reset_index(drop=True)
    ev["hexsize"] = False
    ex = (ev["event"] == N.VFIO_PENDING_EXACT).to_numpy(dtype=bool)
    if ex.any():
        ev.loc[ex, "hexsize"] = raw[ex].str.contains(" stopcopy size 0x", regex=False).fillna(False).to_numpy(dtype=bool)
    ev["_i"] = np.arange(len(ev))
    origin = labels(ev["origin"], "?")
    files = labels(ev["file"], "")
    side0 = labels(ev["side"], "unknown")
    nofile = files == ""
    files[nofile] = [f"{o}:{s}" for o, s in zip(origin[nofile], side0[nofile], strict=True)]
    ev["stream"] = files
    ev["trace"] = np.isin(origin, list(N.TRACE_ORIGINS))
    ev["side_r"] = resolve_sides(ev).to_numpy()
    iso = {}
    for stream in pd.unique(ev["stream"][ev["trace"]]):
        first = raw[(ev["stream"] == stream).to_numpy()].dropna().head(20)
        iso[stream] = bool(first.str.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").any())
    ev["mig"] = pd.array([pd.NA] * len(ev), dtype="Int64")
    ev["pos"] = np.zeros(len(ev), dtype=np.int64)
    glob = ev["event"].isin(_GLOBAL)

    spans: list[dict] = []
    next_id = 0
    aux_groups = []
    for (side, stream), g in ev[~glob].groupby(["side_r", "stream"], sort=False, observed=True):
        trace = bool(g["trace"].iloc[0])
        if not trace:
            aux_groups.append((side, stream, g))
            continue
        next_id = _cut(ev, g, True, side, stream, next_id, spans)
    span_df = pd.DataFrame(spans, columns=["mig", "side", "stream", "start_ns", "end_ns", "trace"])
    for side, stream, g in aux_groups:
        primary = span_df[(span_df["side"] == side) & span_df["trace"]]
        if primary.empty:
            next_id = _cut(ev, g, False, side, stream, next_id, spans)
            span_df = pd.DataFrame(spans, columns=span_df.columns)
        else:
            _attach(ev, g, primary, side)
    pairs = _pair(span_df)
    return Split(rows=ev, spans=span_df, pairs=pairs, iso=iso)


def _order(g: pd.DataFrame, trace: bool) -> pd.DataFrame:
    # A trace file is in causal order already (timestamps are read before the log lock, so
    # they can be slightly out of order); other streams go by time.
    keys = ["seq", "_i"] if trace else ["t_ns", "seq", "_i"]
    return g.sort_values(keys, kind="stable", na_position="last")


def _cut(ev, g, trace, side, stream, next_id, spans) -> int:
    g = _order(g, trace)
    seg = _segments(g, trace, side)
    name = g["event"]
    keep0 = bool(name[seg == 0].isin(N.CORE).any())
    ids = np.full(len(g), -1, dtype=np.int64)
    t = g["t_ns"]
    for s in np.unique(seg):
        if s == 0 and not keep0:
            continue
        m = seg == s
        ids[m] = next_id
        ts = t[m].dropna()
        spans.append({
            "mig": next_id, "side": side, "stream": stream, "trace": trace,
            "start_ns": int(t[m].iloc[0]) if pd.notna(t[m].iloc[0]) else (int(ts.iloc[0]) if len(ts) else None),
            "end_ns": int(ts.max()) if len(ts) else None,
        })
        next_id += 1
    ev.loc[g.index, "mig"] = pd.Series(ids, index=g.index, dtype="Int64").mask(ids < 0)
    ev.loc[g.index, "pos"] = np.arange(len(g))
    return next_id


def _attach(ev, g, primary: pd.DataFrame, side: str) -> None:
    """Give rows of a non-trace stream (QMP, BPF) the migration of the side's trace streams."""
    g = _order(g, False)
    ev.loc[g.index, "pos"] = np.arange(len(g))
    timed = g["t_ns"].notna()
    starts = primary.dropna(subset=["start_ns"])
    if len(starts) == len(primary) and timed.all():
        left = pd.DataFrame({"t": g["t_ns"].astype("int64").to_numpy(), "idx": g.index})
        right = pd.DataFrame({"t": starts["start_ns"].astype("int64").to_numpy(),
                              "mig": starts["mig"].astype("int64").to_numpy()}).sort_values("t")
        m = pd.merge_asof(left.sort_values("t"), right, on="t", direction="backward")
        # QMP rows stamped just before the trace start line (client clock, poll latency) still
        # belong to it: allow 50 ms.
        early = m["mig"].isna()
        if early.any():
            m2 = pd.merge_asof(left.sort_values("t")[early.to_numpy()], right, on="t",
                               direction="forward", tolerance=50_000_000)
            m.loc[early, "mig"] = m2["mig"].to_numpy()
        ev.loc[m["idx"].to_numpy(), "mig"] = pd.array(m["mig"].to_numpy(), dtype="Float64").astype("Int64")
        return
    # No common clock: align the stream's own migrations with the trace's, last with last.
    seg = _segments(g, False, side)
    own = [s for s in np.unique(seg) if s > 0] or ([0] if len(g) else [])
    migs = list(primary.sort_values("mig")["mig"])
    for j, s in enumerate(reversed(own)):
        if j >= len(migs):
            break
        ev.loc[g.index[seg == s], "mig"] = int(migs[-1 - j])


def _pair(spans: pd.DataFrame) -> dict[int, int]:
    """Destination migration -> the source migration it received (by start time, else order)."""
    src = spans[spans["side"] != "destination"]
    dst = spans[spans["side"] == "destination"]
    if src.empty or dst.empty:
        return {}
    pairs: dict[int, int] = {}
    timed = [c for c in ("start_ns", "end_ns")]
    if src[timed].notna().all().all() and dst[timed].notna().all().all():
        # the source migration whose time span overlaps the destination's most (a destination
        # may enter `setup` when it starts listening, before the source starts)
        s0 = src["start_ns"].to_numpy(dtype=np.int64)
        s1 = src["end_ns"].to_numpy(dtype=np.int64)
        for dm, d0, d1 in zip(dst["mig"], dst["start_ns"], dst["end_ns"], strict=True):
            overlap = np.minimum(s1, int(d1)) - np.maximum(s0, int(d0))
            overlap[np.isin(src["mig"].to_numpy(), list(pairs.values()))] = np.iinfo(np.int64).min
            k = int(np.argmax(overlap))
            if overlap[k] >= -1_000_000_000:  # allow a 1 s gap (clock skew between hosts)
                pairs[int(dm)] = int(src["mig"].iloc[k])
        return pairs
    s_ids = list(src.sort_values("mig")["mig"])
    d_ids = list(dst.sort_values("mig")["mig"])
    for j in range(min(len(s_ids), len(d_ids))):
        pairs[int(d_ids[-1 - j])] = int(s_ids[-1 - j])
    return pairs
