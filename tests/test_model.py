"""Model tests on SYNTHETIC migrations (tests/data/synthetic/migrations, from the exact format strings).

Each scenario is checked twice: from the schema rows the generator emits and from the log text
parsed by profiler.sources.qemu_log, so the model is tested on what `migprof report` really sees.
Expected values are counted from the generated events directly, not from model code.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from profiler import events as E
from profiler.model import build_report
from profiler.model.results import to_json

SYN = Path(__file__).resolve().parent / "data" / "synthetic" / "migrations"
_spec = importlib.util.spec_from_file_location("synthetic_migrations", SYN / "make.py")
make = importlib.util.module_from_spec(_spec)
sys.modules["synthetic_migrations"] = make  # dataclasses look their module up there
_spec.loader.exec_module(make)

MiB = 1 << 20


def frame(logs, how: str) -> pd.DataFrame:
    if how == "rows":
        return E.concat([E.conform(pd.DataFrame(lg.rows)) for lg in logs])
    from profiler.sources.qemu_log import parse_bytes

    return E.concat([parse_bytes(lg.text().encode(), side=lg.side, file=lg.name).frame for lg in logs])


def per_migration(rows: list[dict]) -> list[list[dict]]:
    """Cut generator rows at `migrate_set_state new state setup` (independent of the model)."""
    out: list[list[dict]] = []
    for r in rows:
        if r["event"] == "migrate_set_state" and r.get("state") == "setup":
            out.append([])
        if out:
            out[-1].append(r)
    return out


def count(rows, event) -> int:
    return sum(1 for r in rows if r["event"] == event)


HOW = ["rows", "parsed"]


@pytest.mark.parametrize("how", HOW)
def test_v81_converging(how: str) -> None:
    lg = make.v81_converging()
    rep = build_report(frame([lg], how))
    assert len(rep.migrations) == 1
    m = rep.migrations[0]
    assert m.outcome == "completed" and m.converged is True
    assert m.dirty_syncs == count(lg.rows, "migration_bitmap_sync_end") == 3
    kinds = [r["event"] for r in lg.rows if r["event"].startswith("migrate_pending")]
    assert [c.kind for c in m.checks] == [k.split("_")[-1] for k in kinds]
    # threshold: 0 before the first migrate_transferred window, then its max_size
    first_win = next(r for r in lg.rows if r["event"] == "migrate_transferred")
    assert m.checks[0].threshold_bytes == 0
    assert m.checks[-1].threshold_bytes == first_win["threshold_bytes"]
    # 8.1 double counts: the exact device contribution is stopcopy + init + dirty (hex sizes)
    ex = next(r for r in lg.rows if r["event"] == "vfio_state_pending_exact")
    last = m.checks[-1]
    assert last.kind == "exact"
    assert last.devices[make.DEV] == ex["stopcopy_bytes"] + ex["init_bytes"] + ex["dirty_bytes"]
    assert last.devices["ram"] + last.devices[make.DEV] == last.pending_bytes
    assert m.verdict.converged_at_check == len(m.checks) - 1
    # no checkpoints before 8.2: downtime = switch-over decision .. completed
    t_low = next(r["t_ns"] for r in lg.rows if r["event"] == "migration_thread_low_pending")
    t_done = next(r["t_ns"] for r in lg.rows if r.get("state") == "completed")
    assert m.downtime_ms == pytest.approx((t_done - t_low) / 1e6)
    assert m.total_ms == pytest.approx((t_done - lg.rows[0]["t_ns"]) / 1e6)
    dev = next(d for d in m.devices if d.kind == "vfio")
    assert dev.precopy_bytes == 4 * MiB and dev.stopcopy_bytes == 2 * MiB
    assert dev.initial_pending_bytes == 4 * MiB
    assert [s.state for s in dev.states] == ["PRE_COPY", "STOP_COPY", "STOP"]
    assert all(s.confirmed for s in dev.states)  # <= 9.0: set_state prints after the ioctl
    assert m.qemu_version == ">=8.1"


@pytest.mark.parametrize("how", HOW)
def test_v92_cancel_then_retry(how: str) -> None:
    lg = make.v92_cancel_retry()
    rep = build_report(frame([lg], how))
    migs = per_migration(lg.rows)
    assert [m.outcome for m in rep.migrations] == ["cancelled", "completed"]
    for m, rows in zip(rep.migrations, migs, strict=True):
        assert m.dirty_syncs == count(rows, "migration_bitmap_sync_end")
        assert len(m.checks) == sum(count(rows, e) for e in ("migrate_pending_estimate", "migrate_pending_exact"))
        assert m.start_ns == rows[0]["t_ns"]
    bad, good = rep.migrations
    assert bad.converged is False and bad.downtime_ms is None
    v = bad.verdict
    gaps = [c.pending_bytes - c.threshold_bytes for c in bad.checks]
    assert v.min_gap_bytes == min(gaps) > 0
    closest = bad.checks[v.min_gap_check]
    # downtime-limit that would have let the closest check pass: pending / bandwidth (bytes/ms)
    assert v.needed_downtime_limit_ms * closest.bandwidth_bytes_per_ms > closest.pending_bytes
    assert (v.needed_downtime_limit_ms - 1) * closest.bandwidth_bytes_per_ms <= closest.pending_bytes
    assert bad.downtime_limit_ms == 10  # inferred from max_size / bandwidth
    assert v.needed_bandwidth_bytes_per_s == pytest.approx(closest.pending_bytes / 10 * 1000)
    assert v.dominant_device == "ram"
    assert "did not converge" in v.summary and "cancelled" in v.summary
    # RAM pending only grows at a sync; none happened after setup, so no dirty rate is claimed
    assert v.dirty_rate_bytes_per_s is None and v.bandwidth_bytes_per_s is not None
    # >= 9.2: exact counts the stop-copy size only
    ex = next(r for r in migs[1] if r["event"] == "vfio_state_pending_exact")
    assert good.checks[-1].devices[make.DEV] == ex["stopcopy_bytes"]
    # >= 9.1: set_state is a request, set_device_state the confirmation
    dev = next(d for d in good.devices if d.kind == "vfio")
    assert [(s.state, s.confirmed) for s in dev.states][:2] == [("PRE_COPY", False), ("PRE_COPY", True)]
    # downtime from the checkpoints, split per device
    t = {r["state"]: r["t_ns"] for r in migs[1] if r["event"] == "vmstate_downtime_checkpoint"}
    assert good.downtime_ms == pytest.approx((t["src-downtime-end"] - t["src-downtime-start"]) / 1e6)
    assert dev.downtime_ms == pytest.approx(5.2) and dev.idstr == make.IDSTR
    ram = next(d for d in good.devices if d.kind == "ram")
    assert ram.downtime_ms == pytest.approx(2.1)
    assert [d.name for d in good.devices if d.kind == "other"] == ["cpu"]
    assert good.qemu_version == bad.qemu_version == ">=9.2"


@pytest.mark.parametrize("how", HOW)
def test_v100_multifd_with_destination(how: str) -> None:
    src, dst = make.v100_multifd()
    rep = build_report(frame([src, dst], how))
    assert len(rep.migrations) == 1
    m = rep.migrations[0]
    assert m.outcome == "completed" and m.dest_outcome == "completed"
    dev = next(d for d in m.devices if d.kind == "vfio")
    assert dev.stopcopy_bytes is None  # multifd: no vfio_save_block in stop-copy
    assert dev.stopcopy_thread_ms == pytest.approx(3.0)
    assert dev.stopcopy_size_bytes == 8 * MiB
    assert dev.load_ms == pytest.approx(6.1) and dev.downtime_ms == pytest.approx(5.2)
    sides = {s.side for s in dev.states}
    assert sides == {"source", "destination"}
    states = [(s.side, s.state) for s in m.states]
    assert ("source", "device") in states and ("destination", "completed") in states
    assert [s.t_ms for s in m.states] == sorted(s.t_ms for s in m.states)


def test_destination_died_is_incomplete() -> None:
    src, dst = make.v100_multifd()
    cut = next(i for i, r in enumerate(dst.rows) if r["event"] == "vmstate_downtime_load")
    dst.rows = dst.rows[:cut]
    rep = build_report(frame([src, dst], "rows"))
    assert rep.migrations[0].dest_outcome == "incomplete"


def test_no_timestamps() -> None:
    lg = make.v92_cancel_retry()
    df = frame([lg], "rows")
    df["t_ns"] = pd.array([pd.NA] * len(df), dtype="Int64")
    df["clock_ns"] = df["t_ns"]
    rep = build_report(df)
    assert [m.outcome for m in rep.migrations] == ["cancelled", "completed"]
    m = rep.migrations[1]
    assert m.total_ms is None and m.downtime_ms is None and m.start_ns is None
    assert all(c.t_ms is None for c in m.checks)
    assert m.dirty_syncs == 3 and m.converged
    # the bandwidth still comes from the migrate_transferred windows (bytes / time_spent)
    assert rep.migrations[0].verdict.bandwidth_bytes_per_s is not None


def test_unknown_side_is_judged_from_events() -> None:
    src, dst = make.v100_multifd()
    df = frame([src, dst], "rows")
    df["side"] = pd.Categorical(["unknown"] * len(df))
    rep = build_report(df)
    assert len(rep.migrations) == 1 and rep.migrations[0].dest_outcome == "completed"


def test_source_and_destination_without_timestamps_pair_by_order() -> None:
    src, dst = make.v100_multifd()
    df = frame([src, dst], "rows")
    df["t_ns"] = pd.array([pd.NA] * len(df), dtype="Int64")
    rep = build_report(df)
    assert len(rep.migrations) == 1 and rep.migrations[0].dest_outcome == "completed"


def test_log_starting_mid_migration() -> None:
    lg = make.v81_converging()
    first_check = next(i for i, r in enumerate(lg.rows) if r["event"] == "migrate_pending_estimate")
    rows = lg.rows[first_check:]
    rep = build_report(E.conform(pd.DataFrame(rows)))
    assert len(rep.migrations) == 1 and rep.migrations[0].outcome == "completed"


def _qmp(t_ns: int, event: str, **kw) -> dict:
    return {"t_ns": t_ns, "side": "source", "origin": "qmp", "event": event, **kw}


def test_qmp_final_values_and_params() -> None:
    lg = make.v81_converging()
    t0, t_end = lg.rows[0]["t_ns"], lg.rows[-1]["t_ns"]
    reply = {"return": {"status": "completed", "total-time": 111, "downtime": 7, "setup-time": 2,
                        "ram": {"dirty-sync-count": 3, "precopy-bytes": 1000, "downtime-bytes": 200,
                                "transferred": 5000, "mbps": 10.0}}}
    rows = lg.rows + [
        _qmp(t0 - 5_000_000, E.QMP_PARAMS, detail=json.dumps({"downtime-limit": 300, "max-bandwidth": 1 << 30})),
        _qmp(t0 + 50_000_000, E.QMP_PARAMS, detail=json.dumps({"downtime-limit": 500})),
        _qmp(t_end + 1_000_000, E.QMP_QUERY_MIGRATE, state="completed", detail=json.dumps(reply)),
    ]
    rep = build_report(E.conform(pd.DataFrame(rows)))
    m = rep.migrations[0]
    assert (m.total_ms, m.downtime_ms, m.setup_ms) == (111.0, 7.0, 2.0)
    assert m.sources["total_ms"] == "query-migrate"
    assert m.downtime_limit_ms == 500 and m.max_bandwidth_bytes_per_s == 1 << 30
    assert [mk["label"] for mk in m.markers] == ["set downtime-limit=500"]
    ram = next(d for d in m.devices if d.kind == "ram")
    assert (ram.precopy_bytes, ram.stopcopy_bytes, m.transferred_bytes) == (1000, 200, 5000)
    assert not rep.warnings


def test_flood_of_unused_events_is_ignored() -> None:
    lg = make.v81_converging()
    base = build_report(frame([lg], "rows"))
    n = 50_000
    flood = pd.DataFrame({"event": ["migration_transferred_bytes"] * n, "side": "source", "clock": "realtime",
                          "origin": "qemu-log", "file": lg.name,
                          "t_ns": np.linspace(lg.rows[0]["t_ns"], lg.rows[-1]["t_ns"], n).astype(np.int64),
                          "seq": np.arange(n) + 10_000})
    rep = build_report(E.concat([frame([lg], "rows"), E.conform(flood)]))
    a, b = to_json(base), to_json(rep)
    assert b["events"] == a["events"] + n
    a.pop("events"), b.pop("events")
    assert a == b


def test_empty_and_no_migration() -> None:
    rep = build_report(E.empty_frame(), inputs=("x.log",))
    assert rep.migrations == () and "x.log: no migration found" in rep.warnings[0]
    lg = make.v81_converging()
    realize = [r for r in lg.rows if r["event"].startswith("vfio_migration_set")][:1]
    rep = build_report(E.conform(pd.DataFrame(realize)))
    assert rep.migrations == ()


def test_input_frame_is_not_modified() -> None:
    df = frame([make.v81_converging()], "rows")
    before = df.copy()
    build_report(df)
    pd.testing.assert_frame_equal(df, before)


def test_json_has_the_issue_shape() -> None:
    rep = build_report(frame([make.v81_converging()], "rows"), inputs=("a.log",))
    j = json.loads(json.dumps(to_json(rep)))
    assert j["schema"] == "migprof.report/1"
    assert {"malformed_lines", "warnings", "migrations"} <= set(j)
    m = j["migrations"][0]
    assert {"outcome", "setup_ms", "total_ms", "downtime_ms", "dirty_syncs", "converged",
            "verdict", "checks", "devices"} <= set(m)
    assert isinstance(m["verdict"], str) and m["verdict"] == m["verdict_detail"]["summary"]
    assert {"t_ms", "kind", "pending_bytes", "threshold_bytes"} <= set(m["checks"][0])
    d = m["devices"][0]
    assert {"name", "kind", "precopy_bytes", "stopcopy_bytes", "downtime_ms", "load_ms", "states"} <= set(d)
    assert {dv["kind"] for dv in m["devices"]} <= {"ram", "vfio", "other"}


def test_qmp_and_bpf_device_states() -> None:
    """QMP VFIO_MIGRATION events are confirmations; a BPF SET is confirmed only when it succeeded,
    a GET answer is no change. The side traces one VFIO device, so the QMP id and the BPF fd
    name join it (no device of their own)."""
    lg = make.v92_cancel_retry()
    t = lg.rows[-1]["t_ns"] - 1_000_000
    bpf = {"side": "source", "origin": "bpf", "event": E.BPF_IOCTL, "device": "fd14"}
    extra = [
        _qmp(t, E.QMP_VFIO_MIGRATION, device="vfio0", state="stop-copy"),
        {**bpf, "t_ns": t + 1, "state": "STOP", "ret": 0, "detail": "SET MIG_DEVICE_STATE"},
        {**bpf, "t_ns": t + 2, "state": "RUNNING", "ret": -22, "detail": "SET MIG_DEVICE_STATE"},
        {**bpf, "t_ns": t + 3, "state": "STOP", "ret": 0, "detail": "GET MIG_DEVICE_STATE"},
    ]
    rep = build_report(E.conform(pd.DataFrame(lg.rows + extra)))
    m = rep.migrations[1]
    assert [d.name for d in m.devices if d.kind == "vfio"] == [make.DEV]
    dev = m.devices[1]
    assert set(dev.aliases) == {"vfio0", "fd14"}
    assert [(s.state, s.confirmed) for s in dev.states if s.origin == "qmp"] == [("stop-copy", True)]
    bpf_states = [(s.state, s.confirmed) for s in dev.states if s.origin == "bpf"]
    assert bpf_states == [("STOP", True), ("RUNNING", False)]


def test_qmp_device_id_joins_through_the_command_line() -> None:
    """With two VFIO devices the single-device rule cannot apply: the `-device vfio-pci,host=,id=`
    options in the run's metadata map each QMP id to its host name; an id without one stays apart."""
    lg = make.v92_cancel_retry()
    t = lg.rows[-1]["t_ns"] - 1_000_000
    other = "0000:5e:00.0"
    extra = [
        {**lg.rows[-1], "t_ns": t - 5, "event": "vfio_migration_set_device_state", "device": other,
         "state": "STOP", "raw": None, "line": None},
        _qmp(t, E.QMP_VFIO_MIGRATION, device="nic1", state="stop-copy"),
        _qmp(t + 1, E.QMP_VFIO_MIGRATION, device="gpu0", state="stop-copy"),
        _qmp(t + 2, E.QMP_VFIO_MIGRATION, device="stray", state="stop"),
    ]
    meta = {"run": {"source_cmdline": f"qemu -device vfio-pci,host={make.DEV},id=nic1 "
                                      f"-device vfio-pci,sysfsdev=/sys/bus/pci/devices/{other},id=gpu0"}}
    m = build_report(E.conform(pd.DataFrame(lg.rows + extra)), meta=meta).migrations[1]
    vfio = {d.name: d for d in m.devices if d.kind == "vfio"}
    assert set(vfio) == {make.DEV, other, "stray"}
    assert vfio[make.DEV].aliases == ("nic1",)
    assert vfio[other].aliases == ("gpu0",)
    assert ("stop-copy", "qmp") in [(s.state, s.origin) for s in vfio[other].states]
    # without the metadata nothing can be joined: each id is a device of its own
    m = build_report(E.conform(pd.DataFrame(lg.rows + extra))).migrations[1]
    assert {"nic1", "gpu0", "stray"} <= {d.name for d in m.devices if d.kind == "vfio"}


