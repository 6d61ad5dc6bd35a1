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

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from profiler import events as E
from profiler.model import names as N
from profiler.model.migrations import _in
from profiler.model.results import Device, StateChange
from profiler.model.table import Table, notnone
from profiler.model.version import Era

_NAMED = frozenset(
    [N.VFIO_PENDING_EST, N.VFIO_PENDING_EXACT, N.VFIO_SAVE_PENDING, N.VFIO_UPDATE_PENDING,
     N.VFIO_BLOCK, N.VFIO_BUFFER, N.VFIO_ITERATE, N.VFIO_SETUP, N.VFIO_SET_STATE,
     N.VFIO_SET_DEVICE_STATE, N.VFIO_VMSTATE_CHANGE, N.VFIO_VMSTATE_CHANGE_PREPARE,
     N.VFIO_COMPLETE, N.VFIO_COMPLETE_START, N.VFIO_THREAD_START, N.VFIO_THREAD_END,
     N.VFIO_LOAD_STATE, N.VFIO_LOAD_DATA, N.VFIO_ITERATE_START,
     N.VFIO_EMPTY_HIT, E.QMP_VFIO_MIGRATION, E.BPF_IOCTL,
     E.BPF_DATA_READ, E.BPF_DATA_WRITE, E.BPF_PRECOPY_INFO]
)
_STATE_EVENTS = (N.VFIO_SET_STATE, N.VFIO_SET_DEVICE_STATE, E.QMP_VFIO_MIGRATION, E.BPF_IOCTL)
_PRE_PHASES = frozenset(["PRE_COPY", "PRE_COPY_P2P"])
_STOP_PHASES = frozenset(["STOP_COPY"])


class Index:
    """The device rows and downtime rows of every migration, found once for the whole table."""

    def __init__(self, T: Table):
        self.T = T
        self.vf = np.flatnonzero(T.is_(*_NAMED) & notnone(T.device))
        self.dt = np.flatnonzero(T.is_(N.DOWNTIME_SAVE, N.DOWNTIME_LOAD) & notnone(T.device))
        self.vf_lo, self.vf_hi = np.searchsorted(self.vf, T.start), np.searchsorted(self.vf, T.end)
        self.dt_lo, self.dt_hi = np.searchsorted(self.dt, T.start), np.searchsorted(self.dt, T.end)

    def vfio(self, m: int | None) -> np.ndarray:
        return self.vf[self.vf_lo[m]:self.vf_hi[m]] if m is not None else self.vf[:0]

    def downtime(self, m: int | None, event: str) -> dict[str, float]:
        """idstr -> ms, summed over instances (and iterable/non-iterable entries)."""
        out: dict[str, float] = {}
        if m is None:
            return out
        T = self.T
        for i in self.dt[self.dt_lo[m]:self.dt_hi[m]]:
            if T.name[i] == event and not math.isnan(T.num["dur_ns"][i]):
                out[T.device[i]] = out.get(T.device[i], 0.0) + T.num["dur_ns"][i] / 1e6
        return out


def _opt(v: float | None) -> int | None:
    return None if v is None or math.isnan(v) else int(v)


def _states(T: Table, rows: np.ndarray, names_: np.ndarray, t0: int | None, era: Era
            ) -> list[tuple[str, StateChange]]:
    """State changes of ``rows`` (``names_``: their canonical device names)."""
    if not len(rows):
        return []
    sel = T.is_(*_STATE_EVENTS)[rows] & notnone(T.state[rows])
    r, rn = rows[sel], names_[sel]
    if not len(r):
        return []
    names = T.name[r]
    is_req = bool(era.set_state_is_request or (names == N.VFIO_SET_DEVICE_STATE).any()
                  or notnone(T.detail[r[names == N.VFIO_SET_STATE]]).any())
    out = []
    for i, nm, dev in zip(r.tolist(), names.tolist(), rn.tolist(), strict=True):
        if nm == E.QMP_VFIO_MIGRATION:
            origin, confirmed = "qmp", True
        elif nm == E.BPF_IOCTL:
            d = T.detail[i]
            if d is not None and ("SET" not in str(d) or "PROBE" in str(d)):
                continue  # a GET answer or a PROBE, not a change
            origin, confirmed = "bpf", T.num["ret"][i] == 0  # the kernel accepted the SET
        else:
            origin, confirmed = "qemu-log", not (nm == N.VFIO_SET_STATE and is_req)
        t_ms = (int(T.t[i]) - t0) / 1e6 if t0 is not None and not T.tna[i] else None
        out.append((dev, StateChange(t_ms=t_ms, state=str(T.state[i]), side=str(T.side[i]),
                                     confirmed=bool(confirmed), origin=origin)))
    return out


