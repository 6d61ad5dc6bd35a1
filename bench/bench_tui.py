"""TUI speed: apply a batch of new events and refresh with 100 000 events loaded, and replay
at 100x (frame times). Ratios are against ``build_report`` over the same events, measured in
the same run (the model rebuild is the floor of any refresh).

Run: ``.venv/bin/python bench/bench_tui.py [RUN_DIR]`` (default: a run in tests/data/real).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profiler import events as ev  # noqa: E402
from profiler import pipeline  # noqa: E402
from profiler.model import build_report  # noqa: E402
from profiler.sources.base import Source  # noqa: E402
from tui.app import MigprofApp  # noqa: E402
from tui.feed import LiveFeed, ReplayFeed  # noqa: E402
from tui.screens.main import MainScreen  # noqa: E402

TARGET = 100_000
BATCH = 1_000
SIZE = (120, 40)


def pick_run(argv: list[str]) -> Path:
    if argv:
        return Path(argv[0])
    runs = sorted(
        p for p in (ROOT / "tests" / "data" / "real").iterdir() if (p / "run.json").exists()
    )
    for word in ("downtime-raise", "never", "converges"):
        for r in runs:
            if word in r.name:
                return r
    return runs[0]


def replicate(events: pd.DataFrame, target: int) -> pd.DataFrame:
    """Copies of a real run one after another (each shifted past the previous) up to ``target``."""
    e = ev.sort_timeline(events)
    t = e["t_ns"].dropna()
    span = int(t.max() - t.min()) + 1_000_000_000
    copies = []
    for k in range(-(-target // len(e))):
        c = e.copy()
        c["t_ns"] = c["t_ns"] + k * span
        c["clock_ns"] = c["clock_ns"] + k * span
        c["seq"] = c["seq"] + k * len(e)
        copies.append(c)
    return ev.concat(copies).iloc[:target].reset_index(drop=True)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


class TimedScreen(MainScreen):
    """Records how long each screen update (layout + widget render + compositor) takes."""

    def __init__(self, mode: str, log: list[tuple[float, float]]) -> None:
        super().__init__(mode)
        self._log = log

    def _on_timer_update(self) -> None:
        t0 = time.perf_counter()
        super()._on_timer_update()
        self._log.append((t0, time.perf_counter() - t0))


class TimedApp(MigprofApp):
    def __init__(self, feed, *a, **kw) -> None:
        super().__init__(feed, *a, **kw)
        self.frames: list[tuple[float, float]] = []  # (start, seconds) of each screen update
        self.applies: list[tuple[float, float, int]] = []  # (start, seconds, events applied)

    def get_default_screen(self):
        return TimedScreen(self.feed.mode, self.frames)

    def on_model_updated(self, message) -> None:
        t0 = time.perf_counter()
        super().on_model_updated(message)
        self.applies.append((t0, time.perf_counter() - t0, message.view.applied))


class BenchSource(Source):
    """Yields the big frame at once, then one batch each time ``more`` is set."""

    name = "bench"

    def __init__(self, big: pd.DataFrame, batches: list[pd.DataFrame]) -> None:
        self.big, self.todo = big, list(batches)
        self.more = threading.Event()
        self.sent: list[tuple[float, int]] = []  # (time yielded, total events after it)

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        total = len(self.big)
        self.sent.append((time.perf_counter(), total))
        yield self.big
        while not stop.is_set():
            if self.more.wait(0.05) and self.todo:
                self.more.clear()
                b = self.todo.pop(0)
                total += len(b)
                self.sent.append((time.perf_counter(), total))
                yield b
            else:
                yield ev.empty_frame()


async def bench_apply(big: pd.DataFrame, extra: pd.DataFrame, n: int) -> dict[str, list[float]]:
    batches = [extra.iloc[i * BATCH : (i + 1) * BATCH].reset_index(drop=True) for i in range(n)]
    src = BenchSource(big, batches)
    feed = LiveFeed(src, title="bench")
    app = TimedApp(feed)
    e2e, ui = [], []
    async with app.run_test(size=SIZE) as pilot:

        async def wait_applied(k: int) -> None:
            while not app.applies or app.applies[-1][2] < k:
                await pilot.pause(0.005)

        await wait_applied(len(big))
        await pilot.pause(0.3)
        for i in range(n):
            expect = len(big) + (i + 1) * BATCH
            src.more.set()
            await wait_applied(expect)
            start = next(t for t, tot in src.sent if tot == expect)
            a0, a_s, _ = next(a for a in app.applies if a[2] == expect)
            await pilot.pause(0.15)
            # every screen update the new view caused (header, chart, table may come apart)
            frames = [(t, s) for t, s in app.frames if a0 <= t < a0 + 0.15]
            end = max((t + s for t, s in frames), default=a0 + a_s)
            e2e.append(end - start)
            ui.append(a_s + sum(s for _, s in frames))
        await pilot.press("q")
    return {"e2e": e2e, "ui": ui, "build": [feed._build_ms / 1000]}


async def bench_replay(big: pd.DataFrame, seconds: float) -> dict[str, list[float]]:
    feed = ReplayFeed(big, speed=100.0, playing=False)
    app = TimedApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        while app.view is None:
            await pilot.pause(0.01)
        await pilot.pause(0.3)
        n0 = len(app.applies)
        await pilot.press("space")
        await pilot.pause(seconds)
        applies = app.applies[n0 + 1 :]
        frames = [s for t, s in app.frames if applies and t >= applies[0][0]]
        await pilot.press("q")
    starts = [a[0] for a in applies]
    return {
        "interval": list(np.diff(starts)),
        "ui": [a[1] for a in applies],
        "frame": frames,
        "updates": [len(applies)],
        "applied": [applies[-1][2] if applies else 0],
    }


def main(argv: list[str]) -> int:
    run = pick_run(argv)
    loaded = pipeline.load([str(run)])
    big = replicate(loaded.events, TARGET)
    extra = replicate(loaded.events, TARGET + 10 * BATCH).iloc[TARGET:].reset_index(drop=True)
    print(f"input: {run.name}, {len(loaded.events):,} events replicated to {len(big):,}")

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        build_report(big)
        times.append(time.perf_counter() - t0)
    base = statistics.median(times)
    print(f"baseline  build_report over {len(big):,} events: {base * 1000:8.1f} ms (median of 3)")

    r = asyncio.run(bench_apply(big, extra, 5))
    med_e2e, med_ui = statistics.median(r["e2e"]), statistics.median(r["ui"])
    print(
        f"apply     batch of {BATCH:,} new events + refresh, end to end: median {med_e2e * 1000:8.1f} ms "
        f"= {med_e2e / base:.2f}x baseline (includes up to 100 ms of update pacing)"
    )
    print(
        f"          UI thread part (apply view + redraw): median {med_ui * 1000:6.1f} ms "
        f"= {med_ui / base:.3f}x baseline"
    )

    # 100k events of back-to-back real runs span minutes, so 100x plays for seconds
    for label, frame in (("100k events", big),):
        rr = asyncio.run(bench_replay(frame, 6.0))
        iv, fr, ui = rr["interval"], rr["frame"], rr["ui"]
        print(
            f"replay    100x over {label} ({len(frame):,} events): {rr['updates'][0]} updates in 6 s, "
            f"{rr['applied'][0]:,} events reached"
        )
        if iv:
            print(
                f"          update interval p50 {pct(iv, 50) * 1000:.0f} ms p95 {pct(iv, 95) * 1000:.0f} ms "
                f"max {max(iv) * 1000:.0f} ms (target 100 ms)"
            )
        if fr:
            print(
                f"          UI frame (apply+redraw) p50 {pct(ui, 50) * 1000 + pct(fr, 50) * 1000:.1f} ms "
                f"p95 {pct(ui, 95) * 1000 + pct(fr, 95) * 1000:.1f} ms, redraw max {max(fr) * 1000:.1f} ms; "
                f"p95 frame = {(pct(ui, 95) + pct(fr, 95)) / base:.3f}x baseline"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
