"""How a migration ended and how long it took: outcome, setup/total/downtime, status timeline.

Trace first: ``migrate_set_state`` for the status, checkpoints ``src-downtime-start`` ..
``src-downtime-end`` for the downtime (>=8.2; earlier the switch-over decision
``migration_thread_low_pending`` .. ``completed``). A final QMP ``query-migrate`` reply of
the same status, when the stream has one, overrides the times (it is QEMU's own figure).
Row lookups are vectorised over all migrations; only the per-migration scalars are Python.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from profiler import events as E
from profiler.model import names as N
from profiler.model.migrations import _in
from profiler.model.table import Table, notnone

_OUTCOME = {"completed": "completed", "failed": "failed", "cancelled": "cancelled",
            "cancelling": "cancelled"}
_CHECKPOINTS = ("src-downtime-start", "src-downtime-end", "src-vm-stopped", "src-iterable-saved",
                "dst-precopy-bh-vm-started")


@dataclass(frozen=True, slots=True)
class Times:
    outcome: str
    end_ns: int | None
    setup_ms: float | None
    total_ms: float | None
    downtime_ms: float | None
    switchover_ms: float | None
    stopcopy_ms: float | None
    error: str | None
    statuses: list[tuple[float | None, str, str]] = field(default_factory=list)  # t_ms, state, origin
    qmp: dict[str, Any] = field(default_factory=dict)  # last query-migrate reply in the migration
    last_ram_bytes: int | None = None  # ram.transferred of the last poll that had counters
    sources: dict[str, str] = field(default_factory=dict)  # value -> where it came from


def qmp_reply(detail: Any) -> dict[str, Any]:
    """The ``return`` object of a stored query-migrate reply (either form), or {}."""
    if not isinstance(detail, str):
        return {}
    try:
        d = json.loads(detail)
    except ValueError:
        return {}
    if isinstance(d, dict) and isinstance(d.get("return"), dict):
        d = d["return"]
    return d if isinstance(d, dict) else {}


def _f(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


@dataclass(frozen=True, slots=True)
class Rows:
    """Per-migration row indices (-1 = none) the other modules need too."""

    status: np.ndarray  # bool per table row: the status rows used for each migration
    setup_done: np.ndarray
    thread0: np.ndarray
    low: np.ndarray
    switch: np.ndarray  # src-downtime-start, else low_pending
    term: np.ndarray  # the final status (first of the last run of terminal ones)
    final: np.ndarray  # the last status row
    cps: dict[str, np.ndarray]


def rows(T: Table) -> Rows:
    has = notnone(T.state)
    st_tr = T.trace & T.is_(N.STATUS) & has
    st_q = ~T.trace & T.is_(*N.QMP_STATUS_EVENTS) & has
    traced = T.last(st_tr) >= 0
    st = np.where(traced[T.mig], st_tr, st_q) if len(T.mig) else st_tr
    S = np.flatnonzero(st)
    fin_rows = np.zeros(len(T.mig), dtype=bool)
    fin_rows[S] = _in(T.state[S], N.TERMINAL)
    final = T.last(st)
    last_live = T.last(st & ~fin_rows)
    term = np.full(T.n_mig, -1, dtype=np.int64)
    ok = (final >= 0) & fin_rows[np.maximum(final, 0)]
    nxt = S[np.minimum(np.searchsorted(S, last_live, side="right"), max(len(S) - 1, 0))] if len(S) else final
    term = np.where(ok, np.where(last_live >= 0, nxt, T.first(st)), -1)
    cp = T.trace & T.is_(N.CHECKPOINT)
    cpi = np.flatnonzero(cp)
    cps = {}
    for label in _CHECKPOINTS:
        m = np.zeros(len(T.mig), dtype=bool)
        m[cpi[T.state[cpi] == label]] = True
        cps[label] = T.last(m)
    low = T.first(T.trace & T.is_(N.LOW_PENDING))
    return Rows(status=st, setup_done=T.first(T.trace & T.is_(N.SETUP_COMPLETE)),
                thread0=T.first(T.trace & T.is_(N.SAVEVM_HEADER, N.SAVEVM_SETUP)),
                low=low, switch=np.where(cps["src-downtime-start"] >= 0, cps["src-downtime-start"], low),
                term=term, final=final, cps=cps)


def times_all(T: Table, R: Rows, t0: list[int | None]) -> list[Times]:
    """Outcome and times of every migration (``t0``: its start, epoch ns, or None)."""
    err = T.last(T.trace & T.is_(*N.ERRORS) & notnone(T.detail))
    polls = T.last(~T.trace & T.is_(E.QMP_QUERY_MIGRATE) & notnone(T.detail))
    # a cancelled/failed reply has no counters: keep the last poll that had them
    ram_polls = T.last(~T.trace & T.is_(E.QMP_QUERY_MIGRATE) & ~np.isnan(T.num["bytes"]))
    S = np.flatnonzero(R.status)
    s_lo = np.searchsorted(S, T.start)
    s_hi = np.searchsorted(S, T.end)
    t = {k: T.t_at(v) for k, v in (("setup_done", R.setup_done), ("thread0", R.thread0),
                                   ("low", R.low), ("term", R.term), ("switch", R.switch))}
    tc = {k: T.t_at(v) for k, v in R.cps.items()}
    out = []
    for m in range(T.n_mig):
        base = T.rel(t0[m])
        final = R.final[m]
        fstate = T.state[final] if final >= 0 else None
        outcome = _OUTCOME.get(str(fstate), "incomplete") if fstate is not None else "incomplete"
        origin = "trace" if final >= 0 and T.trace[final] else "qmp"
        idx = S[s_lo[m]:s_hi[m]]
        statuses = [((int(T.t[i]) - t0[m]) / 1e6 if not T.tna[i] and t0[m] is not None else None,
                     str(T.state[i]), origin) for i in idx]
        sources: dict[str, str] = {}
        end = t["term"][m]
        setup_from = t["thread0"][m] if not math.isnan(t["thread0"][m]) else base
        setup_ms = _f((t["setup_done"][m] - setup_from) / 1e6)
        d0, d1 = tc["src-downtime-start"][m], tc["src-downtime-end"][m]
        if R.cps["src-downtime-start"][m] >= 0 and R.cps["src-downtime-end"][m] >= 0:
            downtime_ms = _f((d1 - d0) / 1e6)
            sources["downtime_ms"] = "checkpoints"
        elif R.low[m] >= 0 and R.term[m] >= 0 and outcome == "completed":
            downtime_ms = _f((end - t["low"][m]) / 1e6)
            sources["downtime_ms"] = "low_pending..completed"
        else:
            downtime_ms = None
        stop_from = tc["src-vm-stopped"][m] if R.cps["src-vm-stopped"][m] >= 0 else t["switch"][m]
        stop_to = tc["src-iterable-saved"][m] if R.cps["src-iterable-saved"][m] >= 0 else (
            end if outcome == "completed" else math.nan)
        stopcopy_ms = _f((stop_to - stop_from) / 1e6)
        total_ms = _f((end - base) / 1e6) if outcome != "incomplete" else None
        error = str(T.detail[err[m]]) if err[m] >= 0 else None
        qmp = qmp_reply(T.detail[polls[m]]) if polls[m] >= 0 else {}
        if qmp and _OUTCOME.get(qmp.get("status")) == outcome:
            for key, attr in (("total-time", "total_ms"), ("downtime", "downtime_ms"),
                              ("setup-time", "setup_ms")):
                v = qmp.get(key)
                if isinstance(v, int | float) and not isinstance(v, bool):
                    sources[attr] = "query-migrate"
                    if attr == "total_ms":
                        total_ms = float(v)
                    elif attr == "downtime_ms":
                        downtime_ms = float(v)
                    else:
                        setup_ms = float(v)
        if error is None and qmp.get("error-desc"):
            error = str(qmp["error-desc"])
        out.append(Times(
            outcome=outcome, end_ns=None if math.isnan(end) else int(T.t[R.term[m]]),
            setup_ms=setup_ms, total_ms=total_ms, downtime_ms=downtime_ms,
            switchover_ms=_f((t["low"][m] - base) / 1e6), stopcopy_ms=stopcopy_ms, error=error,
            statuses=statuses, qmp=qmp, sources=sources,
            last_ram_bytes=int(T.num["bytes"][ram_polls[m]]) if ram_polls[m] >= 0 else None))
    return out


def dest_outcomes(T: Table, R: Rows) -> list[str | None]:
    """Per migration read as a destination: completed / failed / incomplete (its log ends
    mid-load: the destination died)."""
    end = T.last(T.trace & T.is_(N.DEST_END))
    out: list[str | None] = []
    for m in range(T.n_mig):
        f = R.final[m]
        s = T.state[f] if f >= 0 else None
        if s in ("completed", "failed", "cancelled"):
            out.append("failed" if s == "cancelled" else str(s))
        elif end[m] >= 0 and not math.isnan(T.num["ret"][end[m]]):
            out.append("completed" if T.num["ret"][end[m]] == 0 else "failed")
        elif R.cps["dst-precopy-bh-vm-started"][m] >= 0:
            out.append("completed")
        else:
            out.append("incomplete")
    return out
