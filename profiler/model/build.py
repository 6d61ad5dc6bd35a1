"""Build the report: split into migrations, then checks, passes, devices, times and verdict each."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from profiler import events as E
from profiler.model import names as N
from profiler.model.checks import checks as find_checks
from profiler.model.devices import devices as find_devices
from profiler.model.migrations import split
from profiler.model.outcome import Times, dest_outcome, times
from profiler.model.passes import passes as find_passes
from profiler.model.results import Check, Migration, Pass, Report, StateChange
from profiler.model.verdict import rates, sync_dirty_rate, verdict
from profiler.model.version import Era, detect

_PARAM_KEYS = ("downtime-limit", "max-bandwidth", "avail-switchover-bandwidth")


def _none(v: Any) -> Any:
    if v is None:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        return v
    return v.item() if hasattr(v, "item") else v


def _plain(s: pd.Series) -> list:
    """A nullable column as a list of Python scalars, NA -> None."""
    return s.astype(object).where(s.notna(), None).tolist()


def _ms(t: Any, t0: int | None) -> float | None:
    t = _none(t)
    return None if t is None or t0 is None else (int(t) - t0) / 1e6


def _json(detail: Any) -> dict[str, Any]:
    if _none(detail) is None:
        return {}
    try:
        d = json.loads(detail)
    except (TypeError, ValueError):
        return {}
    if isinstance(d, dict) and isinstance(d.get("return"), dict):
        d = d["return"]
    return d if isinstance(d, dict) else {}


def _per_check(contrib: pd.DataFrame, n: int) -> dict[int, dict[str, int]]:
    """check index -> {device: pending bytes}, via one (checks x devices) matrix."""
    if not len(contrib) or not n:
        return {}
    col, devs = pd.factorize(contrib["device"].to_numpy(dtype=object))  # ram first, then as seen
    mat = np.full((n, len(devs)), -1, dtype=np.int64)
    mat[contrib["chk"].to_numpy(dtype=np.int64), col] = contrib["bytes"].to_numpy(dtype=np.int64)
    names = [str(d) for d in devs]
    return {i: {d: v for d, v in zip(names, row, strict=True) if v >= 0}
            for i, row in enumerate(mat.tolist())}


def _params(glob: pd.DataFrame, t0: int | None, end_ns: int | None) -> tuple[dict, list[dict]]:
    """Migration parameters in force at ``end_ns`` and the markers inside the migration."""
    params: dict[str, Any] = {}
    markers: list[dict] = []
    if not len(glob):
        return params, markers
    g = glob.sort_values(["t_ns", "_i"], kind="stable", na_position="first")
    for ev, t, detail in zip(g["event"].astype(str), g["t_ns"].tolist(), g["detail"].tolist(), strict=True):
        t = _none(t)
        if end_ns is not None and t is not None and t > end_ns:
            break
        inside = t0 is not None and t is not None and t >= t0
        d = _json(detail)
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
                label = str(d.get("label") or d.get("action") or detail)
                if setp:
                    label += " " + ", ".join(f"{k}={v}" for k, v in setp.items())
                markers.append({"t_ms": _ms(t, t0), "label": label})
    return params, markers


def _infer_downtime_limit(win: pd.DataFrame) -> float | None:
    """downtime-limit = max_size / bandwidth of the same window (bytes / bytes per ms)."""
    w = win[(win["bw"].fillna(0) > 0) & (win["threshold"].fillna(0) > 0)]
    if not len(w):
        return None
    r = w.iloc[-1]
    per_ms = float(r["sbw"]) if pd.notna(r["sbw"]) and r["sbw"] > 0 else float(r["bw"])
    return float(round(float(r["threshold"]) / per_ms))


def _statuses(t: Times, dst: pd.DataFrame, t0: int | None) -> tuple[StateChange, ...]:
    out = [StateChange(t_ms=ms, state=s, side="source", origin="qemu-log" if o == "trace" else "qmp")
           for ms, s, o in t.statuses]
    if len(dst):
        name = dst["event"]
        d = dst[name.eq(N.STATUS).to_numpy(dtype=bool) & dst["state"].notna().to_numpy(dtype=bool)]
        out += [StateChange(t_ms=_ms(tt, t0), state=str(s), side="destination")
                for tt, s in zip(d["t_ns"].tolist(), d["state"].tolist(), strict=True)]
    if all(s.t_ms is not None for s in out):
        out.sort(key=lambda s: s.t_ms)
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _empty() -> pd.DataFrame:
    from profiler.model.migrations import KEEP

    cols = [c for c in KEEP if c not in ("side", "origin", "file", "seq")]
    return E.empty_frame()[cols].assign(side_r=pd.Series(dtype=object), pos=pd.Series(dtype="int64"),
                                        trace=pd.Series(dtype="bool"), hexsize=pd.Series(dtype="bool"))


def _frame(rows: pd.DataFrame | None) -> pd.DataFrame:
    if rows is None or not len(rows):
        return _empty().copy()
    return rows.sort_values("pos", kind="stable").reset_index(drop=True)


def _migration(index: int, src: pd.DataFrame, aux: pd.DataFrame, dst: pd.DataFrame,
               daux: pd.DataFrame, glob: pd.DataFrame, t0: int | None, side: str,
               warn: list[str], era: Era) -> Migration:
    # a destination-only migration is described by the destination's rows
    dest_only = side == "destination"
    t = times(dst if dest_only else src, daux if dest_only else aux, t0)
    chk, contrib = find_checks(src, era)
    name = src["event"]
    low = np.flatnonzero(name.eq(N.LOW_PENDING).fillna(False).to_numpy(dtype=bool))
    decided_pos = int(low[0]) if len(low) else None
    trm = name.eq(N.TRANSFERRED).fillna(False).to_numpy(dtype=bool)
    win = pd.DataFrame({"pos": np.flatnonzero(trm), "bytes": src["bytes"][trm].astype("Float64").to_numpy(),
                        "dur_ns": src["dur_ns"][trm].astype("Float64").to_numpy(),
                        "bw": src["bw_bytes_per_ms"][trm].astype("Float64").to_numpy(),
                        "sbw": src["count"][trm].astype("Float64").to_numpy(),
                        "threshold": src["threshold_bytes"][trm].astype("Float64").to_numpy()})
    pas = find_passes(src, t.setup_done_pos, t.switch_pos)
    sources = dict(t.sources)
    qmp = t.qmp
    qram = qmp.get("ram") if isinstance(qmp.get("ram"), dict) else {}
    if len(pas):
        dirty_syncs = len(pas)
        sources["dirty_syncs"] = "trace"
        q = qram.get("dirty-sync-count")
        if isinstance(q, int) and q != dirty_syncs and qmp.get("status") == "completed":
            warn.append(f"migration {index}: trace shows {dirty_syncs} dirty syncs, query-migrate "
                        f"{q} (sync events missing from the trace?)")
    elif isinstance(qram.get("dirty-sync-count"), int):
        dirty_syncs = int(qram["dirty-sync-count"])
        sources["dirty_syncs"] = "query-migrate"
    else:
        mp = aux["count"].where(aux["event"] == E.QMP_MIGRATION_PASS).dropna()
        dirty_syncs = int(mp.max()) if len(mp) else 0
        sources["dirty_syncs"] = "MIGRATION_PASS" if len(mp) else "none"
    end_for_params = t.end_ns
    mine = glob[(glob["side_r"] == side).to_numpy(dtype=bool)] if len(glob) else glob
    params, markers = _params(mine, t0, end_for_params)
    dl = params.get("downtime-limit")
    dl = float(dl) if isinstance(dl, int | float) else None
    if dl is not None:
        sources["downtime_limit_ms"] = "qmp"
    else:
        dl = _infer_downtime_limit(win)
        if dl is not None:
            sources["downtime_limit_ms"] = "trace (max_size / bandwidth)"
    mbw = params.get("max-bandwidth")
    dirty, bw = rates(chk, contrib, win, decided_pos)
    by_sync = sync_dirty_rate(pas, int(qram.get("page-size") or 4096))
    if by_sync is not None:
        dirty = by_sync
        sources["dirty_rate"] = "sync dirty_pages"
    elif dirty is not None:
        sources["dirty_rate"] = "pending increases"
    if dirty is None and qram.get("dirty-pages-rate") and qram.get("page-size"):
        dirty = float(qram["dirty-pages-rate"] * qram["page-size"])
    if bw is None and isinstance(qram.get("mbps"), int | float):
        bw = float(qram["mbps"]) * 1e6 / 8
    v = verdict(chk, contrib, decided_pos=decided_pos, outcome=t.outcome, dirty_rate=dirty,
                bandwidth=bw, downtime_limit_ms=dl)
    # per-check device dicts
    per = _per_check(contrib, len(chk))
    before = chk[chk["pos"] < decided_pos] if decided_pos is not None else chk
    ram = {"initial_pending_bytes": per.get(0, {}).get("ram") if len(chk) else None,
           "dirty_pending_bytes": per.get(len(before) - 1, {}).get("ram") if len(before) else None,
           "precopy_bytes": _none(qram.get("precopy-bytes")),
           "stopcopy_bytes": _none(qram.get("downtime-bytes"))}
    devs = find_devices(src, dst, pd.concat([aux, daux]) if len(daux) else aux, t0=t0,
                        switch_pos=t.switch_pos, era=era, ram=ram)
    # columns -> plain Python lists once (NA -> None); the per-check loop only packs values
    t_ms = ((chk["t_ns"].astype("Float64") - t0) / 1e6) if t0 is not None else chk["t_ns"].astype("Float64") * np.nan
    cols = [_plain(t_ms), chk["kind"].astype(str).tolist(), _plain(chk["pending"])] + [
        _plain(chk[c]) for c in ("threshold", "pre", "post", "below", "pass_no", "gap", "bw")] + [
        chk["decisive"].tolist()]
    check_objs = tuple(
        Check(t_ms=tm, kind=k, pending_bytes=p, threshold_bytes=th, pre_bytes=pr, post_bytes=po,
              below_threshold=bl, pass_no=pn, devices=per.get(i, {}), gap_bytes=gp,
              bandwidth_bytes_per_ms=bwv, decisive=dc)
        for i, (tm, k, p, th, pr, po, bl, pn, gp, bwv, dc) in enumerate(zip(*cols, strict=True)))
    pass_objs = tuple(
        Pass(n=int(n), t_ms=_ms(tn, t0), dur_ms=None if _none(d) is None else int(d) / 1e6,
             dirty_pages=_none(dp), phase=str(ph))
        for n, tn, d, dp, ph in zip(pas["n"].tolist(), pas["t_ns"].tolist(), pas["dur_ns"].tolist(),
                                    pas["dirty_pages"].tolist(), pas["phase"].tolist(), strict=True))
    transferred = _none(qram.get("transferred"))
    if transferred is None and len(win):
        transferred = int(win["bytes"].sum())
        sources["transferred_bytes"] = "migrate_transferred windows"
    sw = name.eq(N.SWITCHOVER_ACKED).fillna(False).to_numpy(dtype=bool)
    ap = dst["event"].eq(N.DEST_ACK_APPROVE).to_numpy(dtype=bool) if len(dst) else np.zeros(0, dtype=bool)
    dname = dst["event"] if len(dst) else None
    dest_end = None
    if dname is not None:
        fin = dst[(dname.isin([N.STATUS, N.DEST_END])).to_numpy(dtype=bool)]
        last = fin["t_ns"].dropna()
        dest_end = _ms(last.iloc[-1] if len(last) else dst["t_ns"].dropna().max() if dst["t_ns"].notna().any() else None, t0)
    return Migration(
        index=index, outcome=t.outcome, start_ns=t0, setup_ms=t.setup_ms, total_ms=t.total_ms,
        downtime_ms=t.downtime_ms, dirty_syncs=dirty_syncs, converged=v.converged, verdict=v,
        checks=check_objs, passes=pass_objs, devices=devs, states=_statuses(t, dst, t0),
        switchover_ms=t.switchover_ms, stopcopy_ms=t.stopcopy_ms, downtime_limit_ms=dl,
        max_bandwidth_bytes_per_s=float(mbw) if isinstance(mbw, int | float) else None,
        transferred_bytes=transferred, error=t.error, qemu_version=era.label, side=side,
        dest_outcome=dest_outcome(pd.concat([dst, daux]) if len(daux) else dst) if len(dst) or len(daux) else None,
        params=params,
        markers=tuple(markers), end_ns=t.end_ns,
        dest_start_ms=_ms(dst["t_ns"].dropna().min(), t0) if len(dst) and dst["t_ns"].notna().any() else None,
        dest_end_ms=dest_end,
        switchover_ack_ms=_ms(src["t_ns"][sw].iloc[0], t0) if sw.any() else None,
        switchover_approved_ms=_ms(dst["t_ns"][ap].iloc[0], t0) if ap.any() else None,
        sources=sources,
    )


def build_report(events: pd.DataFrame, *, inputs: Iterable[str] = (), malformed: int = 0,
                 skipped: int = 0, warnings: Iterable[str] = (),
                 meta: Mapping[str, Any] | None = None) -> Report:
    """The whole model over one event table (any mix of sides and origins)."""
    missing = [c for c in E.COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"build_report: event table lacks columns {missing}")
    warn = list(warnings)
    sp = split(events)
    rows, spans = sp.rows, sp.spans
    glob = rows[rows["event"].isin([E.QMP_PARAMS, E.LAB_MARK]).to_numpy(dtype=bool)]
    # per-migration frames carry only what the model modules read (every subset copies them)
    keep = rows["mig"].notna().to_numpy(dtype=bool)
    cols = [c for c in rows.columns if c not in ("_i", "stream", "seq", "mig")]
    groups = {int(k): g for k, g in rows.loc[keep, cols].groupby(rows["mig"][keep].to_numpy(), sort=False)}

    def parts(mig: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
        g = groups.get(mig) if mig is not None else None
        if g is None:
            return _frame(None), _frame(None)
        tr = g["trace"].to_numpy(dtype=bool)
        return _frame(g[tr]), _frame(g[~tr])

    by_src = {s: d for d, s in sp.pairs.items()}
    src_spans = spans[spans["side"] != "destination"].sort_values(["start_ns", "mig"], na_position="last")
    order: list[tuple[int | None, int | None, Any]] = [
        (int(m), by_src.get(int(m)), s) for m, s in zip(src_spans["mig"], src_spans["start_ns"], strict=True)]
    paired = set(sp.pairs)
    for m, s in zip(spans["mig"], spans["start_ns"], strict=True):
        if spans.loc[spans["mig"] == m, "side"].iloc[0] == "destination" and int(m) not in paired:
            order.append((None, int(m), s))
    # the release family is a property of the stream (file), not of one migration in it
    tr = rows["trace"].to_numpy(dtype=bool)
    eras = {st: detect(g, sp.iso.get(st))
            for st, g in rows.loc[tr, ["event", "detail", "count", "stream"]].groupby("stream", sort=False)}
    stream_of = dict(zip(spans["mig"], spans["stream"], strict=True))
    migrations = []
    for i, (sm, dm, start) in enumerate(order):
        src, aux = parts(sm)
        dst, daux = parts(dm)
        t0 = _none(start)
        t0 = int(t0) if t0 is not None else None
        side = "source" if sm is not None else "destination"
        era = eras.get(stream_of.get(sm if sm is not None else dm)) or detect(src if len(src) else dst)
        migrations.append(_migration(i, src, aux, dst, daux, glob, t0, side, warn, era))
    if not migrations:
        where = ", ".join(inputs) if inputs else "input"
        warn.append(f"{where}: no migration found ({len(events)} events)")
    return Report(migrations=tuple(migrations), malformed_lines=int(malformed),
                  skipped_lines=int(skipped), events=len(events), warnings=tuple(warn),
                  inputs=tuple(str(x) for x in inputs))
