"""Our migration beside libvirt's completed job statistics (a libvirt lab run's libvirt-jobinfo.json).

What libvirt's ``downtime`` is (libvirt 9.0, src/qemu): the source daemon stamps
``stopped`` (virTimeMillisNow, CLOCK_REALTIME in ms) when it handles QEMU's STOP event
(qemuProcessHandleStop); the stamp travels to the destination in the migration cookie; the
destination daemon, in its Finish phase, sends ``cont`` and once that returns computes
``now - stopped`` (qemuMigrationDstFinishFresh -> qemuDomainJobDataUpdateDowntime). So it
holds the guest's pause (QEMU's STOP on the source .. RESUME on the destination) plus the
destination QEMU's time from RESUME to its reply to ``cont``, plus how late each daemon ran
its step, minus nothing of QEMU's: the daemons' own scheduling is in it.

On QEMU's stamps (the lab switches on QEMU's monitor trace, ``registry.QMP_TRACE``) that
span can be bounded, whatever the daemons' delays:

* ``stopped`` is no earlier than the source's STOP event (QEMU stamps an event as it sends
  it) and no later than the source QEMU receiving ``migrate-continue``: libvirt handles the
  STOP event before the MIGRATION pre-switchover event QEMU sends after it (one monitor
  thread, in order), and only that one makes it send ``migrate-continue`` (libvirt always
  sets pause-before-switchover); our receipt of ``suspended:migrated``, queued after the
  stamp, is a later bound too;
* the destination's ``now`` is no earlier than the destination QEMU replying to ``cont``
  and no later than the next QMP command that QEMU receives (the Finish phase's next
  monitor command, ``migrate-set-capabilities``, comes after the stamp; nothing else may
  use the monitor while the incoming-migration job holds it).

Both stamps are whole milliseconds, so libvirt's figure lies strictly between
``reply - continue - 1`` and ``next - STOP + 1``. ``cont_reply_ms`` (STOP .. reply to
``cont``) is the span itself on QEMU's clock: it differs from libvirt's figure by the
daemons' delays alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from profiler import events as ev
from profiler import registry
from profiler.model.results import Migration


@dataclass(frozen=True, slots=True)
class LibvirtComparison:
    """Each figure of ours next to libvirt's for the same migration (module docstring)."""

    downtime_ms: float | None  # QEMU's (source: stop .. completed)
    guest_paused_ms: float | None  # source STOP .. destination RESUME, QEMU's event stamps
    cont_reply_ms: float | None  # source STOP .. destination's reply to libvirt's cont
    libvirt_low_ms: float | None  # libvirt's downtime lies strictly above this ...
    libvirt_high_ms: float | None  # ... and strictly below this (QEMU's stamps)
    libvirt_seen_ms: float | None  # suspended:migrated .. resumed:migrated as we received them
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

    @property
    def downtime_within_bounds(self) -> bool | None:
        """libvirt's downtime inside the bounds QEMU's stamps set (None: no bounds)."""
        if None in (self.libvirt_low_ms, self.libvirt_high_ms, self.libvirt_downtime_ms):
            return None
        return self.libvirt_low_ms < self.libvirt_downtime_ms < self.libvirt_high_ms


def _times(df: pd.DataFrame, event: str, side: str, state: str | None = None) -> np.ndarray:
    sel = (df["event"] == event) & (df["side"] == side)
    if state is not None:
        sel &= df["state"] == state
    t = df.loc[sel.to_numpy(dtype=bool, na_value=False), "t_ns"].to_numpy(dtype="float64", na_value=np.nan)
    return np.sort(t[~np.isnan(t)])


def _after(t: np.ndarray, at: float | None) -> float | None:
    """The first of sorted ``t`` at or after ``at``."""
    if at is None:
        return None
    i = int(np.searchsorted(t, at, side="left"))
    return float(t[i]) if i < len(t) else None


def _qmp(df: pd.DataFrame, event: str, side: str) -> pd.DataFrame:
    """QEMU's monitor trace rows of one side (t_ns, JSON text), in time order."""
    sel = ((df["event"] == event) & (df["side"] == side)).to_numpy(dtype=bool, na_value=False)
    out = df.loc[sel, ["t_ns", "detail"]].dropna()
    return out.sort_values("t_ns", kind="stable")


