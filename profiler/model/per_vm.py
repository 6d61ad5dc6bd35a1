"""The events of many QEMUs kept apart by pid, each QEMU's report built from its own events only.

``migprof top`` follows every QEMU on a host through one event stream; each row must show
the numbers ``migprof report`` gives for that QEMU, so each QEMU gets the report of exactly
its events. Each QEMU has its own ``IncrementalModel`` (only its open migration is built
again); a build still costs a few to tens of ms, so a QEMU is rebuilt only when it has new
events, at most every ``min_gap_s``, and no more often than
keeps the time spent building within ``budget`` of the wall clock: with many migrations at
once each row refreshes less often instead of the process taking more CPU. A change of
migration status or a new pass makes its QEMU due at ``min_gap_s`` whatever the budget, and
``flush()`` builds every QEMU with news at once (the final numbers).
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

# rows that move a row's status or pass: its QEMU is rebuilt soon whatever the budget
STATUS_EVENTS = (E.QMP_MIGRATION, E.QMP_MIGRATION_PASS, "migrate_set_state",
                 "migration_bitmap_sync_end", E.LIBVIRT_LIFECYCLE)


@dataclass(slots=True)
class _Vm:
    model: IncrementalModel
    frames: list[pd.DataFrame] = field(default_factory=list)  # every event (the full TUI's start)
    events: int = 0
    built_events: int = 0  # events the report was built from
    report: Report | None = None
    urgent: bool = False
    built_at: float = -1e18  # when (the caller's clock, s) it was last built
    build_s: float = 0.0  # how long that build took (s)
    error: str | None = None  # the last build's error (the report before it is kept)


class VmModels:
    """Takes event batches of many QEMUs; gives each one's report (``report(pid)``).

    ``build``: ``build_report`` bound to its context (``incremental.bind``; by default inputs
    ["live"]). Not thread-safe: one owner
    feeds it and refreshes it. Rows without a pid (a host-wide ``bpf_lost``) are counted in
    ``unattributed`` and belong to no QEMU.
    """

    def __init__(self, build: Build | None = None, *, min_gap_s: float = 1.0, budget: float = 0.03):
        self._build = build or bind(inputs=["live"])
        self.min_gap_s = min_gap_s
        self.budget = budget
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
        pid = batch["pid"]
        known = pid.notna().to_numpy(dtype=bool)
        self.unattributed += int((~known).sum())
        if not known.any():
            return set()
        part = batch if known.all() else batch[known]
        codes, uniques = pd.factorize(part["pid"])
        status = part["event"].isin(STATUS_EVENTS).to_numpy(dtype=bool, na_value=False)
        touched = set()
        for i, p in enumerate(uniques.tolist()):
            rows = codes == i
            vm = self._vm(int(p))
            sub = part if len(uniques) == 1 else part[rows]
            vm.frames.append(sub)
            vm.model.add(sub)
            vm.events += len(sub)
            vm.urgent |= bool(np.any(status & rows))
            touched.add(int(p))
        return touched

    def _vm(self, pid: int) -> _Vm:
        vm = self._vms.get(pid)
        if vm is None:
            vm = self._vms[pid] = _Vm(IncrementalModel(self._build))
        return vm

    def _due(self, vm: _Vm, now: float, active: int) -> bool:
        if vm.events == vm.built_events:
            return False
        since = now - vm.built_at
        if since < self.min_gap_s:
            return False
        # each QEMU's share of the budget: its build time over the gap stays below budget/active
        return vm.urgent or since >= vm.build_s * max(active, 1) / self.budget

    def refresh(self, now: float) -> list[int]:
        """Build the QEMUs that are due at ``now`` (seconds, any monotonic clock)."""
        active = sum(1 for vm in self._vms.values() if vm.events != vm.built_events)
        done = [p for p, vm in list(self._vms.items()) if self._due(vm, now, active)]
        for p in done:
            self._rebuild(p, now)
        return done

    def flush(self, now: float = 0.0) -> list[int]:
        """Build every QEMU with events not yet in its report."""
        done = [p for p, vm in self._vms.items() if vm.events != vm.built_events]
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
