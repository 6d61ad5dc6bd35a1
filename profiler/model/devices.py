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
     N.VFIO_LOAD_STATE, N.VFIO_LOAD_DATA, "vfio_save_iterate_start",
     "vfio_save_block_precopy_empty_hit", E.QMP_VFIO_MIGRATION, E.BPF_IOCTL]
)
_STATE_EVENTS = (N.VFIO_SET_STATE, N.VFIO_SET_DEVICE_STATE, E.QMP_VFIO_MIGRATION, E.BPF_IOCTL)


class Index:
    """The device rows and downtime rows of every migration, found once for the whole table."""

    def __init__(self, T: Table):
        self.T = T
        self.vf = np.flatnonzero(_in(T.name, _NAMED) & notnone(T.device))
        self.dt = np.flatnonzero(_in(T.name, (N.DOWNTIME_SAVE, N.DOWNTIME_LOAD)) & notnone(T.device))
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


def _states(T: Table, rows: np.ndarray, t0: int | None, era: Era) -> list[tuple[str, StateChange]]:
    if not len(rows):
        return []
    r = rows[_in(T.name[rows], _STATE_EVENTS) & notnone(T.state[rows])]
    if not len(r):
        return []
    names = T.name[r]
    is_req = bool(era.set_state_is_request or (names == N.VFIO_SET_DEVICE_STATE).any()
                  or notnone(T.detail[r[names == N.VFIO_SET_STATE]]).any())
    out = []
    for i, nm in zip(r.tolist(), names.tolist(), strict=True):
        if nm == E.QMP_VFIO_MIGRATION:
            origin, confirmed = "qmp", True
        elif nm == E.BPF_IOCTL:
            origin, confirmed = "bpf", T.num["ret"][i] == 0
        else:
            origin, confirmed = "qemu-log", not (nm == N.VFIO_SET_STATE and is_req)
        t_ms = (int(T.t[i]) - t0) / 1e6 if t0 is not None and not T.tna[i] else None
        out.append((T.device[i], StateChange(t_ms=t_ms, state=str(T.state[i]), side=str(T.side[i]),
                                             confirmed=bool(confirmed), origin=origin)))
    return out


def _idstr_names(T: Table, rows: np.ndarray, dts: np.ndarray) -> dict[str, str]:
    """SaveStateEntry idstr (``0000:00:03.0/vfio``) -> VFIO host name (``0000:3b:00.1``)."""
    out: dict[str, str] = {}
    for i in rows[T.name[rows] == N.VFIO_THREAD_START]:
        if T.detail[i] is not None:
            out[str(T.detail[i])] = str(T.device[i])
    # non-multifd: the entry's downtime line follows its own vfio_save_complete_precopy
    done = rows[_in(T.name[rows], (N.VFIO_COMPLETE, N.VFIO_COMPLETE_START))]
    for i in dts:
        idstr = T.device[i]
        if T.name[i] == N.DOWNTIME_SAVE and idstr.endswith("vfio") and idstr not in out:
            j = np.searchsorted(done, i) - 1
            if j >= 0:
                out[idstr] = str(T.device[done[j]])
    return out