def _command_at(cmds: pd.DataFrame, execute: str, at: float) -> tuple[float, Any] | None:
    """The first command ``execute`` received at or after ``at``: (t_ns, its id)."""
    text = cmds["detail"].astype(str)
    cand = cmds[(cmds["t_ns"] >= at).to_numpy() & text.str.contains(f'"{execute}"', regex=False).to_numpy()]
    for t, d in zip(cand["t_ns"].tolist(), cand["detail"].tolist(), strict=True):
        try:
            req = json.loads(d)
        except ValueError:
            continue
        if isinstance(req, dict) and req.get("execute") == execute:
            return float(t), req.get("id")
    return None


def _reply(resps: pd.DataFrame, cmd_id: Any, at: float) -> float | None:
    """When QEMU replied to the command ``cmd_id`` received at ``at``."""
    key = json.dumps(cmd_id)
    text = resps["detail"].astype(str)
    cand = resps[(resps["t_ns"] >= at).to_numpy() & text.str.contains(key, regex=False).to_numpy()]
    for t, d in zip(cand["t_ns"].tolist(), cand["detail"].tolist(), strict=True):
        try:
            resp = json.loads(d)
        except ValueError:
            continue
        if isinstance(resp, dict) and resp.get("id") == cmd_id and ("return" in resp or "error" in resp):
            return float(t)
    return None


def _ms(a: float | None, b: float | None) -> float | None:
    return (a - b) / 1e6 if a is not None and b is not None and a >= b else None


def compare(events: pd.DataFrame, mig: Migration | None, jobinfo: dict[str, Any]
            ) -> LibvirtComparison:
    """Our source migration (``mig``) and the run's events beside libvirt's statistics."""
    stops = _times(events, ev.QMP_EVENT, "source", "STOP")
    end = mig.end_ns if mig is not None and mig.end_ns is not None else None
    if end is not None:
        stops = stops[stops <= end]
    stop = float(stops[-1]) if len(stops) else None
    resume = _after(_times(events, ev.QMP_EVENT, "destination", "RESUME"), stop)
    suspended = _after(_times(events, ev.LIBVIRT_LIFECYCLE, "source", "suspended:migrated"), stop)
    resumed = _after(_times(events, ev.LIBVIRT_LIFECYCLE, "destination", "resumed:migrated"), stop)
    reply = nxt = stopped_by = None
    if stop is not None:
        dst_cmds = _qmp(events, registry.QMP_COMMAND, "destination")
        cont = _command_at(dst_cmds, "cont", stop)
        if cont is not None:
            reply = _reply(_qmp(events, registry.QMP_RESPONSE, "destination"), cont[1], cont[0])
        if reply is not None:
            later = dst_cmds["t_ns"].to_numpy(dtype="float64")
            nxt = _after(later, np.nextafter(reply, np.inf))
        mc = _command_at(_qmp(events, registry.QMP_COMMAND, "source"), "migrate-continue", stop)
        bounds = [t for t in (mc[0] if mc else None, suspended) if t is not None]
        stopped_by = min(bounds) if bounds else None
    low = _ms(reply, stopped_by)
    high = _ms(nxt, stop)
    return LibvirtComparison(
        downtime_ms=mig.downtime_ms if mig else None,
        guest_paused_ms=_ms(resume, stop),
        cont_reply_ms=_ms(reply, stop),
        # libvirt's two stamps are whole milliseconds: its difference is within 1 ms of theirs
        libvirt_low_ms=low - 1 if low is not None else None,
        libvirt_high_ms=high + 1 if high is not None else None,
        libvirt_seen_ms=_ms(resumed, suspended),
        libvirt_downtime_ms=jobinfo.get("downtime"),
        dirty_syncs=mig.dirty_syncs if mig else None,
        libvirt_memory_iteration=jobinfo.get("memory_iteration"),
        total_ms=mig.total_ms if mig else None,
        libvirt_time_elapsed_ms=jobinfo.get("time_elapsed"),
    )
