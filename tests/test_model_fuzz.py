"""The model never crashes on partial, shuffled or mangled event tables (REAL lab traces)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiler import events as E
from profiler.model import build_report
from profiler.model.results import to_json

REAL = Path(__file__).resolve().parent / "data" / "real"


def _frame(name: str) -> pd.DataFrame:
    from profiler.sources.jsonl import read_events_jsonl
    from profiler.sources.qemu_log import read_log

    d = REAL / name
    return E.concat([read_log(d / "source.log", side="source").frame,
                     read_log(d / "destination.log", side="destination").frame,
                     read_events_jsonl(d / "events.jsonl")])


FRAMES = {n: _frame(n) for n in ("10.0-cancel-retry", "7.2-destination-dies")}


def _ok(rep) -> None:
    j = json.loads(json.dumps(to_json(rep), allow_nan=False))
    assert j["schema"] == "migprof.report/1"
    for m in j["migrations"]:
        assert m["outcome"] in ("completed", "failed", "cancelled", "incomplete")
        assert m["dirty_syncs"] >= 0


def test_growing_prefixes_as_the_live_view_sees_them() -> None:
    """Every prefix of the file is a valid report; the last migration is incomplete until its end."""
    df = FRAMES["10.0-cancel-retry"]
    src = df[(df["origin"] == "qemu-log") & (df["side"] == "source")].reset_index(drop=True)
    done = int(np.flatnonzero((src["event"] == "migrate_set_state") & (src["state"] == "completed"))[0])
    for n in list(range(1, len(src), 37)) + [done, done + 1]:
        rep = build_report(src.iloc[:n])
        _ok(rep)
        if rep.migrations and n <= done:
            assert rep.migrations[-1].outcome in ("incomplete", "cancelled")
    assert build_report(src.iloc[: done + 1]).migrations[-1].outcome == "completed"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(FRAMES)), seed=st.integers(0, 2**32 - 1),
       keep=st.floats(0.0, 1.0), drop_time=st.booleans(), unknown_side=st.booleans(),
       shuffle=st.booleans())
def test_mangled_tables_never_crash(name, seed, keep, drop_time, unknown_side, shuffle) -> None:
    rng = np.random.default_rng(seed)
    df = FRAMES[name]
    df = df[rng.random(len(df)) < keep].reset_index(drop=True)
    if shuffle:
        df = df.sample(frac=1.0, random_state=seed % 2**31).reset_index(drop=True)
    if drop_time:
        df["t_ns"] = pd.array([pd.NA] * len(df), dtype="Int64")
    if unknown_side:
        df["side"] = pd.Categorical(["unknown"] * len(df))
    _ok(build_report(df))
