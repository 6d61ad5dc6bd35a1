"""Speed of the model (`build_report`) on event tables of the sizes the live TUI feeds it.

The TUI calls build_report up to 10 times a second, so the budget is 100 ms. Printed per
workload: the median time, its ratio to that budget, and its ratio to a baseline measured in
the same run on the same frame (one value_counts over `event` plus one boolean filter: the
least any pass over the table costs).

Each workload is timed cold (no objects remembered from an earlier build: `migprof report`)
and as a live refresh (the TUI's case: the frame grew by 0.1 s of events, ~1 %, since the
last build, so the unchanged checks' objects are reused through the caller's PrefixCache; see
profiler/model/prefix_cache.py).

    .venv/bin/python bench/bench_model.py [--events 100000]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profiler import events as E  # noqa: E402
from profiler.model import build_report  # noqa: E402
from profiler.model.prefix_cache import PrefixCache  # noqa: E402


def _synthetic(n_events: int) -> pd.DataFrame:
    """One long never-converging 9.2 VFIO migration (SYNTHETIC, from the test generator)."""
    spec = importlib.util.spec_from_file_location("synthetic_migrations",
                                                  ROOT / "tests/data/synthetic/migrations/make.py")
    make = importlib.util.module_from_spec(spec)
    sys.modules["synthetic_migrations"] = make
    spec.loader.exec_module(make)
    lg = make.Log((9, 2), name="bench.log")
    make._setup(lg)
    make._precopy(lg, dirty_per_pass=48 * make.MiB, stop_size=16 * make.MiB, init=4 * make.MiB,
                  dirty0=make.MiB, max_checks=max(10, n_events // 3), downtime_ms=10)
    return E.conform(pd.DataFrame(lg.rows[:n_events]))


def _real() -> pd.DataFrame:
    from profiler.sources.qemu_log import parse_bytes, read_log

    d = ROOT / "tests/data/real/10.0-transferred-bytes"
    src = parse_bytes(gzip.decompress((d / "source.log.gz").read_bytes()), side="source").frame
    return E.concat([src, read_log(d / "destination.log", side="destination").frame])


def _time(fn, repeat: int) -> float:
    """Median CPU time of this process in ms (the box is shared: wall time is mostly others')."""
    ts = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return statistics.median(ts) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    for name, df in (("real 10.0 flood log", _real()), (f"synthetic {a.events} events", _synthetic(a.events))):
        def base(df=df):
            df["event"].value_counts()
            return df[(df["event"] == "migrate_pending_estimate").to_numpy()]
        b = _time(base, a.repeat)
        rep = build_report(df)

        def cold(df=df):
            build_report(df)

        grown = df.iloc[: len(df) - max(1, len(df) // 100)].reset_index(drop=True)

        def live(df=df, grown=grown):
            cache = PrefixCache()
            build_report(grown, cache=cache)  # the previous refresh (untimed)
            t = time.process_time()
            build_report(df, cache=cache)
            return time.process_time() - t

        m = _time(cold, a.repeat)
        lv = statistics.median(live() for _ in range(a.repeat)) * 1000
        checks = sum(len(x.checks) for x in rep.migrations)
        for what, v in (("cold", m), ("live refresh", lv)):
            print(f"{name:28} {len(df):7d} events {checks:6d} checks  {what:12} {v:7.1f} ms  "
                  f"= {v / 100:.2f}x the 10 Hz budget, {v / b:.1f}x baseline ({b:.1f} ms)")


if __name__ == "__main__":
    main()
