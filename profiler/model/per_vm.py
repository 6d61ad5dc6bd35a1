"""The events of many QEMUs kept apart by pid, each QEMU's report built from its own events only.

``migprof top`` follows every QEMU on a host through one event stream; each row must show
the numbers ``migprof report`` gives for that QEMU, so each QEMU gets the report of exactly
its events. Each QEMU has its own ``IncrementalModel`` (only its open migration is built
again); a build still costs a few to tens of ms, so a QEMU is rebuilt only when it has new
events, at most every ``min_gap_s``, and only while the time spent building stays within
``budget`` of the wall clock (a credit earned at that rate, up to ``burst_s``; the QEMU
waiting longest goes first): with many migrations at once each row refreshes less often
instead of the process taking more CPU. A final migration status (completed, failed,
cancelled) is built at ``min_gap_s`` whatever the credit; ``flush()`` builds every QEMU
with news at once (the final numbers). A QEMU whose events would make no migration
(parameters read, a monitor connected) is not built at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from profiler import events as E
from profiler.model.incremental import Build, IncrementalModel, bind
from profiler.model.results import Report

# rows of a migration status: a final one makes its QEMU due soon
STATUS_EVENTS = (E.QMP_MIGRATION, "migrate_set_state", E.QMP_QUERY_MIGRATE)
FINAL = ("completed", "failed", "cancelled")
# rows of a QEMU that is not migrating (parameters read, a monitor connected): a report
# of these alone has no migration, so none is built for them
IDLE_EVENTS = (E.QMP_PARAMS, E.QMP_EVENT, E.LIBVIRT_LIFECYCLE)


@dataclass(slots=True)
class _Vm:
    model: IncrementalModel
    frames: list[pd.DataFrame] = field(default_factory=list)  # every event (the full TUI's start)
    events: int = 0
    built_events: int = 0  # events the report was built from
    report: Report | None = None
    urgent: bool = False
    busy: bool = False  # it had an event a report would make a migration of
    built_at: float = -1e18  # when (the caller's clock, s) it was last built
    build_s: float = 0.0  # how long that build took (s)
    error: str | None = None  # the last build's error (the report before it is kept)


def _of(events: pd.Series, names: tuple[str, ...]) -> np.ndarray | None:
    """Rows whose event is one of ``names``; None when none is (read off the categories,
    without a pass over the rows, for a categorical column)."""
    cats = getattr(getattr(events, "cat", None), "categories", None)
    if cats is not None and not cats.isin(names).any():
        return None
    rows = events.isin(names).to_numpy(dtype=bool, na_value=False)
    return rows if rows.any() else None


class VmModels:
    """Takes event batches of many QEMUs; gives each one's report (``report(pid)``).

    ``build``: ``build_report`` bound to its context (``incremental.bind``; by default inputs
    ["live"]). Not thread-safe: one owner
    feeds it and refreshes it. Rows without a pid (a host-wide ``bpf_lost``) are counted in
    ``unattributed`` and belong to no QEMU.
    """

    def __init__(self, build: Build | None = None, *, min_gap_s: float = 1.0, budget: float = 0.015,
                 burst_s: float = 0.05):
        self._build = build or bind(inputs=["live"])
        self.min_gap_s = min_gap_s
        self.budget = budget
        self.burst_s = burst_s
        # building time one may spend now: earned at ``budget`` s a second up to ``burst_s``,
        # spent by each build (a final status builds on credit)
        self._credit = burst_s
        self._credit_at: float | None = None
        self._vms: dict[int, _Vm] = {}
        self.unattributed = 0
        self.builds = 0
        self.build_s = 0.0  # total time spent building

    def pids(self) -> list[int]:
        return list(self._vms)

    def track(self, pid: int) -> None:
        """Know ``pid`` before any event of its arrives (its row shows "waiting")."""
        self._vm(int(pid))

    def forget(self, pid: int) -> None:
        self._vms.pop(int(pid), None)

    def add(self, batch: pd.DataFrame) -> set[int]:
        """Take a batch of events (any mix of QEMUs); returns the pids it touched."""
        if batch is None or not len(batch):
            return set()
        # live batches come by the dozen a second, most of one QEMU: cheap tests first
        pid = batch["pid"].to_numpy(dtype="float64", na_value=np.nan)
        known = ~np.isnan(pid)
        if not known.all():
            self.unattributed += int((~known).sum())
            if not known.any():
                return set()
            batch, pid = batch[known], pid[known]
        events = batch["event"]
        final = _of(events, STATUS_EVENTS)
        if final is not None:
            final = final & batch["state"].isin(FINAL).to_numpy(dtype=bool, na_value=False)
        idle = _of(events, IDLE_EVENTS)
        busy = None if idle is None else ~idle
        first = pid[0]
        if (pid == first).all():
            parts = [(int(first), batch, None)]
        else:
            # one reorder by QEMU, then a slice each (a boolean mask per QEMU copies the
            # whole frame once per QEMU)
            codes, uniques = pd.factorize(pid)
            order = np.argsort(codes, kind="stable")
            ordered = batch.iloc[order]
            ends = np.cumsum(np.bincount(codes, minlength=len(uniques)))
            parts = [(int(p), ordered.iloc[end - n:end], order[end - n:end])
                     for p, end, n in zip(uniques, ends, np.diff(ends, prepend=0), strict=True)]
        for p, sub, rows in parts:
            vm = self._vm(p)
            vm.frames.append(sub)
            if len(vm.frames) >= 256:  # joined now and then: a few large frames, not thousands
                vm.frames = [E.concat(vm.frames)]
            vm.model.add(sub)
            vm.events += len(sub)
            vm.urgent |= final is not None and bool(final.any() if rows is None else final[rows].any())
            vm.busy |= busy is None or bool(busy.any() if rows is None else busy[rows].any())
        return {p for p, _, _ in parts}

    def _vm(self, pid: int) -> _Vm:
        vm = self._vms.get(pid)
        if vm is None:
            vm = self._vms[pid] = _Vm(IncrementalModel(self._build))
        return vm

    def _due(self, vm: _Vm, now: float) -> bool:
        return vm.busy and vm.events != vm.built_events and now - vm.built_at >= self.min_gap_s

    def refresh(self, now: float) -> list[int]:
        """Build the QEMUs that are due at ``now`` (seconds, any monotonic clock): those
        with news, the one waiting longest first, while there is credit (a final status
        whatever the credit)."""
        if self._credit_at is not None:
            self._credit = min(self.burst_s, self._credit + (now - self._credit_at) * self.budget)
        self._credit_at = now
        due = sorted((vm.built_at, p) for p, vm in self._vms.items() if self._due(vm, now))
        done = []
        for _, p in due:
            vm = self._vms[p]
            if vm.urgent or self._credit > 0:
                self._rebuild(p, now)
                self._credit -= vm.build_s
                done.append(p)
        return done

    def flush(self, now: float = 0.0) -> list[int]:
        """Build every QEMU with events not yet in its report."""
        done = [p for p, vm in self._vms.items() if vm.busy and vm.events != vm.built_events]
        for p in done:
            self._rebuild(p, now)
        return done

    def _rebuild(self, pid: int, now: float) -> None:
        vm = self._vms[pid]
        t0 = time.perf_counter()
        try:
            vm.report = vm.model.report()
            vm.error = None
        except Exception as e:  # one QEMU's odd input must not stop the others' rows
            vm.error = f"{type(e).__name__}: {e}"
        vm.build_s = time.perf_counter() - t0
        self.build_s += vm.build_s
        self.builds += 1
        vm.built_events, vm.built_at, vm.urgent = vm.events, now, False

    def events(self, pid: int) -> pd.DataFrame:
        """Every event of ``pid`` so far, in one frame (kept as one from then on)."""
        vm = self._vms.get(int(pid))
        if vm is None or not vm.frames:
            return E.empty_frame()
        if len(vm.frames) > 1:
            vm.frames = [E.concat(vm.frames)]
        return vm.frames[0]

    def report(self, pid: int) -> Report | None:
        vm = self._vms.get(int(pid))
        return vm.report if vm is not None else None

    def error(self, pid: int) -> str | None:
        vm = self._vms.get(int(pid))
        return vm.error if vm is not None else None

    def count(self, pid: int) -> int:
        vm = self._vms.get(int(pid))
        return vm.events if vm is not None else 0

    def reports(self, pids: Iterable[int] | None = None) -> dict[int, Report | None]:
        return {p: self.report(p) for p in (self._vms if pids is None else pids)}
