"""The incremental model (profiler/model/incremental.py) against full builds of the same
events, at many cut points of real lab recordings (tests/data/real, tests/data/real-vfio)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from profiler import events as ev
from profiler import pipeline
from profiler.model import build_report
from profiler.model.incremental import IncrementalModel, bind, first_ns
from profiler.model.results import Report

DATA = Path(__file__).resolve().parent / "data"
RUNS = sorted(
    p for d in ("real", "real-vfio") for p in (DATA / d).iterdir() if (p / "run.json").exists()
)
CUTS = 24  # cut points per recording


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two model results differ. Floats compare to 1e-9 relative: a tail build sums
    times relative to its own first event, so the last bits of a rate may differ."""
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        return [
            d
            for f in dataclasses.fields(a)
            for d in differences(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
        ]
    if isinstance(a, tuple | list) and isinstance(b, tuple | list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return [d for k in a for d in differences(a[k], b[k], f"{path}[{k!r}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def same_report(got: Report, want: Report) -> list[str]:
    return differences(got, want)


def load(run: Path) -> pd.DataFrame:
    return ev.sort_timeline(pipeline.load([str(run)]).events)


def cut_points(n: int) -> list[int]:
    return sorted(set(np.linspace(1, n, CUTS).astype(int).tolist()))


def test_the_recordings_hold_several_migrations():
    """The cut points below only test freezing if some recording has more than one migration."""
    multi = [r.name for r in RUNS if len(build_report(load(r)).migrations) >= 2]
    assert len(multi) >= 2, multi


@pytest.mark.parametrize("run", RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_equals_the_full_build_at_every_cut(run: Path):
    """At each cut point, the report equals build_report over the events so far:
    live, batches arrive in time order and the model builds only the open migration;
    replay, jumping to the cut (backwards), the migrations that ended before the open one
    come from the whole input's report."""
    events = load(run)
    whole = build_report(events)
    t = events["t_ns"].to_numpy(dtype="float64")
    live, replay = IncrementalModel(), IncrementalModel()
    cuts = cut_points(len(events))
    wants = {}
    last = 0
    for cut in cuts:
        wants[cut] = want = build_report(events.iloc[:cut])
        live.add(events.iloc[last:cut])
        last = cut
        got = live.report()
        assert got.events == cut
        assert not same_report(got, want), ("live", cut, same_report(got, want)[:5])
    froze = 0
    for cut in reversed(cuts):
        cursor = None if np.isnan(t[:cut]).all() else int(np.nanmax(t[:cut]))
        replay.restart(events, cut, whole, cursor)
        froze += bool(replay.frozen)
        got = replay.report()
        assert not same_report(got, wants[cut]), ("replay", cut, same_report(got, wants[cut])[:5])
    if len(whole.migrations) >= 2:
        assert live.frozen, "a finished migration followed by another was frozen"
        assert live.tail_events < len(events)  # the tail no longer holds the frozen one
        # the cut is the open migration's first event, on the side that began first
        assert live.cut_ns == first_ns(whole.migrations[-1]) <= whole.migrations[-1].start_ns
        assert froze, "some prefix took its finished migration from the whole report"


def test_a_retry_keeps_what_its_log_showed_before_it():
    """In a cancel-and-retry run the destination enters setup before the source does: the
    tail must start at the destination's first event, or the retry loses its setup state.
    Only the cancelled attempt printed ``migration_cancel`` (a 10.0 event): the retry's
    QEMU release still counts it, as a build over the whole log does."""
    run = next(r for r in RUNS if r.name == "10.0-cancel-retry")
    events = load(run)
    retry = build_report(events).migrations[1]
    assert retry.dest_start_ms is not None and retry.dest_start_ms < 0
    assert retry.qemu_version == ">=10.0"
    cancels = np.flatnonzero((events["event"] == "migration_cancel").to_numpy(dtype=bool))
    switch = np.flatnonzero((events["state"] == "device").to_numpy(dtype=bool, na_value=False))
    assert cancels[0] < switch[0] < cancels[1]  # the retry prints its own only at its cleanup
    pre = int(switch[0]) - 5  # in the retry's pre-copy: no 10.0-only event of its own yet
    retry_active = np.flatnonzero((events["state"] == "active").to_numpy(dtype=bool, na_value=False))[-1]
    model = IncrementalModel()
    model.add(events.iloc[: retry_active + 1])
    model.report()  # both attempts built; the cancelled one is frozen
    assert model.frozen
    model.add(events.iloc[retry_active + 1 : pre])
    rep = model.report()  # the retry alone built
    assert len(rep.migrations) == 2
    assert "migration_cancel" not in set(model._tail["event"].astype(str))
    assert build_report(model._tail).migrations[0].qemu_version != ">=10.0"  # the tail alone
    mid = build_report(events.iloc[:pre]).migrations[1]
    assert mid.qemu_version == ">=10.0"
    assert rep.migrations[1].qemu_version == mid.qemu_version
    assert rep.migrations[1].dest_start_ms == mid.dest_start_ms == retry.dest_start_ms
    assert rep.migrations[1].states[0].side == "destination"


def test_context_and_reuse_across_reports():
    """``bind`` carries the report context into every build; between reports without new
    events nothing is rebuilt, and the open migration's unchanged checks are reused objects."""
    run = next(r for r in RUNS if r.name == "10.0-downtime-raise")  # 29 checks
    events = load(run)
    model = IncrementalModel(bind(inputs=("a.log",), malformed=3, not_a_parameter=1))
    half = len(events) // 2
    model.add(events.iloc[:half])
    first = model.report()
    assert first is model.report()  # nothing new: the same report
    assert first.inputs == ("a.log",) and first.malformed_lines == 3
    model.add(events.iloc[half:])
    second = model.report()
    a, b = first.migrations[-1].checks, second.migrations[-1].checks
    assert a and len(b) > len(a) and b[0] is a[0]


def test_a_model_error_keeps_the_events_for_the_next_report():
    """A build that raises leaves what was taken in place; the next report includes it."""
    events = load(RUNS[0])
    calls = []

    def flaky(frame: pd.DataFrame, **incremental) -> Report:
        calls.append(len(frame))
        if len(calls) == 1:
            raise RuntimeError("model bug")
        return build_report(frame, **incremental)

    model = IncrementalModel(flaky)
    model.add(events)
    with pytest.raises(RuntimeError):
        model.report()
    assert not same_report(model.report(), build_report(events))
    assert calls == [len(events), len(events)]