def canonical(T: Table, rows: np.ndarray, side: str, aliases: dict[tuple[str, str], str]
              ) -> tuple[np.ndarray, dict[str, set[str]]]:
    """The device name of each of ``rows`` (one side's device rows) as the trace prints it.

    Trace rows keep their name. A QMP device-id or BPF name takes: the same trace name; else
    the host name the command line maps it to (``aliases``); else, when the side's trace
    names exactly one VFIO device, that one (VFIO_MIGRATION and data-fd calls can only be
    about it). Otherwise it stays as it is. Returns the names and {name: other names}."""
    dev = T.device[rows].astype(object)
    if not len(rows):
        return dev, {}
    tr = T.trace[rows]
    traced = [str(x) for x in pd.unique(dev[tr])]
    known = set(traced)
    out = dev.copy()
    joined: dict[str, set[str]] = {}
    other = np.flatnonzero(~tr)
    for name in pd.unique(dev[other]).tolist():
        name = str(name)
        if name in known:
            continue
        # a QMP id or a BPF fd name can only be the one traced device; a real device name BPF
        # learnt (group ioctl, fdinfo) that differs from it is another device
        guess = traced[0] if len(traced) == 1 and (_FD_NAME.match(name) or not _is_bpf(T, rows, dev, name)) else None
        to = aliases.get((side, name)) or guess
        if to is None or to == name:
            continue
        out[other[dev[other] == name]] = to
        joined.setdefault(to, set()).add(name)
    return out, joined


_FD_NAME = re.compile(r"fd\d+$")
_BPF_EVENTS = (E.BPF_IOCTL, E.BPF_DATA_READ, E.BPF_DATA_WRITE, E.BPF_PRECOPY_INFO)


def _is_bpf(T: Table, rows: np.ndarray, dev: np.ndarray, name: str) -> bool:
    """Whether ``name`` comes from BPF rows (else QMP) among ``rows``."""
    return bool(T.is_(*_BPF_EVENTS)[rows[dev == name]].any())


def _us(v: np.ndarray, q: float | None) -> float | None:
    v = v[~np.isnan(v)]
    if not len(v):
        return None
    return float(np.max(v) if q is None else np.percentile(v, q)) / 1e3


def _bpf_io(T: Table, rows: np.ndarray, names_: np.ndarray, cut_t: float) -> dict[str, dict[str, Any]]:
    """Per device: data-fd reads/writes (calls, ms, latency), bytes per phase, and the BPF
    pre-copy/stop-copy bytes (reads by the phase BPF charged them to; writes, and reads of
    unknown phase, by time against the source's stop-copy start ``cut_t``, ns on t_at's scale)."""
    io = T.is_(E.BPF_DATA_READ, E.BPF_DATA_WRITE)[rows]
    r, rn = rows[io], names_[io]
    out: dict[str, dict[str, Any]] = {}
    if not len(r):
        return out
    code, uniq = pd.factorize(rn)
    is_rd = T.name[r] == E.BPF_DATA_READ
    b = np.nan_to_num(T.num["bytes"][r])
    dur = T.num["dur_ns"][r]
    phase = T.state[r]
    has_phase = notnone(phase)
    ph = np.where(has_phase, phase, "?").astype(object)
    pre_ph, stop_ph = _in(ph, _PRE_PHASES), _in(ph, _STOP_PHASES)
    t = T.t_at(r)
    late = ~np.isnan(t) & (t >= cut_t) if not np.isnan(cut_t) else np.zeros(len(r), dtype=bool)
    by_time = ~is_rd | ~(pre_ph | stop_ph)
    pre = np.where(by_time, ~late, pre_ph)
    for k, dev in enumerate(str(u) for u in uniq):
        mine = code == k
        d: dict[str, Any] = {}
        for what, m in (("read", mine & is_rd), ("write", mine & ~is_rd)):
            if m.any():
                d[f"{what}_calls"] = int(m.sum())
                d[f"{what}_ms"] = float(np.nansum(dur[m])) / 1e6
                d[f"{what}_p50_us"] = _us(dur[m], 50)
                d[f"{what}_max_us"] = _us(dur[m], None)
        phases, sums = np.unique(ph[mine], return_inverse=True)
        tot = np.bincount(sums, weights=b[mine], minlength=len(phases))
        d["bytes_by_phase"] = {str(p): int(v) for p, v in zip(phases.tolist(), tot.tolist(), strict=True)}
        src = mine & is_rd if (mine & is_rd).any() else mine  # a device read on one side is the source's
        if np.isnan(cut_t) and (src & by_time).any():
            d["pre"] = d["stop"] = None  # no stop-copy start to split the writes at
        else:
            d["pre"] = int(b[src & pre].sum())
            d["stop"] = int(b[src & ~pre].sum())
        out[dev] = d
    return out


