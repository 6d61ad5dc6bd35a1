"""Many QEMUs' events in one stream, kept apart by pid; each row reads its QEMU's report.

Real lab runs (tests/data/real) stand for QEMUs on one host: the source side of two runs
gets a pid each, their events are interleaved into mixed batches, and every QEMU's report
must equal the report of its own events alone (what ``migprof report`` gives for it); the
row's numbers must be that report's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import REAL

from profiler import events as ev
from profiler.model.build import build_report
from profiler.model.per_vm import IDLE_EVENTS, STATUS_EVENTS, VmModels
from profiler.model.results import to_json
from profiler.model.vm_row import phase, row_json, verdict_word, vm_row
from profiler.pipeline import load


def side_events(run: str, pid: int, side: str = "source") -> pd.DataFrame:
    df = load([str(REAL / run)]).events
    df = df[(df["side"] == side).to_numpy(dtype=bool, na_value=False)].reset_index(drop=True)
    df["pid"] = pd.array([pid] * len(df), dtype="Int64")
    return df


def interleave(frames: list[pd.DataFrame], n: int) -> list[pd.DataFrame]:
    """The frames' rows in one timeline, cut into ``n`` mixed batches."""
    allr = ev.concat(frames)
    allr = allr.iloc[np.argsort(allr["t_ns"].fillna(0).to_numpy(dtype="int64"), kind="stable")]
    cuts = np.linspace(0, len(allr), n + 1).astype(int)
    return [allr.iloc[i:j] for i, j in zip(cuts[:-1], cuts[1:], strict=True) if j > i]


def _report(df: pd.DataFrame):
    return build_report(df, inputs=["live"])


@pytest.fixture(scope="module")
def two():
    a = side_events("7.2-converges", 101)
    b = side_events("10.0-downtime-raise", 202)
    return a, b


def test_each_qemu_gets_the_report_of_its_own_events(two):
    a, b = two
    models = VmModels()
    for batch in interleave([a, b], 17):
        models.add(batch)
        models.refresh(0.0)
    models.flush()
    assert sorted(models.pids()) == [101, 202]
    for pid, own in ((101, a), (202, b)):
        assert models.count(pid) == len(own)
        got, want = models.report(pid), _report(own)
        assert to_json(got) == to_json(want)
        mig = want.migrations[-1]
        row = vm_row(got, pid=pid, label=f"vm{pid}", side="source", events=models.count(pid))
        assert (row.status, row.phase, row.verdict) == ("completed", "completed", "ok")
        assert row.pass_no == mig.dirty_syncs
        assert row.downtime_ms == mig.downtime_ms and row.total_ms == mig.total_ms
        assert row.pending_bytes == mig.checks[-1].pending_bytes
        assert row.threshold_bytes == mig.checks[-1].threshold_bytes
        assert row.bandwidth_bytes_per_s == mig.checks[-1].bandwidth_bytes_per_ms * 1000
        assert row.expected_downtime_ms == pytest.approx(
            mig.checks[-1].pending_bytes / mig.checks[-1].bandwidth_bytes_per_ms)
        assert row.summary == mig.verdict.summary
        assert row_json(row)["pass_no"] == mig.dirty_syncs


def test_mid_migration_row(two):
    """Cut in the middle of the pre-copy: status active, phase pre-copy, the passes so far."""
    a, _ = two
    t = a["t_ns"].astype("float64")
    rows = a[(a["event"] == "migration_bitmap_sync_end").to_numpy(dtype=bool, na_value=False)]
    cut = float(rows["t_ns"].iloc[1]) + 1  # after the second dirty sync
    part = a[(t <= cut).to_numpy(dtype=bool, na_value=False)]
    models = VmModels()
    models.add(part)
    models.flush()
    rep = models.report(101)
    row = vm_row(rep, pid=101, label="x", side="source")
    assert (row.status, row.phase) == ("active", "pre-copy")
    assert row.verdict in ("converging", "stuck", "starting")
    assert row.pass_no == rep.migrations[-1].dirty_syncs >= 2
    assert row.pending_bytes == rep.migrations[-1].checks[-1].pending_bytes
    # the same QEMU once it has gone, mid-migration
    assert vm_row(rep, pid=101, label="x", side="source", alive=False).status == "gone"


@pytest.mark.parametrize("run,words", [
    ("7.2-cancel-retry", [("cancelled", "cancelled"), ("completed", "ok")]),
    ("7.2-destination-dies", [("failed", "failed")]),
])
def test_outcome_words(run, words):
    rep = _report(side_events(run, 1))
    got = [(phase(m), verdict_word(m)) for m in rep.migrations]
    assert got == words


def test_no_migration_yet():
    models = VmModels()
    models.track(7)
    assert models.pids() == [7] and models.report(7) is None
    row = vm_row(models.report(7), pid=7, label="pid 7", side="source")
    assert (row.status, row.phase, row.verdict, row.migrations) == ("none", "waiting", "idle", 0)
    assert row.pending_bytes is None


def test_rows_without_pid_belong_to_no_qemu(two):
    a, _ = two
    lost = ev.conform(pd.DataFrame({"t_ns": pd.array([1], dtype="Int64"), "event": [ev.BPF_LOST],
                                    "origin": "bpf", "side": "unknown",
                                    "count": pd.array([3], dtype="Int64")}))
    models = VmModels()
    assert models.add(ev.concat([a.iloc[:5], lost])) == {101}
    assert models.unattributed == 1 and models.count(101) == 5


def test_rebuilds_follow_news_gap_and_budget(two):
    a, _ = two
    ev_ = a["event"].astype(str)
    plain = a[~ev_.isin(STATUS_EVENTS).to_numpy()]
    plain = plain[~plain["event"].isin(IDLE_EVENTS).to_numpy(dtype=bool, na_value=False)]
    sets = a[(ev_ == "migrate_set_state").to_numpy()]
    first, middle = sets.iloc[:1], sets.iloc[1:2]
    final = sets[(sets["state"] == "completed").to_numpy(dtype=bool, na_value=False)]
    assert len(first) and len(middle) and len(final)
    # credit for one build, then a budget no ordinary rebuild fits in
    models = VmModels(min_gap_s=1.0, budget=1e-9, burst_s=1e-6)
    # a QEMU whose events make no migration is not built (its row is idle all the same)
    params = a[(ev_ == ev.QMP_PARAMS).to_numpy()]
    assert len(params)
    models.add(params)
    assert models.refresh(0.0) == [] and models.flush() == [] and models.report(101) is None
    models.add(plain.iloc[:50])
    assert models.refresh(0.0) == [101]  # the first build: on the credit there is
    assert models.refresh(100.0) == []  # no news, no build
    models.add(plain.iloc[50:60])
    assert models.refresh(100.0) == []  # news, but over the budget
    models.add(first)
    models.add(middle)
    assert models.refresh(101.5) == []  # a status on the way: the budget decides
    models.add(final)
    assert models.refresh(101.5) == [101]  # the final status: due at once...
    models.add(final)
    assert models.refresh(102.0) == []  # ...but never within the gap of the last build
    assert models.refresh(102.5) == [101]
    models.add(plain.iloc[60:70])
    assert models.flush() == [101]  # the end: everything built
    assert models.builds == 4
