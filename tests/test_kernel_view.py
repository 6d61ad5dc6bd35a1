"""The kernel view on REAL VFIO migrations: the mtty captures' BPF rows alone (tests/data/real-vfio).

Each scenario with a ``bpf.jsonl`` is what QEMU 10.0 and the BPF collector produced for the
kernel's mtty device in the nested lab. With the trace and QMP rows dropped, the kernel view
(profiler/model/kernel.py) must agree with the full model built from everything, on bytes
per device, side and phase and on each device's states: that is real VFIO code's behaviour.
The expected sizes are mtty's own (tests/vfio_checks.py), never the model's.

The rule for when the kernel view applies is checked on the same data: where QEMU's trace or
QMP has the migration of a side, that side stays the QEMU view's.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import pandas as pd
import pytest
from conftest import REAL_VFIO as DATA
from vfio_checks import (
    DESTINATION_STATES,
    MTTY_PRECOPY_BYTES,
    MTTY_STOPCOPY_BYTES,
    MTTY_TOTAL_BYTES,
    SOURCE_STATES,
    WITH_BPF,
)

from profiler import pipeline
from profiler.cli import main
from profiler.model import build_report
from profiler.model.results import Device, Migration, from_json, to_json

_cache: dict[str, Any] = {}


def loaded(name: str) -> pipeline.Loaded:
    if name not in _cache:
        _cache[name] = pipeline.load([str(DATA / name)])
    return _cache[name]


def only(df: pd.DataFrame, keep) -> pd.DataFrame:
    return df[keep(df).to_numpy(dtype=bool)].reset_index(drop=True)


def full_and_kernel(name: str):
    ld = loaded(name)
    full = build_report(ld.events, meta=ld.meta)
    kernel = build_report(only(ld.events, lambda d: d["origin"].eq("bpf")))
    return full, kernel


def uuids(name: str) -> tuple[str, str]:
    mtty = json.loads((DATA / name / "run.json").read_text())["mtty"]
    return mtty["source_uuid"], mtty["destination_uuid"]


def states(d: Device, side: str) -> list[str]:
    return [s.state for s in d.states if s.origin == "bpf" and s.side == side and s.confirmed]


def until_running(seq: list[str]) -> list[str]:
    """A destination's states up to the migration's end (the first RUNNING); later ones are
    the VM shutting down at the end of the lab run."""
    return seq[:seq.index("RUNNING") + 1] if "RUNNING" in seq else seq


def t_abs(m: Migration, t_ms: float) -> float:
    return m.start_ns + t_ms * 1e6


@pytest.mark.parametrize("name", WITH_BPF)
def test_kernel_view_agrees_with_the_full_model(name):
    full, kernel = full_and_kernel(name)
    assert [m.view for m in full.migrations] == ["qemu"]  # the trace's: the kernel view stays out
    assert len(kernel.migrations) == 1, kernel.warnings
    k = kernel.migrations[0]
    f = full.migrations[0]
    assert (k.view, k.side, k.outcome, k.dest_outcome) == ("kernel", "source", "completed", "completed")
    assert not kernel.warnings
    src_uuid, dst_uuid = uuids(name)
    fdev = {d.name: d for d in f.devices if d.kind == "vfio"}
    fsrc, fdst = fdev[src_uuid], fdev[dst_uuid]
    (kd,) = [d for d in k.devices if d.kind == "vfio"]
    # one name on both sides (the collector attached after the devices were opened: fd14)
    assert kd.side == "both"
    # bytes per side and phase: the source's reads, the destination's writes
    src_phases = {p: b for p, b in kd.bytes_by_phase.items() if p != "RESUMING"}
    assert src_phases == fsrc.bytes_by_phase == {"PRE_COPY": MTTY_PRECOPY_BYTES,
                                                  "STOP_COPY": MTTY_STOPCOPY_BYTES}
    assert kd.bytes_by_phase["RESUMING"] == fdst.bytes_by_phase["RESUMING"] == MTTY_TOTAL_BYTES
    assert (kd.precopy_bytes, kd.stopcopy_bytes) == (fsrc.precopy_bytes, fsrc.stopcopy_bytes) == (
        MTTY_PRECOPY_BYTES, MTTY_STOPCOPY_BYTES)
    assert (kd.read_calls, kd.write_calls) == (fsrc.read_calls, fdst.write_calls)
    for k_, f_ in ((kd.read_ms, fsrc.read_ms), (kd.read_p50_us, fsrc.read_p50_us), (kd.read_max_us, fsrc.read_max_us),
                   (kd.write_ms, fdst.write_ms), (kd.write_p50_us, fdst.write_p50_us)):
        assert k_ == pytest.approx(f_)
    # pending from PRECOPY_INFO and the stop-copy size from MIG_DATA_SIZE
    assert kd.initial_pending_bytes == fsrc.initial_pending_bytes == MTTY_PRECOPY_BYTES
    assert kd.stopcopy_size_bytes == fsrc.stopcopy_size_bytes == MTTY_TOTAL_BYTES
    # mtty has all its pre-copy data at once: one round, ended by read() == 0
    assert [(r.bytes, r.reads) for r in kd.rounds] == [(MTTY_PRECOPY_BYTES, 1)]
    assert [c.devices for c in k.checks][0] == {kd.name: MTTY_PRECOPY_BYTES}
    # the device states, as the kernel accepted them
    assert states(kd, "source") == states(fsrc, "source") == SOURCE_STATES
    assert states(kd, "destination") == until_running(states(fdst, "destination")) == DESTINATION_STATES
    # ... at the same moments: the switch-over is the first SET PRE_COPY_P2P
    p2p = next(s for s in fsrc.states if s.origin == "bpf" and s.state == "PRE_COPY_P2P")
    assert abs(t_abs(k, k.switchover_ms) - t_abs(f, p2p.t_ms)) < 1e3
    # what the kernel cannot see stays unknown, not zero
    assert k.downtime_ms is None and k.setup_ms is None and k.transferred_bytes is None
    assert all(d.kind == "vfio" for d in k.devices)  # no RAM
    assert all(c.threshold_bytes is None and c.kind == "precopy_info" for c in k.checks)


@pytest.mark.parametrize("name", WITH_BPF)
def test_json_marks_the_kernel_view_and_reads_back(name, tmp_path):
    """`report --json` of the BPF rows alone: every migration says view "kernel"; the JSON
    form reads back to the same report (a recording's stored summary)."""
    _, kernel = full_and_kernel(name)
    assert from_json(to_json(kernel)) == kernel
    bpf = DATA / name / "bpf.jsonl"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["report", "--json", str(bpf)]) == 0, err.getvalue()
    d = json.loads(out.getvalue())
    assert [m["view"] for m in d["migrations"]] == ["kernel"]
    assert d["migrations"][0]["verdict"].startswith("Kernel view only")
    assert [r["bytes"] for r in d["migrations"][0]["devices"][0]["rounds"]] == [MTTY_PRECOPY_BYTES]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["report", str(bpf)]) == 0
    assert "kernel view only" in out.getvalue()