def _pick(code: np.ndarray, uniq: list[str], v: np.ndarray, where: np.ndarray, first: bool) -> dict[str, float]:
    """Per device: the first (or last) non-NaN value of ``v`` among rows ``where``."""
    idx = np.flatnonzero(where & ~np.isnan(v))
    out: dict[str, float] = {}
    if not len(idx):
        return out
    c = code[idx]
    for k, name in enumerate(uniq):  # a handful of devices: one vectorised scan each
        hit = np.flatnonzero(c == k)
        if len(hit):
            out[name] = float(v[idx[hit[0] if first else hit[-1]]])
    return out


def _idstr_names(T: Table, rows: np.ndarray, dts: np.ndarray) -> dict[str, str]:
    """SaveStateEntry idstr (``0000:00:03.0/vfio``) -> VFIO host name (``0000:3b:00.1``)."""
    out: dict[str, str] = {}
    for i in rows[T.name[rows] == N.VFIO_THREAD_START]:
        if T.detail[i] is not None:
            out[str(T.detail[i])] = str(T.device[i])
    # non-multifd: the entry's downtime line follows its own vfio_save_complete_precopy
    done = rows[T.is_(N.VFIO_COMPLETE, N.VFIO_COMPLETE_START)[rows]]
    for i in dts:
        idstr = T.device[i]
        if T.name[i] == N.DOWNTIME_SAVE and idstr.endswith("vfio") and idstr not in out:
            j = np.searchsorted(done, i) - 1
            if j >= 0:
                out[idstr] = str(T.device[done[j]])
    return out


