"""Cost of the kernel view (profiler/model/kernel.py) inside `build_report`.

Two workloads, from the real mtty capture tests/data/real-vfio/converges:

* traced: its trace, QMP and BPF rows (the usual live case): `build_report` with the kernel
  view's hook against the same build with the hook replaced by one returning nothing (the
  baseline, measured in the same run): the ratio is what the hook adds;
* kernel only: its BPF rows alone, copied N times one after another (N migrations of one
  process pair): the kernel view's own time, per migration, and against the baseline of one
  `value_counts` over `event` on the same frame (the least any pass over it costs).

    .venv/bin/python bench/bench_kernel_view.py [--copies 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profiler import events as E  # noqa: E402
from profiler import pipeline  # noqa: E402
from profiler.model import build as B  # noqa: E402
from profiler.model.kernel import kernel_view  # noqa: E402
from profiler.model.migrations import split  # noqa: E402

RUN = ROOT / "tests/data/real-vfio/converges"


def median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def copies(bpf: pd.DataFrame, n: int) -> pd.DataFrame:
    span = int(bpf["t_ns"].max() - bpf["t_ns"].min()) + 10**9
    parts = []
    for i in range(n):
        p = bpf.copy()
        p["t_ns"] = p["t_ns"] + i * span
        p["seq"] = p["seq"] + i * len(bpf)
        parts.append(p)
    return E.concat(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=15)
    a = ap.parse_args()
    loaded = pipeline.load([str(RUN)])
    ev = loaded.events
    real = B.kernel_view
    on, off = [], []
    try:  # interleaved, so a busy neighbour slows both alike
        for _ in range(a.reps):
            for hook, acc in ((real, on), (lambda *_a, **_k: (), off)):
                B.kernel_view = hook
                acc.append(median_ms(lambda: B.build_report(ev, meta=loaded.meta), 1))
    finally:
        B.kernel_view = real
    with_hook, without = statistics.median(on), statistics.median(off)
    print(f"traced lab run ({len(ev)} events, {int((ev['origin'] == 'bpf').sum())} BPF): build_report "
          f"{with_hook:.1f} ms with the kernel view, {without:.1f} ms without: x{with_hook / without:.2f}")
    bpf = ev[ev["origin"].eq("bpf").to_numpy(dtype=bool)].reset_index(drop=True)
    big = copies(bpf, a.copies)
    spans = split(big).spans
    base = median_ms(lambda: big["event"].value_counts(), a.reps)
    warn: list[str] = []
    n = len(kernel_view(big, spans, first_index=0, warn=warn))
    k = median_ms(lambda: kernel_view(big, spans, first_index=0, warn=[]), max(3, a.reps // 5))
    print(f"kernel only ({len(big)} BPF rows, {n} migrations): kernel_view {k:.1f} ms, "
          f"{k / max(n, 1) * 1e3:.0f} µs a migration, x{k / base:.0f} a value_counts ({base:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
