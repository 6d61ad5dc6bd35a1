"""How a migration ended and how long it took: outcome, setup/total/downtime, status timeline.

Trace first: ``migrate_set_state`` for the status, checkpoints ``src-downtime-start`` ..
``src-downtime-end`` for the downtime (>=8.2; earlier the switch-over decision
``migration_thread_low_pending`` .. ``completed``). A final QMP ``query-migrate`` reply of
the same status, when the stream has one, overrides the times (it is QEMU's own figure).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from profiler import events as E
from profiler.model import names as N

_OUTCOME = {"completed": "completed", "failed": "failed", "cancelled": "cancelled",
            "cancelling": "cancelled"}


@dataclass(frozen=True, slots=True)
class Times:
    outcome: str
    start_ns: int | None
    end_ns: int | None
    setup_ms: float | None
    total_ms: float | None
    downtime_ms: float | None
    switchover_ms: float | None
    stopcopy_ms: float | None
    switch_pos: int | None  # row position of the switch-over decision / VM stop
    setup_done_pos: int | None
    error: str | None
    statuses: list[tuple[float | None, str, str]] = field(default_factory=list)  # t_ms, state, origin
    qmp: dict[str, Any] = field(default_factory=dict)  # last query-migrate reply in the migration
    sources: dict[str, str] = field(default_factory=dict)  # value -> where it came from


def _ms(a: Any, b: Any) -> float | None:
    if a is None or b is None or pd.isna(a) or pd.isna(b):
        return None
    return (int(b) - int(a)) / 1e6


def _first(rows: pd.DataFrame, mask) -> pd.Series | None:
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return None
    return rows.iloc[int(np.argmax(m))]


def _last(rows: pd.DataFrame, mask) -> pd.Series | None:
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return None
    return rows.iloc[len(m) - 1 - int(np.argmax(m[::-1]))]


def qmp_reply(detail: Any) -> dict[str, Any]:
    """The ``return`` object of a stored query-migrate reply (either form), or {}."""
    if detail is None or pd.isna(detail):
        return {}
    try:
        d = json.loads(detail)
    except (TypeError, ValueError):
        return {}
    if isinstance(d, dict) and isinstance(d.get("return"), dict):
        d = d["return"]
    return d if isinstance(d, dict) else {}


def times(src: pd.DataFrame, aux: pd.DataFrame, start_ns: int | None) -> Times:
    """Outcome and times of one source migration (trace rows ``src`` ordered, QMP ``aux``)."""
    name = src["event"]
    cpm = name.eq(N.CHECKPOINT).to_numpy(dtype=bool)
    cp_pos = np.flatnonzero(cpm)
    cp_state = src["state"][cpm].astype(object).to_numpy()

    def cp(label: str) -> np.ndarray:
        """Row mask of one downtime checkpoint (string tests on checkpoint rows only)."""
        m = np.zeros(len(src), dtype=bool)
        m[cp_pos[cp_state == label]] = True
        return m

    st_rows = src[name.eq(N.STATUS).to_numpy(dtype=bool) & src["state"].notna().to_numpy(dtype=bool)]
    aname = aux["event"]
    q_rows = aux[aname.isin(N.QMP_STATUS_EVENTS).to_numpy(dtype=bool) & aux["state"].notna().to_numpy(dtype=bool)]
    origin = "trace" if len(st_rows) else "qmp"
    status_rows = st_rows if len(st_rows) else q_rows
    final = status_rows["state"].iloc[-1] if len(status_rows) else None
    outcome = _OUTCOME.get(str(final), "incomplete") if final is not None else "incomplete"
    t0 = start_ns
    statuses = [(_ms(t0, t), str(s), origin)
                for t, s in zip(status_rows["t_ns"].tolist(), status_rows["state"].tolist(), strict=True)]
    # the end is the first status of the final run of terminal ones (QMP polls repeat it)
    fin = status_rows["state"].isin(N.TERMINAL).to_numpy(dtype=bool)
    term = None
    if len(fin) and fin[-1]:
        live = np.flatnonzero(~fin)
        term = status_rows.iloc[int(live[-1]) + 1 if len(live) else 0]
    end_ns = term["t_ns"] if term is not None else None
    sources: dict[str, str] = {}

    sd = _first(src, name.eq(N.SETUP_COMPLETE))
    # QEMU's setup-time runs from the migration thread's start (header/setup), not from the
    # `setup` status the main loop sets before connecting
    thread0 = _first(src, name.isin([N.SAVEVM_HEADER, N.SAVEVM_SETUP]))
    setup_from = thread0["t_ns"] if thread0 is not None and pd.notna(thread0["t_ns"]) else t0
    setup_ms = _ms(setup_from, sd["t_ns"]) if sd is not None else None
    setup_done_pos = int(sd.name) if sd is not None else None
    low = _first(src, name.eq(N.LOW_PENDING))
    d_start = _last(src, cp("src-downtime-start"))
    d_end = _last(src, cp("src-downtime-end"))
    if d_start is not None and d_end is not None:
        downtime_ms = _ms(d_start["t_ns"], d_end["t_ns"])
        sources["downtime_ms"] = "checkpoints"
    elif low is not None and term is not None and outcome == "completed":
        downtime_ms = _ms(low["t_ns"], end_ns)
        sources["downtime_ms"] = "low_pending..completed"
    else:
        downtime_ms = None
    switch = d_start if d_start is not None else low
    switch_pos = int(switch.name) if switch is not None else None
    vm_stopped = _last(src, cp("src-vm-stopped"))
    it_saved = _last(src, cp("src-iterable-saved"))
    stop_from = vm_stopped if vm_stopped is not None else switch
    stop_to = it_saved if it_saved is not None else (term if outcome == "completed" else None)
    stopcopy_ms = _ms(stop_from["t_ns"], stop_to["t_ns"]) if stop_from is not None and stop_to is not None else None
    total_ms = _ms(t0, end_ns) if outcome != "incomplete" else None

    err_rows = src[name.isin(N.ERRORS).to_numpy(dtype=bool)]
    error = str(err_rows["detail"].iloc[-1]) if len(err_rows) and pd.notna(err_rows["detail"].iloc[-1]) else None

    qmp: dict[str, Any] = {}
    polls = aux[aname.eq(E.QMP_QUERY_MIGRATE).to_numpy(dtype=bool)]
    for d in reversed(polls["detail"].tolist()):
        qmp = qmp_reply(d)
        if qmp:
            break
    if qmp and qmp.get("status") in _OUTCOME and _OUTCOME[qmp["status"]] == outcome:
        for key, attr in (("total-time", "total_ms"), ("downtime", "downtime_ms"),
                          ("setup-time", "setup_ms")):
            if isinstance(qmp.get(key), int | float):
                sources[attr] = "query-migrate"
                if attr == "total_ms":
                    total_ms = float(qmp[key])
                elif attr == "downtime_ms":
                    downtime_ms = float(qmp[key])
                else:
                    setup_ms = float(qmp[key])
    if error is None and qmp.get("error-desc"):
        error = str(qmp["error-desc"])
    return Times(outcome=outcome, start_ns=None if t0 is None or pd.isna(t0) else int(t0),
                 end_ns=None if end_ns is None or pd.isna(end_ns) else int(end_ns),
                 setup_ms=setup_ms, total_ms=total_ms, downtime_ms=downtime_ms,
                 switchover_ms=_ms(t0, low["t_ns"]) if low is not None else None,
                 stopcopy_ms=stopcopy_ms, switch_pos=switch_pos, setup_done_pos=setup_done_pos,
                 error=error, statuses=statuses, qmp=qmp, sources=sources)


def dest_outcome(dst: pd.DataFrame) -> str | None:
    """completed / failed / incomplete (log ends mid-load: the destination died) / None."""
    if dst is None or not len(dst):
        return None
    name = dst["event"]
    st = dst["state"].where(name.isin([N.STATUS, *N.QMP_STATUS_EVENTS])).dropna()
    if len(st) and st.iloc[-1] in ("completed", "failed", "cancelled"):
        return "failed" if st.iloc[-1] == "cancelled" else str(st.iloc[-1])
    end = dst["ret"].where(name.eq(N.DEST_END)).dropna()
    if len(end):
        return "completed" if int(end.iloc[-1]) == 0 else "failed"
    cp = dst["state"].where(name.eq(N.CHECKPOINT))
    if cp.eq("dst-precopy-bh-vm-started").any():
        return "completed"
    return "incomplete"