def devices(ix: Index, src: int | None, dst: int | None, *, t0: int | None, switch: int,
            era: Era, ram: dict[str, Any], aliases: dict[tuple[str, str], str] | None = None,
            warn: list[str] | None = None, label: str = "migration") -> tuple[Device, ...]:
    """All devices of one migration (table ids ``src``/``dst``, either may be None): ``ram``
    first, VFIO devices, then other entries. ``switch`` is the stop-copy start row (-1).
    ``aliases``: (side, QMP id or BPF name) -> host name; disagreements between the trace
    and BPF go to ``warn`` prefixed with ``label``."""
    T = ix.T
    aliases = aliases or {}
    sv, dv = ix.vfio(src), ix.vfio(dst)
    s_names, s_join = canonical(T, sv, "source", aliases)
    d_names, d_join = canonical(T, dv, "destination", aliases)
    s_uniq = [str(x) for x in pd.unique(s_names)]
    d_uniq = [str(x) for x in pd.unique(d_names)]
    names: list[str] = list(dict.fromkeys(s_uniq + d_uniq))
    sides = {n: "source" for n in s_uniq}
    for n in d_uniq:
        sides[n] = "both" if sides.get(n) == "source" else "destination"
    joined = {k: s_join.get(k, set()) | d_join.get(k, set()) for k in set(s_join) | set(d_join)}
    cut = switch if switch >= 0 else np.iinfo(np.int64).max
    cut_t = float(T.t_at(np.array([switch]))[0]) if switch >= 0 else math.nan
    sums: dict[tuple[str, str], int] = {}
    init_first: dict[str, float] = {}
    dirty_last: dict[str, float] = {}
    stop_last: dict[str, float] = {}
    thread: dict[str, dict[str, int]] = {}
    r = sv[T.trace[sv]]
    if len(r):
        # per device via factorised codes and numpy (no per-migration pandas groupby)
        code, uniq = pd.factorize(T.device[r])
        uniq = [str(u) for u in uniq]
        pre = r < cut
        b = T.num["bytes"][r]
        blk = T.is_(N.VFIO_BLOCK, N.VFIO_BUFFER)[r] & ~np.isnan(b)
        for flag, tag in ((pre, "pre"), (~pre, "stop")):
            sel = blk & flag
            if sel.any():
                tot = np.bincount(code[sel], weights=b[sel], minlength=len(uniq))
                seen = np.bincount(code[sel], minlength=len(uniq)) > 0
                for k in np.flatnonzero(seen).tolist():
                    sums[(uniq[k], tag)] = int(tot[k])
        init_first = _pick(code, uniq, T.num["init_bytes"][r], np.ones(len(r), dtype=bool), first=True)
        dirty_last = _pick(code, uniq, T.num["dirty_bytes"][r], pre, first=False)
        stop_last = _pick(code, uniq, T.num["stopcopy_bytes"][r], np.ones(len(r), dtype=bool), first=False)
        for i in r[T.is_(N.VFIO_THREAD_START, N.VFIO_THREAD_END)[r] & ~T.tna[r]]:
            key = "start" if T.name[i] == N.VFIO_THREAD_START else "end"
            thread.setdefault(T.device[i], {})[key] = int(T.t[i])
    # BPF: data-fd I/O of both sides, pre-copy info and data size on the source
    rows_all = np.concatenate([sv, dv])
    names_all = np.concatenate([s_names, d_names])
    bio = _bpf_io(T, rows_all, names_all, cut_t)
    b_init: dict[str, float] = {}
    b_dirty: dict[str, float] = {}
    b_size: dict[str, float] = {}
    bp = ~T.trace[sv] & T.is_(E.BPF_PRECOPY_INFO, E.BPF_IOCTL)[sv]
    if bp.any():
        br, bn = sv[bp], s_names[bp]
        code, uniq = pd.factorize(bn)
        uniq = [str(u) for u in uniq]
        info = T.name[br] == E.BPF_PRECOPY_INFO
        t = T.t_at(br)
        before = np.isnan(t) | np.isnan(cut_t) | (t < cut_t)
        b_init = _pick(code, uniq, T.num["init_bytes"][br], info, first=True)
        b_dirty = _pick(code, uniq, T.num["dirty_bytes"][br], info & before, first=False)
        b_size = _pick(code, uniq, T.num["stopcopy_bytes"][br], ~info, first=False)
    by_dev: dict[str, list[StateChange]] = {}
    for dev, sc in sorted(_states(T, sv, s_names, t0, era) + _states(T, dv, d_names, t0, era),
                          key=lambda x: (x[1].t_ms is None, x[1].t_ms or 0.0)):
        by_dev.setdefault(dev, []).append(sc)
    save = ix.downtime(src, N.DOWNTIME_SAVE)
    load = ix.downtime(dst, N.DOWNTIME_LOAD)
    dts = ix.dt[ix.dt_lo[src]:ix.dt_hi[src]] if src is not None else ix.dt[:0]
    idmap = _idstr_names(T, sv, dts) if len(sv) else {}
    only = {i for i in list(save) + list(load) if i.endswith("vfio") and i not in idmap}
    src_vfio = [n for n in names if sides.get(n) in ("source", "both")]
    if len(src_vfio) == 1 and len(only) == 1:
        idmap[only.pop()] = src_vfio[0]
    rev = {v: k for k, v in idmap.items()}
    # the destination loads the entry under the same idstr; when it names its device
    # differently (an mdev has a new UUID there), the load time is that device's
    dst_vfio = [n for n in names if sides.get(n) == "destination"]
    loaded = [i for i in load if i.endswith("vfio")]
    load_dev: dict[str, str] = {}
    if len(dst_vfio) == 1 and len(loaded) == 1:
        load_dev[dst_vfio[0]] = loaded[0]
    elif not dst_vfio:
        load_dev = {v: k for k, v in idmap.items()}
    for dev in dst_vfio:
        rev.setdefault(dev, load_dev.get(dev))
    out = [Device(
        name="ram", kind="ram", precopy_bytes=ram.get("precopy_bytes"),
        stopcopy_bytes=ram.get("stopcopy_bytes"),
        initial_pending_bytes=ram.get("initial_pending_bytes"),
        dirty_pending_bytes=ram.get("dirty_pending_bytes"),
        downtime_ms=save.get("ram"), load_ms=load.get("ram"), idstr="ram",
        sources=dict(ram.get("sources") or {}),
    )]
    for dev in names:
        idstr = rev.get(dev)
        th = thread.get(dev, {})
        io = bio.get(dev, {})
        srcs: dict[str, str] = {}
        has_pre, has_stop = (dev, "pre") in sums, (dev, "stop") in sums
        t_pre = sums[(dev, "pre")] if has_pre else (0 if has_stop else None)
        t_stop = sums.get((dev, "stop"))
        what = "data-fd reads" if "read_calls" in io else "data-fd writes"
        pre_b = _both(t_pre, io.get("pre"), "precopy_bytes", srcs, warn, f"{label}: {dev} pre-copy bytes", what)
        stop_b = _both(t_stop, io.get("stop"), "stopcopy_bytes", srcs, warn, f"{label}: {dev} stop-copy bytes", what)
        init = _both(_opt(init_first.get(dev)), _opt(b_init.get(dev)), "initial_pending_bytes", srcs, warn,
                     f"{label}: {dev} pre-copy initial bytes", "VFIO_MIG_GET_PRECOPY_INFO")
        dirty = _first_of(_opt(dirty_last.get(dev)), _opt(b_dirty.get(dev)), "dirty_pending_bytes", srcs)
        size = _first_of(_opt(stop_last.get(dev)), _opt(b_size.get(dev)), "stopcopy_size_bytes", srcs)
        if "read_calls" in io or "write_calls" in io:
            srcs["read_ms" if "read_calls" in io else "write_ms"] = "bpf"
        out.append(Device(
            name=dev, kind="vfio", precopy_bytes=pre_b, stopcopy_bytes=stop_b,
            initial_pending_bytes=init, dirty_pending_bytes=dirty, stopcopy_size_bytes=size,
            downtime_ms=save.get(idstr) if idstr and sides.get(dev) != "destination" else None,
            load_ms=load.get(load_dev[dev]) if dev in load_dev else None, idstr=idstr,
            states=tuple(by_dev.get(dev, ())),
            stopcopy_thread_ms=(th["end"] - th["start"]) / 1e6 if "start" in th and "end" in th else None,
            read_ms=io.get("read_ms"), read_calls=io.get("read_calls"),
            read_p50_us=io.get("read_p50_us"), read_max_us=io.get("read_max_us"),
            write_ms=io.get("write_ms"), write_calls=io.get("write_calls"),
            write_p50_us=io.get("write_p50_us"), write_max_us=io.get("write_max_us"),
            bytes_by_phase=io.get("bytes_by_phase", {}), side=sides.get(dev),
            aliases=tuple(sorted(joined.get(dev, ()))), sources=srcs,
        ))
    used = set(idmap) | {"ram"}
    for idstr in list(save) + [i for i in load if i not in save]:
        if idstr not in used:
            out.append(Device(name=idstr, kind="other", downtime_ms=save.get(idstr),
                              load_ms=load.get(idstr), idstr=idstr))
    return tuple(out)