def devices(ix: Index, src: int | None, dst: int | None, *, t0: int | None, switch: int,
            era: Era, ram: dict[str, Any]) -> tuple[Device, ...]:
    """All devices of one migration (table ids ``src``/``dst``, either may be None): ``ram``
    first, VFIO devices, then other entries. ``switch`` is the stop-copy start row (-1)."""
    T = ix.T
    sv, dv = ix.vfio(src), ix.vfio(dst)
    names: list[str] = list(dict.fromkeys([str(x) for x in T.device[sv]] + [str(x) for x in T.device[dv]]))
    cut = switch if switch >= 0 else np.iinfo(np.int64).max
    sums: dict[tuple[str, str], int] = {}
    init_first: dict[str, float] = {}
    dirty_last: dict[str, float] = {}
    stop_last: dict[str, float] = {}
    thread: dict[str, dict[str, int]] = {}
    r = sv[T.trace[sv]]
    if len(r):
        # one small frame of this migration's device rows; pandas groups them per device
        f = pd.DataFrame({"dev": T.device[r], "name": T.name[r], "pre": r < cut,
                          **{k: T.num[k][r] for k in ("bytes", "init_bytes", "dirty_bytes", "stopcopy_bytes")}})
        blk = f[_in(f["name"].to_numpy(), (N.VFIO_BLOCK, N.VFIO_BUFFER)) & f["bytes"].notna().to_numpy()]
        for (dev, is_pre), b in blk.groupby(["dev", "pre"], sort=False)["bytes"].sum().items():
            sums[(dev, "pre" if is_pre else "stop")] = int(b)
        init_first = f.groupby("dev", sort=False)["init_bytes"].first().dropna().to_dict()
        dirty_last = f[f["pre"]].groupby("dev", sort=False)["dirty_bytes"].last().dropna().to_dict()
        stop_last = f.groupby("dev", sort=False)["stopcopy_bytes"].last().dropna().to_dict()
        for i in r[_in(T.name[r], (N.VFIO_THREAD_START, N.VFIO_THREAD_END)) & ~T.tna[r]]:
            key = "start" if T.name[i] == N.VFIO_THREAD_START else "end"
            thread.setdefault(T.device[i], {})[key] = int(T.t[i])
    by_dev: dict[str, list[StateChange]] = {}
    for dev, sc in sorted(_states(T, sv, t0, era) + _states(T, dv, t0, era),
                          key=lambda x: (x[1].t_ms is None, x[1].t_ms or 0.0)):
        by_dev.setdefault(dev, []).append(sc)
    save = ix.downtime(src, N.DOWNTIME_SAVE)
    load = ix.downtime(dst, N.DOWNTIME_LOAD)
    dts = ix.dt[ix.dt_lo[src]:ix.dt_hi[src]] if src is not None else ix.dt[:0]
    idmap = _idstr_names(T, sv, dts) if len(sv) else {}
    only = {i for i in list(save) + list(load) if i.endswith("vfio") and i not in idmap}
    if len(names) == 1 and len(only) == 1:
        idmap[only.pop()] = names[0]
    rev = {v: k for k, v in idmap.items()}
    out = [Device(
        name="ram", kind="ram", precopy_bytes=ram.get("precopy_bytes"),
        stopcopy_bytes=ram.get("stopcopy_bytes"),
        initial_pending_bytes=ram.get("initial_pending_bytes"),
        dirty_pending_bytes=ram.get("dirty_pending_bytes"),
        downtime_ms=save.get("ram"), load_ms=load.get("ram"), idstr="ram",
    )]
    for dev in names:
        idstr = rev.get(dev)
        th = thread.get(dev, {})
        has_pre, has_stop = (dev, "pre") in sums, (dev, "stop") in sums
        out.append(Device(
            name=dev, kind="vfio",
            precopy_bytes=sums[(dev, "pre")] if has_pre else (0 if has_stop else None),
            stopcopy_bytes=sums.get((dev, "stop")),
            initial_pending_bytes=_opt(init_first.get(dev)),
            dirty_pending_bytes=_opt(dirty_last.get(dev)),
            stopcopy_size_bytes=_opt(stop_last.get(dev)),
            downtime_ms=save.get(idstr) if idstr else None,
            load_ms=load.get(idstr) if idstr else None, idstr=idstr,
            states=tuple(by_dev.get(dev, ())),
            stopcopy_thread_ms=(th["end"] - th["start"]) / 1e6 if "start" in th and "end" in th else None,
        ))
    used = set(idmap) | {"ram"}
    for idstr in list(save) + [i for i in load if i not in save]:
        if idstr not in used:
            out.append(Device(name=idstr, kind="other", downtime_ms=save.get(idstr),
                              load_ms=load.get(idstr), idstr=idstr))
    return tuple(out)
