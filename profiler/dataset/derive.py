"""A recording's report as the dataset's derived tables: one row per recording, migration,
check and device (Arrow tables of :mod:`profiler.dataset.schema`)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from profiler.dataset import schema as S
from profiler.model.results import Device, Migration, Report
from profiler.store import qemu_version_of


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) or math.isinf(f) else f


def _int(v: Any) -> int | None:
    if isinstance(v, int | np.integer):  # never through float: ns timestamps need all 64 bits
        return int(v)
    f = _num(v)
    return None if f is None else int(f)


def _map(d: Mapping[str, Any] | None) -> list[tuple[str, int]] | None:
    if not d:
        return None
    return [(str(k), int(v)) for k, v in d.items() if _num(v) is not None]


def exact_qemu_version(meta: Mapping[str, Any]) -> str | None:
    """The QEMU release a recording names: QMP greeting, lab ``run.json`` (either form)."""
    qv = qemu_version_of(dict(meta))
    if qv:
        return qv
    run = meta.get("run")
    d = run.get("qemu_version") if isinstance(run, dict) else None
    if isinstance(d, dict) and d.get("major") is not None:  # QMP's {major, minor, micro}
        return ".".join(str(d.get(k, 0)) for k in ("major", "minor", "micro"))
    return None


def device_drivers(meta: Mapping[str, Any], devices: Iterable[Device]) -> dict[str, str]:
    """The host driver of each VFIO device: ``meta["device_drivers"]`` ({name: driver},
    what a recorder learns from sysfs) first; the nested lab's mdev is ``mtty``; any other
    VFIO device is ``unknown``."""
    given = meta.get("device_drivers")
    given = given if isinstance(given, dict) else {}
    run = meta.get("run")
    lab = "mtty" if isinstance(run, dict) and isinstance(run.get("mtty"), dict) else None
    out = {}
    for d in devices:
        if d.kind != "vfio":
            continue
        names = (d.name, *d.aliases)
        hit = next((str(given[n]) for n in names if given.get(n)), None)
        out[d.name] = hit or lab or "unknown"
    return out


def _compare_metrics(m: Migration) -> dict[str, Any]:
    """The per-migration metrics exactly as ``migprof compare`` computes them from the report."""
    at = m.verdict.converged_at_check
    sent, total = _num(m.transferred_bytes), _num(m.total_ms)
    bw = sent / (total / 1000.0) if sent is not None and total else _num(m.verdict.bandwidth_bytes_per_s)
    reads = [_num(d.read_ms) for d in m.devices if d.name and _num(d.read_ms) is not None]
    return {
        "checks": len(m.checks) or None,
        "checks_to_converge": at + 1 if at is not None else None,
        "bandwidth_bytes_per_s": bw,
        "read_ms": float(sum(reads)) if reads else None,
    }


def _table(cols: dict[str, list], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(cols[f.name], type=f.type, from_pandas=True) for f in schema], schema=schema)


def derive(report: Report, recording: str, meta: Mapping[str, Any], *,
           source_path: str = "", events: int | None = None) -> dict[str, pa.Table]:
    """The derived tables of one recording's report (``recording`` is its id)."""
    exact = exact_qemu_version(meta)
    mig = {f.name: [] for f in S.MIGRATIONS}
    chk = {f.name: [] for f in S.CHECKS}
    dev = {f.name: [] for f in S.DEVICES}
    for m in report.migrations:
        drivers = device_drivers(meta, m.devices)
        v = m.verdict
        row = {
            "recording": recording, "migration": m.index, "side": m.side, "view": m.view,
            "outcome": m.outcome,
            "dest_outcome": m.dest_outcome, "error": m.error,
            "qemu_version": exact or m.qemu_version, "qemu_family": m.qemu_version,
            "device_driver": ",".join(sorted(set(drivers.values()))) or None,
            "vfio_devices": len(drivers),
            "start_ns": _int(m.start_ns), "end_ns": _int(m.end_ns),
            "dirty_syncs": None if m.view == "kernel" else _int(m.dirty_syncs),  # BPF alone sees none
            "transferred_bytes": _int(m.transferred_bytes),
            "vfio_transferred_bytes": _int(m.vfio_transferred_bytes),
            "converged": m.converged, "verdict": v.summary,
            "converged_at_check": v.converged_at_check, "min_gap_bytes": _int(v.min_gap_bytes),
            "dirty_rate_bytes_per_s": _num(v.dirty_rate_bytes_per_s),
            "verdict_bandwidth_bytes_per_s": _num(v.bandwidth_bytes_per_s),
            "needed_downtime_limit_ms": _num(v.needed_downtime_limit_ms),
            "needed_bandwidth_bytes_per_s": _num(v.needed_bandwidth_bytes_per_s),
            "suggested_downtime_limit_ms": _num(v.suggested_downtime_limit_ms),
            "suggested_bandwidth_bytes_per_s": _num(v.suggested_bandwidth_bytes_per_s),
            "post_sync_pending_bytes": _int(v.post_sync_pending_bytes),
            "precopy_stuck": v.precopy_stuck, "dominant_device": v.dominant_device,
            "params_json": json.dumps(m.params, default=str, sort_keys=True) if m.params else None,
            **_compare_metrics(m),
        }
        for k in ("setup_ms", "total_ms", "downtime_ms", "stopcopy_ms", "switchover_ms",
                  "dest_start_ms", "dest_end_ms", "switchover_ack_ms", "switchover_approved_ms",
                  "downtime_limit_ms", "max_bandwidth_bytes_per_s"):
            row[k] = _num(getattr(m, k))
        for k, col in mig.items():
            col.append(row[k])
        for i, c in enumerate(m.checks):
            for k, val in (("recording", recording), ("migration", m.index), ("check", i),
                           ("t_ms", _num(c.t_ms)), ("kind", c.kind),
                           ("pending_bytes", _int(c.pending_bytes)), ("pre_bytes", _int(c.pre_bytes)),
                           ("post_bytes", _int(c.post_bytes)),
                           ("threshold_bytes", _int(c.threshold_bytes)), ("gap_bytes", _int(c.gap_bytes)),
                           ("below_threshold", c.below_threshold), ("decisive", c.decisive),
                           ("pass_no", _int(c.pass_no)),
                           ("bandwidth_bytes_per_ms", _num(c.bandwidth_bytes_per_ms)),
                           ("device_pending_bytes", _map(c.devices))):
                chk[k].append(val)
        for d in m.devices:
            row = {"recording": recording, "migration": m.index, "device": d.name, "kind": d.kind,
                   "driver": drivers.get(d.name), "side": d.side, "idstr": d.idstr,
                   "bytes_by_phase": _map(d.bytes_by_phase), "aliases": list(d.aliases) or None}
            for k in ("precopy_bytes", "stopcopy_bytes", "initial_pending_bytes",
                      "dirty_pending_bytes", "stopcopy_size_bytes", "read_calls", "write_calls"):
                row[k] = _int(getattr(d, k))
            for k in ("downtime_ms", "load_ms", "stopcopy_thread_ms", "read_ms", "read_p50_us",
                      "read_max_us", "write_ms", "write_p50_us", "write_max_us"):
                row[k] = _num(getattr(d, k))
            for k, col in dev.items():
                col.append(row[k])
    sources = meta.get("sources")
    rec = {
        "recording": [recording], "created_ns": [_int(meta.get("created_ns"))],
        "recorded_on": [meta.get("host")], "kernel": [meta.get("kernel")],
        "machine": [meta.get("machine")], "migprof_version": [meta.get("migprof_version")],
        "stored_schema_version": [_int(meta.get("stored_schema_version", meta.get("schema_version")))],
        "qemu_version": [exact],
        "sources": [[str(s) for s in sources] if isinstance(sources, list) else None],
        "events": [report.events if events is None else events],
        "malformed_lines": [_int(meta.get("malformed_lines", report.malformed_lines))],
        "skipped_lines": [_int(meta.get("skipped_lines", report.skipped_lines))],
        "migrations": [len(report.migrations)], "source_path": [source_path or None],
        "meta_json": [json.dumps(dict(meta), default=str, sort_keys=True)],
    }
    return {"recordings": _table(rec, S.RECORDINGS), "migrations": _table(mig, S.MIGRATIONS),
            "checks": _table(chk, S.CHECKS), "devices": _table(dev, S.DEVICES)}
