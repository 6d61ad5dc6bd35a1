"""One QEMU as a row of ``migprof top``: its latest migration's status, phase, pass, pending
against the threshold, bandwidth, expected downtime and a one-word verdict, all read from the
report the model builds over that QEMU's own events (the numbers ``migprof report`` gives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from profiler.model.results import Migration, Report

TERMINAL = ("completed", "failed", "cancelled")
ROW_SCHEMA = "migprof.top/1"


@dataclass(frozen=True, slots=True)
class VmRow:
    """A QEMU on the host and its latest migration (sizes in bytes, rates in bytes/s).

    ``status`` is the migration status the report saw last (QEMU's words: setup, active,
    device, completed, failed, cancelled...; ``none`` before any migration, ``gone`` once the
    process has exited). ``pass_no`` is the dirty-sync count (QEMU's ``dirty-sync-count``).
    ``expected_downtime_ms`` = pending / bandwidth at the latest check: the downtime a
    switch-over then would have cost; ``downtime_ms`` is the measured one, once completed.
    """

    pid: int
    label: str  # libvirt domain name, else QEMU's -name, else "pid N"
    side: str  # source | destination
    status: str
    phase: str  # waiting, setup, pre-copy, stop-and-copy, completed, failed, cancelled
    verdict: str  # one word, see ``verdict_word``
    pass_no: int | None = None
    pending_bytes: int | None = None
    threshold_bytes: int | None = None
    bandwidth_bytes_per_s: float | None = None
    expected_downtime_ms: float | None = None
    downtime_ms: float | None = None
    total_ms: float | None = None
    migrations: int = 0  # migrations of this QEMU seen so far
    events: int = 0  # events received for it
    domain: str | None = None
    name: str | None = None
    sources: tuple[str, ...] = ()  # what feeds it: bpf, qmp, libvirt, trace
    summary: str | None = None  # the verdict in plain words (the report's)


def phase(mig: Migration | None) -> str:
    """setup, pre-copy, stop-and-copy, or the outcome once it has ended (waiting: none yet)."""
    if mig is None:
        return "waiting"
    if mig.outcome in TERMINAL:
        return mig.outcome
    states = [s.state for s in mig.states]
    if mig.switchover_ms is not None or "device" in states:
        return "stop-and-copy"
    if "active" in states or mig.checks:
        return "pre-copy"
    return "setup"


def verdict_word(mig: Migration | None) -> str:
    """idle (no migration), starting (no check yet), converging (pending still shrinking),
    stuck (pre-copy cannot shrink it), converged (switch-over decided), ok (completed),
    failed, cancelled; ``incomplete`` for one that ended without a final status."""
    if mig is None:
        return "idle"
    if mig.outcome == "completed":
        return "ok"
    if mig.outcome in ("failed", "cancelled"):
        return mig.outcome
    v = mig.verdict
    if v.converged:
        return "converged"
    if v.converged is None:
        return "starting"
    return "stuck" if v.precopy_stuck else "converging"


def status(mig: Migration | None) -> str:
    """The latest migration status the report saw on the migration's side ("none" before
    any migration; its outcome when no status was seen): `top`'s column and the metrics'."""
    if mig is None:
        return "none"
    src = [s.state for s in mig.states if s.side == mig.side]
    if src:
        return src[-1]
    return mig.outcome if mig.outcome in TERMINAL else "setup"


def vm_row(report: Report | None, *, pid: int, label: str, side: str, events: int = 0,
           alive: bool = True, domain: str | None = None, name: str | None = None,
           sources: tuple[str, ...] = ()) -> VmRow:
    """The row of one QEMU from the report over its events (None: nothing built yet)."""
    migs = report.migrations if report is not None else ()
    mig = migs[-1] if migs else None
    st = status(mig)
    if not alive and (mig is None or mig.outcome not in TERMINAL):
        st = "gone"
    base = dict(pid=pid, label=label, side=mig.side if mig is not None else side, status=st,
                phase=phase(mig), verdict=verdict_word(mig), migrations=len(migs), events=events,
                domain=domain, name=name, sources=sources)
    if mig is None:
        return VmRow(**base)
    last = mig.checks[-1] if mig.checks else None
    threshold = next((c.threshold_bytes for c in reversed(mig.checks)
                      if c.threshold_bytes is not None), None)
    bw = last.bandwidth_bytes_per_ms if last is not None else None
    expected = (last.pending_bytes / bw if last is not None and bw else None)
    return VmRow(
        **base,
        pass_no=mig.dirty_syncs,
        pending_bytes=last.pending_bytes if last is not None else None,
        threshold_bytes=threshold,
        bandwidth_bytes_per_s=bw * 1000.0 if bw else mig.verdict.bandwidth_bytes_per_s,
        expected_downtime_ms=expected,
        downtime_ms=mig.downtime_ms,
        total_ms=mig.total_ms,
        summary=mig.verdict.summary,
    )


def row_json(row: VmRow) -> dict[str, Any]:
    """A row as plain JSON values."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in ((k, getattr(row, k)) for k in VmRow.__slots__)}
