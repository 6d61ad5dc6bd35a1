"""Live numbers as OpenMetrics families: a pure function from each VM's report, and the session sink that keeps one VM's report.

``families`` turns reports into prometheus_client metric families (names and labels in
docs/metrics.md): per VM (labels ``vm``, ``pid``, ``side``) its latest migration's status,
pass, pending, threshold, bandwidth, expected and final downtime, and per device (``device``,
``kind``, and ``phase`` for bytes) what the report has of it. Any feed of reports can serve
them: ``ReportMetrics`` (``live``, ``record``) keeps an incremental model of one QEMU's
events; ``migprof top`` has a report per QEMU already. ``profiler.metrics_server`` serves
them over HTTP.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, StateSetMetricFamily
from prometheus_client.metrics_core import Metric

from profiler import events as ev
from profiler.model.incremental import IncrementalModel, bind
from profiler.model.results import Report
from profiler.model.vm_row import TERMINAL, status

log = logging.getLogger(__name__)

PREFIX = "migprof_"
VM_LABELS = ("vm", "pid", "side")
DEVICE_LABELS = (*VM_LABELS, "device", "kind")
DEVICE_KINDS = ("ram", "vfio")  # as compare: other vmstate devices would be dozens of series
# QEMU's MigrationStatus values, and "none" before any migration: the status state set
STATUSES = ("none", "setup", "cancelling", "cancelled", "active", "postcopy-active",
            "postcopy-paused", "postcopy-recover-setup", "postcopy-recover", "completed",
            "failed", "colo", "pre-switchover", "device", "wait-unplug")


@dataclass(frozen=True, slots=True)
class VmMetrics:
    """One QEMU as metrics see it: who it is, the report over its events so far, and how
    many events that report covers and were lost before reaching it."""

    vm: str  # libvirt domain, QEMU's -name, or "pid N"
    pid: int | None
    side: str  # source | destination
    report: Report | None  # None: nothing built yet
    events: int = 0  # events the report was built from
    lost_events: int = 0  # events the kernel dropped (BPF buffer full)


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


def families(vms: Iterable[VmMetrics], device_kinds: Iterable[str] | None = DEVICE_KINDS) -> list[Metric]:
    """The metric families of these VMs (a family with no sample is left out). A VM's
    migration figures are its latest migration's; a figure the report does not have (no
    check yet, no downtime before the end, a kernel-view migration's pass) has no sample."""
    kinds = set(device_kinds) if device_kinds is not None else None
    fam: dict[str, Metric] = {}

    def gauge(name: str, doc: str, labels: tuple[str, ...], lv: list[str], v: float | None) -> None:
        if v is None:
            return
        f = fam.get(name)
        if f is None:
            f = fam[name] = GaugeMetricFamily(PREFIX + name, doc, labels=labels)
        f.add_metric(lv, float(v))

    def counter(name: str, doc: str, labels: tuple[str, ...], lv: list[str], v: float) -> None:
        f = fam.get(name)
        if f is None:
            f = fam[name] = CounterMetricFamily(PREFIX + name, doc, labels=labels)
        f.add_metric(lv, float(v))

    for vm in vms:
        lv = [vm.vm, "" if vm.pid is None else str(vm.pid), vm.side]
        migs = vm.report.migrations if vm.report is not None else ()
        mig = migs[-1] if migs else None
        st = status(mig)
        f = fam.get("migration_status")
        if f is None:
            f = fam["migration_status"] = StateSetMetricFamily(
                PREFIX + "migration_status", "latest migration's status (QEMU's MigrationStatus)",
                labels=VM_LABELS)
        f.add_metric(lv, {s: s == st for s in (*STATUSES, *(() if st in STATUSES else (st,)))})
        counter("events", "events the figures are built from", VM_LABELS, lv, vm.events)
        counter("lost_events", "events lost before migprof saw them (BPF buffer full)", VM_LABELS,
                lv, vm.lost_events)
        for outcome in TERMINAL:
            counter("migrations", "migrations that ended, by outcome", (*VM_LABELS, "outcome"),
                    [*lv, outcome], sum(1 for m in migs if m.outcome == outcome))
        if mig is None:
            continue
        last = mig.checks[-1] if mig.checks else None
        threshold = next((c.threshold_bytes for c in reversed(mig.checks)
                          if c.threshold_bytes is not None), None)
        bw_ms = last.bandwidth_bytes_per_ms if last is not None else None
        bw = bw_ms * 1000.0 if bw_ms else mig.verdict.bandwidth_bytes_per_s
        gauge("migration_pass", "dirty-bitmap syncs so far (QEMU's dirty-sync-count)", VM_LABELS, lv,
              mig.dirty_syncs if mig.view == "qemu" else None)
        gauge("migration_pending_bytes", "bytes pending at the latest convergence check", VM_LABELS,
              lv, last.pending_bytes if last is not None else None)
        gauge("migration_threshold_bytes", "switch-over threshold at the latest check", VM_LABELS, lv,
              threshold)
        gauge("migration_bandwidth_bytes_per_second", "bandwidth behind the threshold", VM_LABELS, lv, bw)
        gauge("migration_expected_downtime_seconds", "downtime a switch-over at the latest check "
              "would cost (pending / bandwidth)", VM_LABELS, lv,
              last.pending_bytes / bw_ms / 1000.0 if last is not None and bw_ms else None)
        gauge("migration_downtime_seconds", "guest downtime measured once the migration ended",
              VM_LABELS, lv, _s(mig.downtime_ms))
        gauge("migration_total_time_seconds", "the migration's time so far, or in all", VM_LABELS, lv,
              _s(mig.total_ms))
        gauge("migration_transferred_bytes", "bytes sent so far", VM_LABELS, lv, mig.transferred_bytes)
        gauge("migration_downtime_limit_seconds", "the downtime-limit parameter in force", VM_LABELS,
              lv, _s(mig.downtime_limit_ms))
        pend = last.devices if last is not None else {}
        for d in mig.devices:
            if not d.name or (kinds is not None and d.kind not in kinds):
                continue
            dl = [*lv, d.name, d.kind]
            for phase, v in (("precopy", d.precopy_bytes), ("stopcopy", d.stopcopy_bytes)):
                gauge("device_transferred_bytes", "bytes a device sent, by phase",
                      (*DEVICE_LABELS, "phase"), [*dl, phase], v)
            gauge("device_pending_bytes", "a device's pending bytes at the latest check",
                  DEVICE_LABELS, dl, pend.get(d.name))
            gauge("device_downtime_seconds", "a device's vmstate save time in downtime",
                  DEVICE_LABELS, dl, _s(d.downtime_ms))
            gauge("device_stopcopy_size_bytes", "the stop-copy size a VFIO device reported last",
                  DEVICE_LABELS, dl, d.stopcopy_size_bytes)
    return list(fam.values())


