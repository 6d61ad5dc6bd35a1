"""Our migration beside libvirt's completed job statistics (a libvirt lab run's libvirt-jobinfo.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from profiler import events as ev
from profiler.model.results import Migration


@dataclass(frozen=True, slots=True)
class LibvirtComparison:
    """Each figure of ours next to libvirt's for the same migration.

    ``guest_paused_ms`` is QEMU's own view of the pause: the source's STOP event to the
    destination's RESUME (QEMU's event stamps, one host clock). libvirt's ``downtime`` is
    stamped by its daemons instead: when the source daemon handles STOP, and on the
    destination after ``cont`` returns, so it also holds libvirt's own event handling;
    ``libvirt_seen_ms`` spans the lifecycle events libvirt emits at those two points
    (suspended:migrated, resumed:migrated) as migprof received them.
    """

    downtime_ms: float | None  # ours (QEMU's source-side downtime)
    guest_paused_ms: float | None
    libvirt_seen_ms: float | None
    libvirt_downtime_ms: int | None
    dirty_syncs: int | None
    libvirt_memory_iteration: int | None
    total_ms: float | None
    libvirt_time_elapsed_ms: int | None

    @property
    def iterations_agree(self) -> bool:
        return self.dirty_syncs is not None and self.dirty_syncs == self.libvirt_memory_iteration

    @property
    def total_within_elapsed(self) -> bool:
        return (self.total_ms is not None and self.libvirt_time_elapsed_ms is not None
                and self.total_ms <= self.libvirt_time_elapsed_ms)


def _last(df: pd.DataFrame, event: str, state: str, side: str) -> int | None:
    sel = df[(df["event"] == event) & (df["state"] == state) & (df["side"] == side)]
    t = sel["t_ns"].dropna()
    return int(t.iloc[-1]) if len(t) else None


def compare(events: pd.DataFrame, mig: Migration | None, jobinfo: dict[str, Any]
            ) -> LibvirtComparison:
    """Our source migration (``mig``) and the run's events beside libvirt's statistics."""
    stop = _last(events, ev.QMP_EVENT, "STOP", "source")
    resume = _last(events, ev.QMP_EVENT, "RESUME", "destination")
    sus = _last(events, ev.LIBVIRT_LIFECYCLE, "suspended:migrated", "source")
    res = _last(events, ev.LIBVIRT_LIFECYCLE, "resumed:migrated", "destination")
    return LibvirtComparison(
        downtime_ms=mig.downtime_ms if mig else None,
        guest_paused_ms=(resume - stop) / 1e6 if stop and resume and resume > stop else None,
        libvirt_seen_ms=(res - sus) / 1e6 if sus and res and res > sus else None,
        libvirt_downtime_ms=jobinfo.get("downtime"),
        dirty_syncs=mig.dirty_syncs if mig else None,
        libvirt_memory_iteration=jobinfo.get("memory_iteration"),
        total_ms=mig.total_ms if mig else None,
        libvirt_time_elapsed_ms=jobinfo.get("time_elapsed"),
    )
