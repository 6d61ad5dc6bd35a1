"""Per device (RAM, each VFIO device, other save-state entries): bytes, pending, states, downtime.

VFIO pre-copy bytes are the ``vfio_save_block`` (7.2: ``vfio_save_buffer``) sizes before the
stop-and-copy starts, stop-copy bytes those after it (multifd stop-copy, >=10.0, prints no
blocks: then only the ``_thread_start``/``_end`` times are known). States come from
``vfio_migration_set_state`` (confirmed <=9.0, a request >=9.1),
``vfio_migration_set_device_state`` (confirmed, >=9.1), QMP ``VFIO_MIGRATION`` and BPF ioctl
events. ``vmstate_downtime_save``/``_load`` (microseconds, per SaveStateEntry idstr) give
``downtime_ms``/``load_ms``; a ``…/vfio`` idstr is joined to the VFIO host name through the
multifd thread event or the ``vfio_save_complete_precopy`` printed just before it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from profiler import events as E
from profiler.model import names as N
from profiler.model.migrations import _in, labels
from profiler.model.results import Device, StateChange
from profiler.model.version import Era

_VFIO_EVENTS_WITH_NAME = frozenset(
    [N.VFIO_PENDING_EST, N.VFIO_PENDING_EXACT, N.VFIO_SAVE_PENDING, N.VFIO_UPDATE_PENDING,
     N.VFIO_BLOCK, N.VFIO_BUFFER, N.VFIO_ITERATE, N.VFIO_SETUP, N.VFIO_SET_STATE,
     N.VFIO_SET_DEVICE_STATE, N.VFIO_VMSTATE_CHANGE, N.VFIO_VMSTATE_CHANGE_PREPARE,
     N.VFIO_COMPLETE, N.VFIO_COMPLETE_START, N.VFIO_THREAD_START, N.VFIO_THREAD_END,
     N.VFIO_LOAD_STATE, N.VFIO_LOAD_DATA, "vfio_save_iterate_start",
     "vfio_save_block_precopy_empty_hit"]
)


def _opt_int(v: Any) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def _t_ms(t: pd.Series, t0: int | None) -> np.ndarray:
    if t0 is None:
        return np.full(len(t), np.nan)
    return (t.astype("Float64") - t0).to_numpy(dtype="float64", na_value=np.nan) / 1e6


def idstr_names(src: pd.DataFrame) -> dict[str, str]:
    """SaveStateEntry idstr (``0000:00:03.0/vfio``) -> VFIO host name (``0000:3b:00.1``)."""
    name = src["event"]
    out: dict[str, str] = {}
    th = src[name.eq(N.VFIO_THREAD_START).to_numpy(dtype=bool)]
    for idstr, dev in zip(th["detail"].tolist(), th["device"].tolist(), strict=True):
        if pd.notna(idstr) and pd.notna(dev):
            out[str(idstr)] = str(dev)
    # non-multifd: the entry's downtime line follows its own vfio_save_complete_precopy
    last_dev = src["device"].where(name.isin([N.VFIO_COMPLETE, N.VFIO_COMPLETE_START])).ffill()
    dsave = name.eq(N.DOWNTIME_SAVE).to_numpy(dtype=bool)
    for idstr, dev in zip(src["device"][dsave].tolist(), last_dev[dsave].tolist(), strict=True):
        if isinstance(idstr, str) and idstr.endswith("vfio") and idstr not in out and pd.notna(dev):
            out[idstr] = str(dev)
    return out


def _state_changes(rows: pd.DataFrame, t0: int | None, era: Era, side: str) -> pd.DataFrame:
    name = rows["event"]
    m = name.isin([N.VFIO_SET_STATE, N.VFIO_SET_DEVICE_STATE, E.QMP_VFIO_MIGRATION, E.BPF_IOCTL])
    if not m.any():
        return pd.DataFrame(columns=["device", "t_ms", "state", "side", "confirmed", "origin"])
    m &= rows["state"].notna() & rows["device"].notna()
    r = rows[m.to_numpy(dtype=bool)]
    rn = name[m.to_numpy(dtype=bool)]
    has_confirm = bool(name.eq(N.VFIO_SET_DEVICE_STATE).any())
    request = rn.eq(N.VFIO_SET_STATE) & (era.set_state_is_request or has_confirm
                                         or bool(r["detail"].notna().any()))
    bpf_bad = rn.eq(E.BPF_IOCTL) & ~r["ret"].fillna(-1).eq(0)
    origin = np.where(rn.eq(E.QMP_VFIO_MIGRATION), "qmp",
                      np.where(rn.eq(E.BPF_IOCTL), "bpf", "qemu-log"))
    return pd.DataFrame({
        "device": r["device"].astype(str).to_numpy(),
        "t_ms": _t_ms(r["t_ns"], t0),
        "state": r["state"].astype(str).to_numpy(),
        "side": r["side_r"].astype(str).to_numpy() if "side_r" in r.columns else side,
        "confirmed": ~(request | bpf_bad).to_numpy(dtype=bool),
        "origin": origin,
    })


def _downtime(rows: pd.DataFrame, event: str) -> pd.Series:
    """idstr -> ms, summed over instances."""
    d = rows[(rows["event"] == event).to_numpy(dtype=bool)]
    if not len(d):
        return pd.Series(dtype="float64")
    return (d["dur_ns"].astype("Float64") / 1e6).groupby(d["device"].astype(str), sort=False).sum()


def _rows(df: pd.DataFrame, events) -> pd.DataFrame:
    """The (few) rows of ``df`` whose event is in ``events``, keeping their positions as index."""
    if not len(df):
        return df
    return df.take(np.flatnonzero(_in(labels(df["event"], ""), events)))


def devices(src: pd.DataFrame, dst: pd.DataFrame, aux: pd.DataFrame, *, t0: int | None,
            switch_pos: int | None, era: Era, ram: dict[str, Any]) -> tuple[Device, ...]:
    """All devices of one migration: ``ram`` first, VFIO devices, then other entries.

    ``src``/``dst`` are the trace rows of each side (ordered, indexed by position), ``aux`` the
    QMP/BPF rows; ``ram`` holds RAM values computed elsewhere (QMP bytes, pending).
    """
    # everything below works on the few rows that name a device, never on the whole trace
    sv = _rows(src, _VFIO_EVENTS_WITH_NAME)
    sv = sv[sv["device"].notna().to_numpy(dtype=bool)]
    dv = _rows(dst, _VFIO_EVENTS_WITH_NAME)
    dv = dv[dv["device"].notna().to_numpy(dtype=bool)] if len(dv) else dv
    av = _rows(aux, (E.QMP_VFIO_MIGRATION, E.BPF_IOCTL))
    av = av[av["device"].notna().to_numpy(dtype=bool)] if len(av) else av
    names: list[str] = []
    for part in (sv, dv, av):
        if len(part):
            names += [n for n in pd.unique(part["device"].astype(str)) if n not in names]
    cut = switch_pos if switch_pos is not None else np.iinfo(np.int64).max
    vname = labels(sv["event"], "") if len(sv) else np.array([], dtype=object)
    pre = sv.index.to_numpy() < cut

    # bytes read from the device, split at the stop-and-copy start
    blk_m = _in(vname, (N.VFIO_BLOCK, N.VFIO_BUFFER)) & sv["bytes"].notna().to_numpy(dtype=bool)
    blk = sv[blk_m]
    sums = blk["bytes"].astype("int64").groupby(
        [blk["device"].astype(str).to_numpy(), np.where(pre[blk_m], "pre", "stop")]).sum() \
        if len(blk) else pd.Series(dtype="int64")
    # pre-copy sizes as the device reports them (GET_PRECOPY_INFO via save_iterate / pending)
    devcol = sv["device"].astype(str)
    init_first = sv["init_bytes"].groupby(devcol, sort=False).first() if len(sv) else pd.Series(dtype="Int64")
    dirty_last = sv["dirty_bytes"][pre].groupby(devcol[pre], sort=False).last() if len(sv) else pd.Series(dtype="Int64")
    stop_last = sv["stopcopy_bytes"].groupby(devcol, sort=False).last() if len(sv) else pd.Series(dtype="Int64")
    # multifd stop-copy thread (>=10.0)
    th: dict[str, dict[str, Any]] = {}
    for ev_name, key in ((N.VFIO_THREAD_START, "start"), (N.VFIO_THREAD_END, "end")):
        r = sv[vname == ev_name]
        for dev, t in zip(r["device"].astype(str).tolist(), r["t_ns"].tolist(), strict=True):
            th.setdefault(dev, {})[key] = t
    parts = [x for x in (_state_changes(sv, t0, era, "source"),
                         _state_changes(dv, t0, era, "destination") if len(dv) else None,
                         _state_changes(av, t0, era, "source") if len(av) else None)
             if x is not None and len(x)]
    by_dev: dict[str, pd.DataFrame] = {}
    if parts:
        states = pd.concat(parts, ignore_index=True).sort_values("t_ms", kind="stable", na_position="last")
        by_dev = {d: g for d, g in states.groupby("device", sort=False)}
    dsave = _rows(src, (N.DOWNTIME_SAVE,))
    save = _downtime(dsave, N.DOWNTIME_SAVE)
    load = _downtime(_rows(dst, (N.DOWNTIME_LOAD,)), N.DOWNTIME_LOAD) if len(dst) else pd.Series(dtype="float64")
    idmap = idstr_names(pd.concat([sv, dsave]).sort_index()) if len(sv) else {}
    only = [i for i in list(save.index) + list(load.index) if i.endswith("vfio") and i not in idmap]
    if len(names) == 1 and len(set(only)) == 1:
        idmap[only[0]] = names[0]
    rev = {v: k for k, v in idmap.items()}

    def _f(s: pd.Series, k: str | None) -> float | None:
        if k is None or k not in s.index or pd.isna(s[k]):
            return None
        return float(s[k])

    out = [Device(
        name="ram", kind="ram", precopy_bytes=ram.get("precopy_bytes"),
        stopcopy_bytes=ram.get("stopcopy_bytes"),
        initial_pending_bytes=ram.get("initial_pending_bytes"),
        dirty_pending_bytes=ram.get("dirty_pending_bytes"),
        downtime_ms=_f(save, "ram"), load_ms=_f(load, "ram"), idstr="ram",
    )]
    for dev in names:
        idstr = rev.get(dev)
        t = th.get(dev, {})
        thread_ms = ((t["end"] - t["start"]) / 1e6 if pd.notna(t.get("start")) and pd.notna(t.get("end"))
                     else None) if t else None
        sg = by_dev.get(dev)
        st = tuple(StateChange(t_ms=None if np.isnan(tm) else float(tm), state=s, side=sd,
                               confirmed=bool(c), origin=o)
                   for tm, s, sd, c, o in zip(sg["t_ms"], sg["state"], sg["side"], sg["confirmed"],
                                              sg["origin"], strict=True)) if sg is not None else ()
        has_pre, has_stop = (dev, "pre") in sums.index, (dev, "stop") in sums.index
        out.append(Device(
            name=dev, kind="vfio",
            precopy_bytes=_opt_int(sums.get((dev, "pre"))) if has_pre else (0 if has_stop else None),
            stopcopy_bytes=_opt_int(sums.get((dev, "stop"))) if has_stop else None,
            initial_pending_bytes=_opt_int(init_first.get(dev)),
            dirty_pending_bytes=_opt_int(dirty_last.get(dev)),
            stopcopy_size_bytes=_opt_int(stop_last.get(dev)),
            downtime_ms=_f(save, idstr), load_ms=_f(load, idstr), idstr=idstr, states=st,
            stopcopy_thread_ms=thread_ms,
        ))
    used = set(idmap) | {"ram"}
    for idstr in list(save.index) + [i for i in load.index if i not in save.index]:
        if idstr in used:
            continue
        out.append(Device(name=idstr, kind="other", downtime_ms=_f(save, idstr),
                          load_ms=_f(load, idstr), idstr=idstr))
    return tuple(out)