def lost_in(batch: pd.DataFrame) -> int:
    """Events a batch says were lost (the ``count`` of its ``bpf_lost`` rows)."""
    rows = batch["event"].to_numpy(dtype=object) == ev.BPF_LOST
    if not rows.any():
        return 0
    return int(np.nansum(batch["count"].to_numpy(dtype="float64", na_value=np.nan)[rows]))


class ReportMetrics:
    """A session sink with one QEMU's metrics: its events go into an incremental model,
    built only when metrics are collected (a scrape), so the figures are the model's at
    that moment and an unscraped session pays nothing but the feed.

    ``collect()`` is called from the HTTP server's threads; the model is behind a lock, so a
    scrape holds the next batch back for the build's length (tens of ms: only the open
    migration is built). A build that fails keeps the last report (and says so once in the
    log).
    """

    def __init__(self, vm: str, pid: int | None, side: str, *, inputs: tuple[str, ...] = ("live",),
                 device_kinds: Iterable[str] | None = DEVICE_KINDS):
        self.vm, self.pid, self.side = vm, pid, side
        self.device_kinds = tuple(device_kinds) if device_kinds is not None else None
        self._model = IncrementalModel(bind(inputs=list(inputs)))
        self._lock = threading.Lock()
        self._lost = 0
        self._report: Report | None = None
        self._built = -1  # events the last report covers
        self._failed = False

    # the sink
    def start(self, health: Mapping[str, Any]) -> None:
        pass

    def feed(self, batch: pd.DataFrame) -> None:
        lost = lost_in(batch)
        with self._lock:
            self._model.add(batch)
            self._lost += lost

    def tick(self, now: float) -> None:
        pass

    def close(self, health: Mapping[str, Any]) -> None:
        pass

    # the metrics
    def snapshot(self) -> VmMetrics:
        """The VM as metrics see it now (the model built over every event fed so far)."""
        with self._lock:
            n, lost = self._model.events, self._lost
            if n != self._built:
                try:
                    self._report, self._built = self._model.report(), n
                except Exception as e:  # the last figures stay; the next scrape tries again
                    if not self._failed:
                        log.warning("metrics: building the report failed: %s", e)
                    self._failed = True
            events = self._built if self._built >= 0 else 0
            return VmMetrics(self.vm, self.pid, self.side, self._report, events, lost)

    def collect(self) -> list[Metric]:
        return families([self.snapshot()], self.device_kinds)


def top_collector(board: Any) -> Callable[[], list[Metric]]:
    """`top --metrics`: a VM per QEMU the board shows, with the report its model last built
    (the board's rows and reports are replaced whole, so a scrape from the server's thread
    reads a consistent snapshot of each). Lost events are host-wide in the shared BPF set
    and belong to no VM: 0 here."""

    def collect() -> list[Metric]:
        rows, _host = board.rows()
        models = board.models
        return families([VmMetrics(r.label, r.pid, r.side, models.report(r.pid), models.count(r.pid))
                         for r in rows])

    return collect