def test_qmp_owns_its_side_without_a_trace():
    """QMP (no trace) and BPF: QMP's migration is the QEMU view; the kernel view stays out of
    the time it covers (the rule: per side and time)."""
    ld = loaded("converges")
    rep = build_report(only(ld.events, lambda d: d["origin"].isin(["qmp", "bpf"])))
    assert [(m.view, m.outcome) for m in rep.migrations] == [("qemu", "completed")]


def test_destination_with_bpf_alone_gets_the_kernel_view():
    """The source traced, the destination seen by BPF alone: the source stays the QEMU view,
    the destination is a kernel-view migration of its own."""
    ld = loaded("converges")
    ev = ld.events
    rep = build_report(only(ev, lambda d: d["side"].eq("source") | d["origin"].eq("bpf")), meta=ld.meta)
    assert [(m.view, m.side) for m in rep.migrations] == [("qemu", "source"), ("kernel", "destination")]
    k = rep.migrations[1]
    assert k.outcome == "completed" and k.dest_outcome is None
    (d,) = k.devices
    assert d.side == "destination"
    assert d.bytes_by_phase == {"RESUMING": MTTY_TOTAL_BYTES}
    assert states(d, "destination") == DESTINATION_STATES
    # the QEMU view's source migration is what it was without the destination's rows
    alone = build_report(only(ev, lambda d: d["side"].eq("source")), meta=ld.meta)
    q = rep.migrations[0]
    assert (q.outcome, q.total_ms, q.downtime_ms, len(q.checks)) == (
        alone.migrations[0].outcome, alone.migrations[0].total_ms, alone.migrations[0].downtime_ms,
        len(alone.migrations[0].checks))


def test_an_untimed_qemu_view_owns_its_side():
    """A trace without timestamps cannot be placed against BPF's times: its side stays the
    QEMU view's, and the kernel view adds nothing there."""
    ld = loaded("converges")
    ev = only(ld.events, lambda d: d["origin"].isin(["qemu-log", "bpf"])).copy()
    trace = ev["origin"].eq("qemu-log").to_numpy(dtype=bool)
    ev.loc[trace, "t_ns"] = pd.NA
    rep = build_report(ev, meta=ld.meta)
    assert [m.view for m in rep.migrations] == ["qemu"]


@pytest.mark.parametrize("name", WITH_BPF)
def test_incremental_model_on_bpf_alone(name):
    """What `live` builds batch by batch from the BPF rows alone equals a full build at every
    cut point (in `converges` the destination enters RESUMING before the source's first SET)."""
    from test_model_incremental import cut_points, same_report

    from profiler import events as E
    from profiler.model.incremental import IncrementalModel

    events = E.sort_timeline(only(loaded(name).events, lambda d: d["origin"].eq("bpf")))
    model = IncrementalModel()
    last = 0
    for cut in cut_points(len(events)):
        model.add(events.iloc[last:cut])
        last = cut
        diff = same_report(model.report(), build_report(events.iloc[:cut]))
        assert not diff, (cut, diff[:5])