def _first_of(trace: int | None, bpf: int | None, key: str, srcs: dict[str, str]) -> int | None:
    """The trace's value, else BPF's; ``srcs[key]`` says which."""
    if trace is not None:
        srcs[key] = "trace"
        return trace
    if bpf is not None:
        srcs[key] = "bpf"
    return bpf


def _both(trace: int | None, bpf: int | None, key: str, srcs: dict[str, str],
          warn: list[str] | None, what: str, how: str) -> int | None:
    """A byte count both the trace and BPF may give: the trace's (QEMU's own view) when it
    has one, BPF's otherwise; a disagreement is a warning (both stay visible: the BPF
    figure is in ``bytes_by_phase``)."""
    if trace is not None and bpf is not None:
        srcs[key] = "trace+bpf"
        if trace != bpf and warn is not None:
            warn.append(f"{what}: trace says {trace}, BPF {how} {bpf}")
        return trace
    return _first_of(trace, bpf, key, srcs)


def data_fd_io(events: pd.DataFrame) -> pd.DataFrame:
    """BPF data-fd reads and writes per side, device and phase, over the whole input.

    One row per (side, device, phase) with ``calls``, ``bytes``, ``avg_us`` and ``max_us``
    (latency of one call, microseconds), sorted by those keys; the phase is the device
    state BPF charged the call to, ``?`` when unknown (as is an unknown device). Unlike
    ``Device.bytes_by_phase`` this needs no migration: BPF alone sees the traffic.
    """
    for c in ("event", "side", "device", "state", "bytes", "dur_ns"):
        if c not in events:
            raise KeyError(f"data_fd_io: no {c!r} column")
    io = events[events["event"].isin([E.BPF_DATA_READ, E.BPF_DATA_WRITE]).to_numpy()]
    out = pd.DataFrame({
        "side": io["side"].astype("string").fillna("?"),
        "device": io["device"].astype("string").fillna("?"),
        "phase": io["state"].astype("string").fillna("?"),
        "bytes": io["bytes"].astype("Int64").fillna(0),
        "dur_ns": io["dur_ns"].astype("Float64"),
    })
    g = out.groupby(["side", "device", "phase"], sort=True)
    agg = g.agg(calls=("bytes", "size"), bytes=("bytes", "sum"), avg_ns=("dur_ns", "mean"),
                max_ns=("dur_ns", "max")).reset_index()
    agg["calls"] = agg["calls"].astype("int64")
    agg["bytes"] = agg["bytes"].astype("int64")
    agg["avg_us"] = agg.pop("avg_ns") / 1000
    agg["max_us"] = agg.pop("max_ns") / 1000
    return agg
