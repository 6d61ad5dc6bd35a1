"""The guest's pause across a migration: the source's STOP to the destination's RESUME (QEMU's stamps).

QEMU's ``downtime`` (query-migrate, or the trace) is the source's view: VM stopped to
migration completed. The guest stays paused longer: until the destination runs it, which
under libvirt waits for libvirt's Finish phase. When both sides were followed, the QMP
events say when: STOP on the source and RESUME on the destination, each stamped by the
QEMU that sent it (one host clock in the lab; NTP-disciplined hosts otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from profiler import events as E
from profiler.model.results import Migration

SOURCE = "QMP STOP (source) .. RESUME (destination)"


def _times(events: pd.DataFrame, side: str, state: str) -> np.ndarray:
    sel = ((events["event"] == E.QMP_EVENT) & (events["side"] == side)
           & (events["state"] == state)).to_numpy(dtype=bool, na_value=False)
    t = events["t_ns"].to_numpy(dtype="float64", na_value=np.nan)[sel]
    return np.sort(t[~np.isnan(t)]).astype(np.int64)


def attach(events: pd.DataFrame, migrations: Sequence[Migration]) -> tuple[Migration, ...]:
    """``migrations`` with ``guest_paused_ms`` set on each completed source migration whose
    destination was followed: its last source STOP up to its end (before the next source
    migration when its end has no time), to the destination's first RESUME after that
    STOP and before the next source migration began."""
    sources = [m for m in migrations if m.side == "source" and m.view == "qemu"]
    # a migration without a start time (an untimed trace) only when it is the only one
    want = [m for m in sources if m.outcome == "completed" and m.dest_outcome is not None
            and (m.start_ns is not None or len(sources) == 1)]
    if not want or not len(events):
        return tuple(migrations)
    stops = _times(events, "source", "STOP")
    resumes = _times(events, "destination", "RESUME")
    if not len(stops) or not len(resumes):
        return tuple(migrations)
    want_ids = {id(m) for m in want}
    starts = sorted(m.start_ns for m in sources if m.start_ns is not None)
    out = []
    for m in migrations:
        if id(m) not in want_ids:
            out.append(m)
            continue
        begin = m.start_ns if m.start_ns is not None else int(stops[0])
        later = [s for s in starts if s > begin]
        # its STOP: the last up to its end (untimed trace: before the next migration)
        until = m.end_ns if m.end_ns is not None else (later[0] - 1 if later else int(stops[-1]))
        i = int(np.searchsorted(stops, until, side="right")) - 1
        j = int(np.searchsorted(resumes, stops[i], side="left")) if i >= 0 else len(resumes)
        if i < 0 or stops[i] < begin or j >= len(resumes) or (later and resumes[j] >= later[0]):
            out.append(m)
            continue
        out.append(replace(m, guest_paused_ms=(int(resumes[j]) - int(stops[i])) / 1e6,
                           sources={**m.sources, "guest_paused_ms": SOURCE}))
    return tuple(out)
