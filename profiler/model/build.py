"""Build the report: split into migrations, then checks, passes, devices, times and verdict.

Every module answers its question for all migrations at once over one ordered table; this
file only slices their results per migration and packs the result dataclasses.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from profiler import events as E
from profiler.model import findings, pause
from profiler.model import names as N
from profiler.model.aliases import device_aliases
from profiler.model.checks import checks as find_checks
from profiler.model.devices import Index, devices
from profiler.model.kernel import kernel_view
from profiler.model.migrations import split
from profiler.model.outcome import dest_outcomes, qmp_reply, times_all
from profiler.model.outcome import rows as status_rows
from profiler.model.passes import passes as find_passes
from profiler.model.results import Check, Migration, Pass, Report, StateChange
from profiler.model.table import Table, build_table
from profiler.model.verdict import increase_dirty_rate, sync_dirty_rate, verdict
from profiler.model.version import Era, detect_from

if TYPE_CHECKING:
    from profiler.model.prefix_cache import PrefixCache

# make_checks builds Check positionally (much faster than keywords for ~30k checks)
_CHECK_FIELDS = ("t_ms", "kind", "pending_bytes", "threshold_bytes", "pre_bytes", "post_bytes",
                 "below_threshold", "pass_no", "devices", "gap_bytes", "bandwidth_bytes_per_ms", "decisive")
if tuple(f.name for f in dataclasses.fields(Check)) != _CHECK_FIELDS:
    raise ImportError("profiler.model.results.Check changed its fields: update build._CHECK_FIELDS "
                      "and make_checks")
_PARAM_KEYS = ("downtime-limit", "max-bandwidth", "avail-switchover-bandwidth")


def _ms(t: Any, t0: int | None) -> float | None:
    if t is None or t0 is None or (isinstance(t, float) and math.isnan(t)):
        return None
    return (t - t0) / 1e6


def _nn(v: Any) -> Any:
    """NaN -> None; integral floats -> int (sizes come through float64 columns)."""
    if v is None:
        return None
    if isinstance(v, float):
        if math.isnan(v):
            return None
        return int(v) if v.is_integer() else v
    return v


def _params(glob: tuple[list, ...], t0: int | None, end_ns: int | None) -> tuple[dict, list[dict]]:
    """Migration parameters in force at ``end_ns`` and the markers inside the migration
    (``glob``: event, t_ns, detail, state lists of the side's QMP parameter rows and lab marks)."""
    params: dict[str, Any] = {}
    markers: list[dict] = []
    for ev, t, detail, state in zip(*glob, strict=True):
        t = None if t is None or t is pd.NA or (isinstance(t, float) and math.isnan(t)) else int(t)
        if end_ns is not None and t is not None and t > end_ns:
            break
        inside = t0 is not None and t is not None and t >= t0
        d = qmp_reply(detail)
        if ev == E.QMP_PARAMS:
            changed = {k: d[k] for k in _PARAM_KEYS if k in d and params.get(k) != d[k]}
            params.update({k: v for k, v in d.items() if not isinstance(v, dict | list)})
            if inside and changed:
                markers.append({"t_ms": _ms(t, t0), "label": "set " + ", ".join(f"{k}={v}" for k, v in changed.items())})
        else:
            # a lab mark that sets parameters counts as the change itself (the QMP read-back
            # may only arrive after the migration it unblocked has completed)
            sub = d.get("params") if isinstance(d.get("params"), dict) else d
            setp = {k: sub[k] for k in _PARAM_KEYS if k in sub}
            params.update(setp)
            if inside:
                # the lab names its mark in ``state`` (raise-downtime-limit, kill-destination...)
                named = state if isinstance(state, str) and state else None
                label = str(d.get("label") or d.get("action") or named or detail)
                if setp:
                    label += " " + ", ".join(f"{k}={v}" for k, v in setp.items())
                markers.append({"t_ms": _ms(t, t0), "label": label})
    return params, markers


def _per_check(chk: np.ndarray, dev: np.ndarray, val: np.ndarray, lo: int, hi: int
               ) -> tuple[list[str], np.ndarray]:
    """Device names and the (checks lo..hi-1 x devices) pending matrix, -1 = not reported.

    ``chk``/``dev``/``val``: the contributions (sorted by check), RAM first in each check, so
    the columns are ``ram`` then the devices in order of appearance."""
    a, b = np.searchsorted(chk, lo, side="left"), np.searchsorted(chk, hi, side="left")
    # pd.factorize's codes (order of first appearance, NA -> -1) for a few dozen names:
    # plain Python is ~20x faster than pandas' per-call overhead
    pos: dict[object, int] = {}
    col = [-1 if d is None or d != d else pos.setdefault(d, len(pos)) for d in dev[a:b].tolist()]
    mat = np.full((hi - lo, len(pos)), -1, dtype=np.int64)
    mat[chk[a:b] - lo, np.array(col, dtype=np.int64)] = val[a:b]
    return [str(d) for d in pos], mat


def _dicts(names: list[str], mat: np.ndarray) -> list[dict[str, int]]:
    """One {device: bytes} per row of ``mat``, leaving out -1 (not reported)."""
    rows = mat.tolist()
    full = (mat >= 0).all(axis=1).tolist() if mat.size else [True] * len(rows)
    # rows where every device reported (the usual case) go through dict(zip()) in C
    out = list(map(dict, map(zip, itertools.repeat(names), rows)))
    for i, ok in enumerate(full):
        if not ok:
            out[i] = {d: v for d, v in zip(names, rows[i], strict=True) if v >= 0}
    return out


def _ints(a: np.ndarray) -> list:
    """float64 sizes -> Python ints, NaN -> None (vectorised; the loop touches NaNs only)."""
    a = np.asarray(a, dtype=np.float64)
    nan = np.isnan(a)
    out = np.where(nan, 0, a).astype(np.int64).tolist()
    for i in np.flatnonzero(nan).tolist():
        out[i] = None
    return out


def _floats(a: np.ndarray) -> list:
    a = np.asarray(a, dtype=np.float64)
    out = a.tolist()
    for i in np.flatnonzero(np.isnan(a)).tolist():
        out[i] = None
    return out


def _eras(rows: pd.DataFrame, iso: dict[str, bool]) -> dict[str, Era]:
    """The release family of each trace stream (a property of the file, not of one migration
    in it), from integer codes: which events each stream has, and two argument tests."""
    tr = rows["trace"].to_numpy(dtype=bool)
    ev = rows["event"]
    if not isinstance(ev.dtype, pd.CategoricalDtype):
        ev = ev.astype("category")
    cats = [str(c) for c in ev.cat.categories]
    code = ev.cat.codes.to_numpy().astype(np.int64)
    sc = rows["_sc"].to_numpy(dtype=np.int64)
    stream = rows["stream"].to_numpy(dtype=object)
    names = {}
    for k in np.unique(sc[tr]).tolist():
        names[k] = str(stream[np.flatnonzero(sc == k)[0]])
    n = len(cats) + 1
    pairs = np.unique(sc[tr] * n + code[tr])
    present: dict[int, set[str]] = {}
    for p in pairs.tolist():
        if p % n < len(cats):
            present.setdefault(p // n, set()).add(cats[p % n])
    ids = {c: i for i, c in enumerate(cats)}

    def streams_with(event: str, col: str) -> set[int]:
        if event not in ids:
            return set()
        m = tr & (code == ids[event]) & rows[col].notna().to_numpy(dtype=bool)
        return set(np.unique(sc[m]).tolist())

    rec = streams_with(N.VFIO_SET_STATE, "detail")
    sbw = streams_with(N.TRANSFERRED, "switchover_bw_bytes_per_ms")
    return {names[k]: detect_from(present.get(k, set()), recover_state=k in rec, switchover_bw=k in sbw,
                                  iso=iso.get(names[k]))
            for k in names}


class _Builder:
    """Holds the whole-table results; ``migration()`` slices and packs one migration."""

    def __init__(self, T: Table, spans: pd.DataFrame, eras: dict[str, Era], glob: pd.DataFrame,
                 warn: list[str], aliases: dict[tuple[str, str], str] | None = None,
                 cache: PrefixCache | None = None):
        self.T, self.warn, self.aliases, self.cache = T, warn, aliases or {}, cache
        self.t0 = [None if pd.isna(x) else int(x) for x in spans["start_ns"].tolist()]
        streams = spans["stream"].tolist()
        self.era = [eras.get(s) or Era(min_version=None) for s in streams]
        # parameter/lab rows per side, as plain lists (scanned once per migration)
        self.glob = {s: (g["event"].astype(str).tolist(), g["t_ns"].tolist(), g["detail"].tolist(),
                         g["state"].tolist())
                     for s, g in glob.groupby("side_r", sort=False)} if len(glob) else {}
        self.R = R = status_rows(T)
        self.times = times_all(T, R, self.t0)
        self.dest = dest_outcomes(T, R)
        self.chk, contrib = find_checks(T, np.array([e.complete_le for e in self.era], dtype=bool))
        self.k_chk, self.k_dev, self.k_val = contrib
        self.pas = find_passes(T, R.setup_done, R.switch)
        self.ix = Index(T)
        c = self.chk
        self.c_np = {k: c[k].to_numpy() for k in ("row", "pending", "threshold", "gap", "decisive",
                                                   "below", "bw", "sbw", "pass_no", "t_ns")}
        self.c_np["kind"] = c["kind"].to_numpy(dtype=object)
        # verdict.post_sync for every migration's checks at once (a migration's first check
        # follows only the setup sync)
        pn = self.c_np["pass_no"].astype(np.int64)
        self.c_np["post_sync"] = (np.r_[False, pn[1:] > pn[:-1]] & (c["k"].to_numpy() > 0)) | (
            self.c_np["kind"] == "exact")
        base = np.array([T.rel(x) for x in self.t0])
        t_ms = (c["t_ns"].to_numpy() - base[c["mig"].to_numpy()]) / 1e6 if len(c) else np.zeros(0)
        # the columns Check objects are made of, in Check's field order (a PrefixCache compares them)
        self.c_cols = [t_ms, c["kind"].to_numpy(dtype=object)] + [
            c[k].to_numpy(dtype=np.float64) for k in ("pending", "threshold", "pre", "post", "gap", "bw")] + [
            c["below"].to_numpy(dtype=bool), c["pass_no"].to_numpy(dtype=np.int64),
            c["decisive"].to_numpy(dtype=bool)]
        # the same as Python values, converted once for all migrations (Check's fields)
        cc = self.c_cols
        self.c_lists = [_floats(cc[0]), cc[1].tolist()] + [_ints(x) for x in cc[2:7]] + [
            _floats(cc[7])] + [x.tolist() for x in cc[8:]]
        self.streams = streams
        self.sides = spans["side"].tolist()
        self.c_lo = np.searchsorted(c["mig"].to_numpy(), np.arange(T.n_mig), side="left")
        self.c_hi = np.searchsorted(c["mig"].to_numpy(), np.arange(T.n_mig), side="right")
        p = self.pas
        self.p_np = [p["n"].to_numpy(), p["t_ns"].to_numpy(dtype=np.float64), p["dur_ns"].to_numpy(dtype=np.float64),
                     p["dirty_pages"].to_numpy(dtype=np.float64), p["phase"].to_numpy()]
        self.p_lo = np.searchsorted(p["mig"].to_numpy(), np.arange(T.n_mig), side="left")
        self.p_hi = np.searchsorted(p["mig"].to_numpy(), np.arange(T.n_mig), side="right")
        self.win = np.flatnonzero(T.trace & T.is_(N.TRANSFERRED))
        self.w_lo, self.w_hi = np.searchsorted(self.win, T.start), np.searchsorted(self.win, T.end)
        self.ack = T.first(T.trace & T.is_(N.SWITCHOVER_ACKED))
        self.approve = T.first(T.trace & T.is_(N.DEST_ACK_APPROVE))
        self.timed_first = T.first(~T.tna)
        self.timed_last = T.last(~T.tna)
        self.dest_end = T.last(R.status | (T.trace & T.is_(N.DEST_END)))
        lost_rows = ~T.trace & T.is_(E.BPF_LOST)
        self.lost = np.bincount(T.mig[lost_rows], weights=np.nan_to_num(T.num["count"][lost_rows]),
                                minlength=T.n_mig).astype(np.int64) if lost_rows.any() else np.zeros(T.n_mig, np.int64)
        self.mpass = T.last(~T.trace & T.is_(E.QMP_MIGRATION_PASS) & ~np.isnan(T.num["dirty_syncs"]))

    def _objects(self, key: Hashable, cols: list[np.ndarray], make: Callable[[int, int], list]) -> list:
        """``make(0, n)`` for the n rows of ``cols``, or through the caller's cache (which reuses
        the objects of its last build up to the first changed row)."""
        if self.cache is None:
            return make(0, len(cols[0]))
        return self.cache.objects(key, cols, make)

    def _dest_states(self, dm: int, t0: int | None) -> list[StateChange]:
        T = self.T
        S = np.flatnonzero(self.R.status)
        idx = S[np.searchsorted(S, T.start[dm]):np.searchsorted(S, T.end[dm])]
        return [StateChange(t_ms=None if T.tna[i] else _ms(int(T.t[i]), t0), state=str(T.state[i]),
                            side="destination", origin="qemu-log" if T.trace[i] else "qmp") for i in idx]

    def migration(self, index: int, sm: int | None, dm: int | None) -> Migration:
        T, R = self.T, self.R
        m = sm if sm is not None else dm
        side = "source" if sm is not None else "destination"
        t0 = self.t0[m]
        tm = self.times[m]
        era = self.era[m]
        lo, hi = int(self.c_lo[m]), int(self.c_hi[m])
        c = {k: v[lo:hi] for k, v in self.c_np.items()}
        dnames, dmat = _per_check(self.k_chk, self.k_dev, self.k_val, lo, hi)
        key = (self.sides[m], self.streams[m], t0)
        per = self._objects(("per", *key, tuple(dnames)), [dmat], lambda a, b: _dicts(dnames, dmat[a:b]))
        decided = int(R.low[m]) if sm is not None else -1
        sources = dict(tm.sources)
        qmp = tm.qmp
        qram = qmp.get("ram") if isinstance(qmp.get("ram"), dict) else {}
        # windows (migrate_transferred) of this migration
        w = self.win[self.w_lo[m]:self.w_hi[m]]
        wb, wd = T.num["bytes"][w], T.num["dur_ns"][w]
        pre = w < decided if decided >= 0 else np.ones(len(w), dtype=bool)
        wd_pre = float(np.nansum(wd[pre])) if pre.any() else 0.0
        bw = float(np.nansum(wb[pre]) / (wd_pre / 1e9)) if wd_pre > 0 else None
        # passes
        pl, ph = int(self.p_lo[m]), int(self.p_hi[m])
        p_n, p_t, p_d, p_pages, p_phase = (a[pl:ph] for a in self.p_np)
        if ph > pl:
            dirty_syncs = ph - pl
            sources["dirty_syncs"] = "trace"
            q = qram.get("dirty-sync-count")
            if isinstance(q, int) and q != dirty_syncs and qmp.get("status") == "completed":
                self.warn.append(f"migration {index}: trace shows {dirty_syncs} dirty syncs, query-migrate "
                                 f"{q} (sync events missing from the trace?)")
        elif isinstance(qram.get("dirty-sync-count"), int):
            dirty_syncs = int(qram["dirty-sync-count"])
            sources["dirty_syncs"] = "query-migrate"
        elif self.mpass[m] >= 0:
            dirty_syncs = int(T.num["dirty_syncs"][self.mpass[m]])
            sources["dirty_syncs"] = "MIGRATION_PASS"
        else:
            dirty_syncs = 0
            sources["dirty_syncs"] = "none"
        # parameters and marks of this side in force at the end
        params, markers = _params(self.glob.get(side, ([], [], [], [])), t0, tm.end_ns)
        dl = params.get("downtime-limit")
        dl = float(dl) if isinstance(dl, int | float) else None
        if dl is not None:
            sources["downtime_limit_ms"] = "qmp"
        else:
            thr, wbw = T.num["threshold_bytes"][w], T.num["bw_bytes_per_ms"][w]
            wsbw = T.num["switchover_bw_bytes_per_ms"][w]
            ok = np.flatnonzero((wbw > 0) & (thr > 0))  # (False for NaN)
            if len(ok):
                k = ok[-1]
                per_ms = wsbw[k] if not math.isnan(wsbw[k]) and wsbw[k] > 0 else wbw[k]
                dl = float(round(thr[k] / per_ms))  # max_size = bandwidth (bytes/ms) x limit
                sources["downtime_limit_ms"] = "trace (max_size / bandwidth)"
        mbw = params.get("max-bandwidth")
        # dirty rate: QEMU's own period rule over the syncs, else RAM's pending increases
        live = p_phase != "stopcopy"
        dirty = sync_dirty_rate(p_t[live] + p_d[live], p_pages[live], int(qram.get("page-size") or 4096))
        if dirty is not None:
            sources["dirty_rate"] = "sync dirty_pages"
        else:
            cb = c["row"] < decided if decided >= 0 else np.ones(len(c["row"]), dtype=bool)
            ram_p = (np.maximum(dmat[:, dnames.index("ram")], 0).astype(np.float64) if "ram" in dnames
                     else np.zeros(len(per)))[cb]
            cr = c["row"][cb]
            wdur = float(np.nansum(wd[(w > cr[0]) & (w <= cr[-1])])) if len(cr) else 0.0
            dirty = increase_dirty_rate(ram_p, c["pass_no"][cb], c["t_ns"][cb], wdur)
            if dirty is not None:
                sources["dirty_rate"] = "pending increases"
            elif qram.get("dirty-pages-rate") and qram.get("page-size"):
                dirty = float(qram["dirty-pages-rate"] * qram["page-size"])
                sources["dirty_rate"] = "query-migrate"
        if bw is None and isinstance(qram.get("mbps"), int | float):
            bw = float(qram["mbps"]) * 1e6 / 8
        v = verdict(c, per, decided_row=decided, outcome=tm.outcome,
                    dirty_rate=dirty, bandwidth=bw, downtime_limit_ms=dl)
        nb = int((c["row"] < decided).sum()) if decided >= 0 else len(c["row"])
        ram = {"initial_pending_bytes": per[0].get("ram") if per else None,
               "dirty_pending_bytes": per[nb - 1].get("ram") if nb else None,
               "precopy_bytes": qram.get("precopy-bytes"), "stopcopy_bytes": qram.get("downtime-bytes")}
        ram["sources"] = {k: "query-migrate" for k in ("precopy_bytes", "stopcopy_bytes") if ram[k] is not None}
        if isinstance(qram.get("multifd-bytes"), int) and qram["multifd-bytes"] > 0:
            # precopy-/downtime-bytes count the main channel only; the pages went over the
            # multifd channels (multifd-bytes), which query-migrate does not split by phase
            ram["precopy_bytes"] = ram["stopcopy_bytes"] = None
            ram["sources"] = {k: f"unknown: multifd ({qram['multifd-bytes']} bytes over multifd channels, "
                                 "not split by phase)" for k in ("precopy_bytes", "stopcopy_bytes")}
        devs = devices(self.ix, sm, dm, t0=t0, switch=int(R.switch[m]) if sm is not None else -1,
                       era=era, ram=ram, aliases=self.aliases, warn=self.warn, label=f"migration {index + 1}")
        lost = self.lost[sm] if sm is not None else 0
        lost += self.lost[dm] if dm is not None else 0
        if lost:
            self.warn.append(f"migration {index + 1}: BPF lost {lost} events: data-fd counts and "
                             "device states may be incomplete")
        qvfio = qmp.get("vfio") if isinstance(qmp.get("vfio"), dict) else {}
        vt = _nn(qvfio.get("transferred"))
        sent = [(d.precopy_bytes or 0) + (d.stopcopy_bytes or 0) for d in devs
                if d.kind == "vfio" and d.side != "destination" and (d.precopy_bytes is not None or d.stopcopy_bytes is not None)]
        multifd = any(d.stopcopy_thread_ms is not None for d in devs)
        # with multifd, vfio.transferred also counts the device-state packets' headers
        if vt is not None and sent and not multifd and tm.outcome == "completed" and sum(sent) != vt:
            self.warn.append(f"migration {index + 1}: query-migrate vfio.transferred is {vt} bytes, the "
                             f"VFIO devices' pre-copy + stop-copy bytes add up to {sum(sent)}")
        base_ms = T.rel(t0)

        def make_checks(a: int, b: int) -> list[Check]:
            t_ms_, kind_, pend_, thr_, pre_, post_, gap_, bw_, below_, pass_, dec_ = (
                x[lo + a:lo + b] for x in self.c_lists)
            # positional, in Check's field order, through map(): no per-check Python frame
            return list(map(Check, t_ms_, kind_, pend_, thr_, pre_, post_, below_, pass_, per[a:b], gap_,
                            bw_, dec_))

        checks = tuple(self._objects(("chk", *key, tuple(dnames)), [x[lo:hi] for x in self.c_cols] + [dmat], make_checks))

        def make_passes(a: int, b: int) -> list[Pass]:
            return [Pass(n=int(n), t_ms=None if math.isnan(t) else (t - base_ms) / 1e6 if t0 is not None else None,
                         dur_ms=None if math.isnan(d) else d / 1e6,
                         dirty_pages=_nn(dp), phase=str(ph_))
                    for n, t, d, dp, ph_ in zip(p_n[a:b].tolist(), p_t[a:b].tolist(), p_d[a:b].tolist(),
                                                p_pages[a:b].tolist(), p_phase[a:b].tolist(), strict=True)]

        passes = tuple(self._objects(("pass", *key), [p_n, p_t - base_ms, p_d, p_pages, p_phase], make_passes))
        transferred = _nn(qram.get("transferred"))
        if transferred is None:
            # unfinished: the windows miss bytes after the last one, the last poll misses
            # bytes after it; each is a lower bound, so take the larger
            win_sum = int(np.nansum(wb)) if len(w) else None
            cands = [(v, k) for v, k in ((win_sum, "migrate_transferred windows"),
                                         (tm.last_ram_bytes, "last query-migrate poll")) if v is not None]
            if cands:
                transferred, how = max(cands)
                sources["transferred_bytes"] = how
        states = [StateChange(t_ms=ms, state=s, side=side, origin="qemu-log" if o == "trace" else "qmp")
                  for ms, s, o in tm.statuses]
        dest_outcome = dest_start = dest_end = approved = None
        if dm is not None:
            if sm is not None:
                states += self._dest_states(dm, t0)
            dest_outcome = self.dest[dm]
            dest_start = _ms(int(T.t[self.timed_first[dm]]), t0) if self.timed_first[dm] >= 0 else None
            e = self.dest_end[dm] if self.dest_end[dm] >= 0 and not T.tna[self.dest_end[dm]] else self.timed_last[dm]
            dest_end = _ms(int(T.t[e]), t0) if e >= 0 and not T.tna[e] else None
            if self.approve[dm] >= 0 and not T.tna[self.approve[dm]]:
                approved = _ms(int(T.t[self.approve[dm]]), t0)
        if all(s.t_ms is not None for s in states):
            states.sort(key=lambda s: s.t_ms)
        ack = self.ack[m] if sm is not None else -1
        return Migration(
            index=index, outcome=tm.outcome, start_ns=t0, setup_ms=tm.setup_ms, total_ms=tm.total_ms,
            downtime_ms=tm.downtime_ms, dirty_syncs=dirty_syncs, converged=v.converged, verdict=v,
            checks=checks, passes=passes, devices=devs, states=tuple(states),
            switchover_ms=tm.switchover_ms, stopcopy_ms=tm.stopcopy_ms, downtime_limit_ms=dl,
            max_bandwidth_bytes_per_s=float(mbw) if isinstance(mbw, int | float) else None,
            transferred_bytes=transferred, error=tm.error, qemu_version=era.label, side=side,
            dest_outcome=dest_outcome if sm is not None else None, params=params,
            markers=tuple(markers), end_ns=tm.end_ns, dest_start_ms=dest_start, dest_end_ms=dest_end,
            switchover_ack_ms=_ms(int(T.t[ack]), t0) if ack >= 0 and not T.tna[ack] else None,
            switchover_approved_ms=approved, sources=sources,
            vfio_transferred_bytes=vt,
        )


def stream_eras(events: pd.DataFrame) -> dict[str, Era]:
    """The release family of each trace stream in ``events`` (for ``build_report(eras=...)``)."""
    sp = split(events)
    return _eras(sp.rows, sp.iso)


def build_report(events: pd.DataFrame, *, inputs: Iterable[str] = (), malformed: int = 0,
                 skipped: int = 0, warnings: Iterable[str] = (),
                 meta: Mapping[str, Any] | None = None, cache: PrefixCache | None = None,
                 eras: Mapping[str, Era] | None = None,
                 n_events: int | None = None) -> Report:
    """The whole model over one event table (any mix of sides and origins).

    Incremental builds (``profiler.model.incremental``) pass ``cache``, to reuse the Check/Pass
    objects of their earlier builds (see prefix_cache), and ``eras``: per trace stream, the era
    its events before ``events`` showed (merged with what ``events`` show).

    ``n_events``: the events the inputs held, when ``events`` holds only those the model
    reads (``names.used()``, as ``pipeline.load(keep=...)`` gives); default ``len(events)``."""
    missing = [c for c in E.COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"build_report: event table lacks columns {missing}")
    warn = list(warnings)
    inputs = tuple(str(x) for x in inputs)
    n_events = len(events) if n_events is None else int(n_events)
    sp = split(events)
    rows, spans = sp.rows, sp.spans
    glob = rows[rows["event"].isin([E.QMP_PARAMS, E.LAB_MARK]).to_numpy(dtype=bool)]
    glob = glob.sort_values(["t_ns", "_i"], kind="stable", na_position="first")
    T = build_table(rows, len(spans))
    seen = _eras(rows, sp.iso)
    if eras:
        seen = {s: e.merge(eras.get(s)) for s, e in seen.items()}
    b = _Builder(T, spans, seen, glob, warn, device_aliases(meta), cache)
    by_src = {s: d for d, s in sp.pairs.items()}
    src = spans[spans["side"] != "destination"].sort_values(["start_ns", "mig"], na_position="last")
    order: list[tuple[int | None, int | None]] = [(int(m), by_src.get(int(m))) for m in src["mig"]]
    order += [(None, int(m)) for m, s in zip(spans["mig"], spans["side"], strict=True)
              if s == "destination" and int(m) not in sp.pairs]
    migrations = [b.migration(i, sm, dm) for i, (sm, dm) in enumerate(order)]
    # what the kernel saw where the QEMU view has no migration (model/kernel.py says when)
    migrations += kernel_view(events, spans, first_index=len(migrations), warn=warn)
    migrations = findings.attach(events, migrations)
    migrations = pause.attach(events, migrations)
    if not migrations:
        warn.append(f"{', '.join(inputs) or 'input'}: no migration found ({n_events} events)")
    return Report(migrations=migrations, malformed_lines=int(malformed), skipped_lines=int(skipped),
                  events=n_events, warnings=tuple(warn), inputs=inputs)
