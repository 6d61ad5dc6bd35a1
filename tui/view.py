"""Read-only view data the feed hands to the UI, and pure derivations on it (phase, elapsed).

A ``View`` is built in the feed's worker thread from the model's ``Report`` and is never
mutated afterwards, so widgets read it on the UI thread without locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from profiler.model.results import Check, Migration, Report

TERMINAL_OUTCOMES = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class LogRow:
    """One event-log line, pre-formatted in the feed thread."""

    t: str  # seconds from the first event, or ``#seq`` without timestamps
    side: str
    event: str
    device: str
    text: str


@dataclass(frozen=True, slots=True)
class HealthItem:
    label: str
    value: str
    level: str = "ok"  # ok | warn | error


@dataclass(frozen=True, slots=True)
class View:
    """What the UI shows at one moment (live: now; replay: the cursor)."""

    mode: str  # live | replay
    report: Report | None
    title: str = "migprof"
    seq: int = 0  # update counter
    cursor_ns: int | None = None  # epoch ns of "now" (live) or of the replay cursor
    first_ns: int | None = None  # first / last event time of the whole input (replay) or so far
    last_ns: int | None = None
    applied: int = 0  # events applied to the model
    total: int = 0  # events in the input (replay) or received (live)
    timed: bool = True  # False: the input has no timestamps; positions are event numbers
    playing: bool = False
    speed: float = 1.0
    full: Report | None = None  # replay: the report of the whole input (ranges, seek marks)
    log_rows: tuple[LogRow, ...] = ()
    log_matches: int = 0
    log_filter: str = ""
    health: tuple[HealthItem, ...] = ()
    status: str = "running"  # running | ended | failed
    error: str | None = None
    notices: tuple[str, ...] = field(default_factory=tuple)

    def migration(self, index: int | None) -> Migration | None:
        """The migration at ``index`` (None: the latest one)."""
        if self.report is None or not self.report.migrations:
            return None
        migs = self.report.migrations
        if index is None or index >= len(migs):
            return migs[-1]
        return migs[max(index, 0)]

    def full_migration(self, mig: Migration | None) -> Migration | None:
        """The same migration in the whole-input report (replay), else ``mig``."""
        if mig is None or self.full is None:
            return mig
        for m in self.full.migrations:
            if m.index == mig.index:
                return m
        return mig


def cursor_ms(view: View, mig: Migration | None) -> float | None:
    """The cursor in ms from the migration's start; None without timestamps."""
    if mig is None or mig.start_ns is None or view.cursor_ns is None:
        return None
    return (view.cursor_ns - mig.start_ns) / 1e6


def elapsed_ms(view: View, mig: Migration | None) -> float | None:
    """Elapsed migration time at the cursor; the total once it has ended."""
    if mig is None:
        return None
    if mig.outcome in TERMINAL_OUTCOMES and mig.total_ms is not None:
        return mig.total_ms
    c = cursor_ms(view, mig)
    if c is not None:
        return max(c, 0.0)
    return mig.total_ms if mig.outcome in TERMINAL_OUTCOMES else None


def phase(mig: Migration | None) -> str:
    """setup, pre-copy (pass N), stop-and-copy, completed, failed, cancelled."""
    if mig is None:
        return "waiting"
    if mig.outcome in TERMINAL_OUTCOMES:
        return mig.outcome
    if mig.switchover_ms is not None:
        return "stop-and-copy"
    if mig.view == "kernel":  # no QEMU status or RAM pass: the devices' pre-copy rounds
        return f"pre-copy round {max([len(d.rounds) for d in mig.devices] + [1])}"
    states = [s.state for s in mig.states]
    if "device" in states:
        return "stop-and-copy"
    if "active" in states or mig.checks:
        n = sum(1 for p in mig.passes if p.phase == "precopy")
        return f"pre-copy pass {n + 1}"
    return "setup"


def downtime_so_far_ms(view: View, mig: Migration | None) -> float | None:
    """Downtime measured (completed) or running since switchover (stop-and-copy)."""
    if mig is None:
        return None
    if mig.downtime_ms is not None:
        return mig.downtime_ms
    if mig.switchover_ms is not None and mig.outcome not in TERMINAL_OUTCOMES:
        c = cursor_ms(view, mig)
        if c is not None:
            return max(c - mig.switchover_ms, 0.0)
    return None


def check_x(check: Check, i: int) -> float:
    """A check's position on the time axis: its t_ms, or its index without timestamps."""
    return check.t_ms if check.t_ms is not None else float(i)


def last_check(mig: Migration | None) -> Check | None:
    if mig is None or not mig.checks:
        return None
    return mig.checks[-1]


def last_threshold(mig: Migration | None) -> int | None:
    """The newest known threshold (a check's, else None)."""
    if mig is None:
        return None
    for c in reversed(mig.checks):
        if c.threshold_bytes is not None:
            return c.threshold_bytes
    return None
