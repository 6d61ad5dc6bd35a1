"""One line for `migprof report`: our figures beside libvirt's completed job statistics."""

from __future__ import annotations

from typing import Any

import pandas as pd

from profiler.model.libvirt import LibvirtComparison, compare
from profiler.model.results import Report


def source_migration(report: Report) -> Any:
    """The source side's last migration that completed (what libvirt's statistics cover)."""
    done = [m for m in report.migrations if m.side == "source" and m.outcome == "completed"]
    return done[-1] if done else None


def comparison(report: Report, events: pd.DataFrame, jobinfo: dict[str, Any]) -> LibvirtComparison:
    return compare(events, source_migration(report), jobinfo)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def beside(report: Report, events: pd.DataFrame, jobinfo: dict[str, Any]) -> str:
    """libvirt's figures, what each measures, and ours beside them (model/libvirt.py)."""
    head = "libvirt (libvirt-jobinfo.json):"
    if not jobinfo.get("type"):
        return f"{head} no completed job statistics (a cancelled or failed job)"
    c = comparison(report, events, jobinfo)
    inside = {True: "inside", False: "OUTSIDE", None: "no bounds"}[c.downtime_within_bounds]
    return "\n".join([
        head,
        f"  downtime {c.libvirt_downtime_ms} ms: libvirt's clocks, source libvirtd handling QEMU's "
        "STOP -> destination libvirtd after `cont` returned",
        f"    ours: QEMU {_ms(c.downtime_ms)} ms (source: stop -> completed); guest paused "
        f"{_ms(c.guest_paused_ms)} ms (source STOP -> destination RESUME); STOP -> destination's "
        f"reply to cont {_ms(c.cont_reply_ms)} ms",
        f"    on QEMU's stamps libvirt's figure lies in ({_ms(c.libvirt_low_ms)}, "
        f"{_ms(c.libvirt_high_ms)}) ms: {inside}; libvirt's lifecycle events as received "
        f"{_ms(c.libvirt_seen_ms)} ms apart",
        f"  memory iterations {c.libvirt_memory_iteration} [dirty syncs {c.dirty_syncs}]; elapsed "
        f"{c.libvirt_time_elapsed_ms} ms [total {_ms(c.total_ms)} ms]",
    ])


def job_line(params: dict[str, Any]) -> str:
    """libvirt's statistics of a completed job (JOB_COMPLETED), as `live --domain` ends."""
    keys = ("time_elapsed", "downtime", "setup_time", "memory_iteration", "data_processed",
            "memory_bps", "vfio_data_transferred")
    parts = [f"{k}={params[k]}" for k in keys if k in params]
    return "libvirt job completed: " + " ".join(parts)