def test_synthetic_logs_match_their_generator() -> None:
    for lg in make.all_logs():
        assert (SYN / lg.name).read_text() == lg.text(), f"rerun {SYN / 'make.py'}"


def test_live_refresh_on_a_growing_frame_equals_a_fresh_build() -> None:
    """The TUI rebuilds the open migration on a growing frame; objects reused from the last
    build (a PrefixCache) must give exactly what a build from nothing gives."""
    from profiler.model.prefix_cache import PrefixCache

    src, dst = make.v100_multifd()
    full = frame([src, dst], "text")
    full = E.sort_timeline(full)
    cuts = (len(full) // 3, 2 * len(full) // 3, len(full))
    fresh = [to_json(build_report(full.iloc[:n].reset_index(drop=True))) for n in cuts]
    cache = PrefixCache()
    reps = []
    for n, want in zip(cuts, fresh, strict=True):
        reps.append(build_report(full.iloc[:n].reset_index(drop=True), cache=cache))
        assert to_json(reps[-1]) == want
    # the later build holds the earlier build's objects for the unchanged checks (reused, not
    # made again); a build without the cache makes its own
    a, b = reps[1].migrations[0].checks, reps[2].migrations[0].checks
    assert a and b[0] is a[0] and b[len(a) // 2] is a[len(a) // 2]
    assert build_report(full).migrations[0].checks[0] is not a[0]
    # a changed value inside the reused prefix is seen (the prefix is compared, not trusted)
    bumped = full.copy()
    i = int(np.flatnonzero((bumped["event"] == "migrate_pending_exact").to_numpy())[0])
    bumped.loc[i, "bytes"] = bumped.loc[i, "bytes"] + 4096
    m = build_report(bumped, cache=cache).migrations[0]
    k = next(j for j, c in enumerate(m.checks) if c.kind == "exact")
    assert m.checks[k].pending_bytes == int(full.loc[i, "bytes"]) + 4096


def test_streams_with_and_without_a_file_on_both_sides() -> None:
    """Parsed logs (a file each) with QMP and BPF rows that have none, on both sides: each
    non-file stream joins its side's migration."""
    src, dst = make.v100_multifd()
    logs = frame([src, dst], "text")
    t = int(logs["t_ns"].dropna().iloc[len(logs) // 2])
    extra = E.conform(pd.DataFrame([
        {**_qmp(t, E.QMP_VFIO_MIGRATION, device="dev0", state="stop-copy")},
        {"t_ns": t + 1, "side": "destination", "origin": "bpf", "event": E.BPF_DATA_WRITE,
         "device": "fd9", "bytes": 4096, "ret": 4096, "dur_ns": 2000, "state": "RESUMING"},
        {"t_ns": t + 2, "side": "source", "origin": "bpf", "event": E.BPF_DATA_READ,
         "device": "fd7", "bytes": 4096, "ret": 4096, "dur_ns": 1000, "state": "STOP_COPY"},
    ]))
    m = build_report(E.concat([logs, extra])).migrations[0]
    vfio = [d for d in m.devices if d.kind == "vfio"]
    assert [d.name for d in vfio] == [make.DEV]  # one device per side here: every alias joins it
    d = vfio[0]
    assert set(d.aliases) == {"dev0", "fd7", "fd9"}
    assert (d.read_calls, d.write_calls) == (1, 1)
    assert d.bytes_by_phase == {"RESUMING": 4096, "STOP_COPY": 4096}
    assert d.read_p50_us == 1.0 and d.write_max_us == 2.0


def test_bpf_bytes_disagreeing_with_the_trace_are_a_warning_and_both_stay_visible() -> None:
    """A SYNTHETIC BPF read charged to PRE_COPY that the trace did not see: the trace's figure
    stays the device's, BPF's is in bytes_by_phase, and the warning names both; lost BPF
    events are a warning too."""
    lg = make.v81_converging()
    base = build_report(E.conform(pd.DataFrame(lg.rows))).migrations[0].devices[1]
    t0 = lg.rows[0]["t_ns"]
    bpf = {"side": "source", "origin": "bpf", "device": "fd14"}
    extra = [
        {**bpf, "t_ns": t0 + 1_000, "event": E.BPF_DATA_READ, "bytes": 999, "ret": 999, "dur_ns": 500,
         "state": "PRE_COPY"},
        {**bpf, "t_ns": t0 + 2_000, "event": E.BPF_PRECOPY_INFO, "init_bytes": 7, "dirty_bytes": 3, "ret": 0},
        {**bpf, "t_ns": t0 + 3_000, "event": E.BPF_LOST, "count": 5, "device": None},
    ]
    rep = build_report(E.conform(pd.DataFrame(lg.rows + extra)))
    d = rep.migrations[0].devices[1]
    assert d.name == base.name and d.precopy_bytes == base.precopy_bytes
    assert d.sources["precopy_bytes"] == "trace+bpf"
    assert d.bytes_by_phase == {"PRE_COPY": 999}
    assert d.initial_pending_bytes == base.initial_pending_bytes  # the trace's, when it has one
    assert d.sources["initial_pending_bytes"] == "trace+bpf"
    assert any(f"initial bytes: trace says {base.initial_pending_bytes}, BPF VFIO_MIG_GET_PRECOPY_INFO 7" in w
               for w in rep.warnings)
    assert any(f"trace says {base.precopy_bytes}, BPF data-fd reads 999" in w for w in rep.warnings)
    assert any("BPF lost 5 events" in w for w in rep.warnings)


def test_a_real_device_name_from_bpf_is_not_folded_into_another() -> None:
    """BPF knows a device's name from the group ioctl or fdinfo; one that differs from the
    side's only traced device is another device (only fdN names and QMP ids are guessed)."""
    lg = make.v81_converging()
    t = lg.rows[0]["t_ns"] + 1_000
    bpf = {"side": "source", "origin": "bpf", "event": E.BPF_DATA_READ, "ret": 10, "bytes": 10,
           "dur_ns": 100, "state": "PRE_COPY"}
    extra = [{**bpf, "t_ns": t, "device": "0000:5e:00.0"}, {**bpf, "t_ns": t + 1, "device": "fd20"}]
    m = build_report(E.conform(pd.DataFrame(lg.rows + extra))).migrations[0]
    vfio = {d.name: d for d in m.devices if d.kind == "vfio"}
    assert set(vfio) == {make.DEV, "0000:5e:00.0"}
    assert vfio[make.DEV].aliases == ("fd20",)
    assert vfio["0000:5e:00.0"].read_calls == 1 and vfio["0000:5e:00.0"].side == "source"
