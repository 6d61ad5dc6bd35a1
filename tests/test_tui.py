"""The TUI driven by Pilot on real QEMU lab runs: replay controls, live feed, bad input."""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from profiler import events as ev
from profiler import pipeline
from profiler.model import build_report
from profiler.sources.base import Source
from profiler.sources.recording import RecordingSource
from profiler.store import write_recording
from profiler.views.fmt import fmt_bytes, short_name
from tui.app import MigprofApp
from tui.commands import SeekTime, SetFilter, Step, TogglePlay
from tui.feed import LiveFeed, ReplayFeed, default_build
from tui.messages import ModelUpdated, SourceEnded
from tui.screens.help import HelpScreen
from tui.screens.jump import JumpScreen
from tui.view import cursor_ms
from tui.widgets.chart import legend
from tui.widgets.timeline import LABEL_W

REAL = Path(__file__).resolve().parent / "data" / "real"
SIZE = (80, 24)


def real_run(*prefer: str) -> Path:
    """A lab run directory from tests/data/real, the first whose name contains a preferred word."""
    runs = (
        sorted(d for d in REAL.iterdir() if d.is_dir() and (d / "run.json").exists())
        if REAL.is_dir()
        else []
    )
    assert runs, f"no real lab run in {REAL}: the lab (issue 3) records them there"
    for word in prefer:
        for d in runs:
            if word in d.name:
                return d
    return runs[0]


@pytest.fixture(scope="module")
def converging() -> pipeline.Loaded:
    return pipeline.load([str(real_run("converges", "converg"))])


def input_paths(loaded: pipeline.Loaded) -> tuple[str, ...]:
    return tuple(str(i["path"]) if isinstance(i, dict) else str(i) for i in loaded.inputs)


def report_of(loaded: pipeline.Loaded):
    """The model over the whole input, as ``migprof report`` builds it."""
    return build_report(
        loaded.events,
        inputs=input_paths(loaded),
        malformed=loaded.malformed,
        skipped=loaded.skipped,
        warnings=tuple(loaded.warnings),
        meta=loaded.meta,
    )


def make_replay(loaded: pipeline.Loaded, **kw) -> MigprofApp:
    build = default_build(
        inputs=input_paths(loaded),
        malformed=loaded.malformed,
        skipped=loaded.skipped,
        warnings=tuple(loaded.warnings),
        meta=loaded.meta,
    )
    kw.setdefault("playing", False)
    return MigprofApp(ReplayFeed(loaded.events, build=build, **kw))


def run_async(fn):
    """Run an ``async def`` test with asyncio (no pytest async plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


async def until(pilot, cond: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Let the app run until ``cond()`` holds (the feed works in its own thread)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        try:
            if cond():
                return
        except (AttributeError, IndexError, TypeError) as e:  # the view is not built yet
            last = e
    raise AssertionError(f"timed out waiting for {what or cond}" + (f" (last error: {last!r})" if last else ""))


def shown_mig(app: MigprofApp):
    return app.view.migration(app.selected)


def header_text(app: MigprofApp) -> str:
    """The two header lines as plain text."""
    return "".join(t.plain for t in app.screen.query_one("#header").render().renderables)


def n_checks(app: MigprofApp) -> int:
    m = shown_mig(app)
    return len(m.checks) if m else 0


@run_async
async def test_replay_at_end_shows_the_models_values(converging):
    full = report_of(converging)
    m = full.migrations[-1]
    c = m.checks[-1]
    app = make_replay(converging, at="end")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.view.applied == app.view.total, what="the end")
        await pilot.pause(0.2)
        mig = shown_mig(app)
        assert mig.outcome == m.outcome == "completed"
        assert mig.checks[-1].pending_bytes == c.pending_bytes
        text = legend(mig, True).plain
        assert f"pending {fmt_bytes(c.pending_bytes)}" in text
        assert f"threshold {fmt_bytes(c.threshold_bytes)}" in text
        # the devices table has one row per model device, pre-copy bytes as the model says
        table = app.screen.query_one("#devices")
        main = [d for d in m.devices if d.kind != "other"]
        others = len(m.devices) - len(main)
        assert table.row_count == len(main) + (1 if others else 0)
        names = [table.get_row_at(i)[0] for i in range(table.row_count)]
        assert names[: len(main)] == [short_name(d.name, 20) for d in main]
        if others:
            assert names[-1] == f"+{others} other"
        for i, d in enumerate(main):
            assert table.get_row_at(i)[3] == fmt_bytes(d.precopy_bytes)
        assert "COMPLETED" in header_text(app)


@run_async
async def test_play_pause_and_speed(converging):
    """Space plays and pauses, +/- step the speed. At the slowest speeds, so the replay of a
    64 ms migration is still playing when the pause lands on a loaded host (a replay that
    reached its end stops by itself, and space would then play it again from the start)."""
    app = make_replay(converging, speed=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.view is not None)
        # opens paused just before the migration (the lab's QEMU start-up is skipped)
        assert not app.view.playing and n_checks(app) == 0
        assert app.view.migration(None) is None
        assert app.view.full.migrations[0].start_ns > app.view.cursor_ns
        start = app.view.applied
        await pilot.press("space")
        await until(pilot, lambda: app.view.playing and app.view.applied > start, what="playing")
        await pilot.press("plus")
        await until(pilot, lambda: app.view.speed == 0.25, what="speed 0.25x")
        await pilot.press("minus", "minus")
        await until(pilot, lambda: app.view.speed == 0.1, what="speed 0.1x (the slowest)")
        before = app.view.seq
        await pilot.press("space")
        await until(pilot, lambda: app.view.seq > before and not app.view.playing, what="paused")
        assert app.view.status != "ended", "the replay ended before the pause: nothing was paused"
        held = app.view.applied
        await pilot.pause(0.5)
        assert app.view.applied == held  # paused means paused


@run_async
async def test_step_by_check_and_by_pass(converging):
    app = make_replay(converging)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.view is not None)
        assert n_checks(app) == 0
        await pilot.press("full_stop")
        await until(pilot, lambda: n_checks(app) == 1, what="first check")
        await pilot.press("full_stop")
        await until(pilot, lambda: n_checks(app) == 2, what="second check")
        await pilot.press("comma")
        await until(pilot, lambda: n_checks(app) == 1, what="back to the first check")
        passes = len(shown_mig(app).passes)
        await pilot.press("greater_than_sign")
        await until(pilot, lambda: len(shown_mig(app).passes) == passes + 1, what="next pass")
        await pilot.press("end")
        await until(pilot, lambda: app.view.applied == app.view.total, what="end")
        await pilot.press("home")
        await until(pilot, lambda: app.view.applied == 0, what="start")


@run_async
async def test_jump_to_a_time_and_click_the_seek_bar(converging):
    app = make_replay(converging)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.view is not None and app.view.full is not None)
        full = app.view.full.migrations[-1]
        target = round(full.total_ms / 2)
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, JumpScreen), what="the jump prompt")
        await pilot.press(*f"{target}ms")
        await pilot.press("enter")
        await until(
            pilot,
            lambda: (
                shown_mig(app) is not None
                and abs(cursor_ms(app.view, shown_mig(app)) - target) < 0.001
            ),
            what=f"jump to {target} ms",
        )
        # a click at the start of the seek bar's track goes back to the beginning
        from tui.widgets.seekbar import PREFIX_W

        await pilot.click("#seek", offset=(PREFIX_W, 0))
        await until(pilot, lambda: app.view.applied <= 1, what="seek to start")
        # a bad time is a notice, not a crash
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, JumpScreen), what="the jump prompt")
        await pilot.press("x", "y", "enter")
        await pilot.pause(0.2)
        assert any("not a time" in n.message for n in app._notifications)


@run_async
async def test_log_scale_filter_help_and_palette(converging):
    app = make_replay(converging, at="end")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.view is not None and app.view.applied == app.view.total)
        assert "[log]" in legend(shown_mig(app), app.log_scale).plain
        await pilot.press("l")
        assert not app.log_scale and "[lin]" in legend(shown_mig(app), app.log_scale).plain
        await pilot.press("slash")
        await pilot.press(*"pending")
        await until(pilot, lambda: app.view.log_filter == "pending", what="filter")
        assert app.view.log_rows and all(
            "pending" in (r.event + r.text).lower() for r in app.view.log_rows
        )
        assert 0 < app.view.log_matches < app.view.applied
        await pilot.press("escape")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("ctrl+p")
        await pilot.press(*"toggle log")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: app.log_scale, what="log scale back on via the palette")


@run_async
async def test_too_small_terminal_shows_a_notice(converging):
    app = make_replay(converging, at="end")
    async with app.run_test(size=(50, 14)) as pilot:
        await until(pilot, lambda: app.view is not None)
        notice = app.screen.query_one("#too-small")
        assert notice.display and "too small" in str(notice.render())
        assert not app.screen.query_one("#body").display and app.screen.has_class("-too-small")
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.2)
        assert not app.screen.has_class("-too-small")


@run_async
async def test_input_without_timestamps_gets_a_notice_and_still_steps():
    # QEMU ran without -msg timestamp=on: trace lines untimed, only QMP and lab events timed
    loaded = pipeline.load([str(real_run("no-timestamps", "notime"))])
    assert loaded.events["t_ns"].isna().mean() > 0.5
    app = MigprofApp(ReplayFeed(loaded.events, build=default_build(), playing=False))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.view is not None)
        assert not app.view.timed
        await until(
            pilot,
            lambda: any("no timestamp" in n.message for n in app._notifications),
            what="the no-timestamps notice",
        )
        await pilot.press("space")  # plays by event order
        await until(pilot, lambda: app.view.applied > 0, what="playback by event order")
        await pilot.press("space", "home")
        await until(pilot, lambda: app.view.applied == 0 and not app.view.playing)
        await pilot.press("full_stop")
        await until(pilot, lambda: n_checks(app) == 1, what="first check")
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, JumpScreen), what="the jump prompt")
        await pilot.press("1", "enter")
        await until(pilot, lambda: any("cannot jump" in n.message for n in app._notifications))


class FakeDyingSource(Source):
    """A collector that crashes mid-run. Stands in for a BPF or QMP source losing its
    target, which cannot be provoked deterministically; the batches before the crash are
    real events from a lab run."""

    name = "dying"

    def __init__(self, frame: pd.DataFrame, good_batches: int) -> None:
        self.frame = frame
        self.good = good_batches
        self.entered = self.exited = False

    def __enter__(self):
        self.entered = True
        return self

    def close(self) -> None:
        self.exited = True

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        step = max(len(self.frame) // (self.good + 1), 1)
        for i in range(self.good):
            yield self.frame.iloc[i * step : (i + 1) * step].reset_index(drop=True)
            stop.wait(0.05)
        raise ConnectionResetError("QMP socket closed by peer")


@run_async
async def test_live_recording_source_fills_the_model_and_records(converging, tmp_path):
    path = write_recording(tmp_path / "run.mpr", converging.events)
    recorded: list[pd.DataFrame] = []
    src = RecordingSource(path, speed=20.0)
    app = MigprofApp(LiveFeed(src, title="live test", record=recorded.append))
    async with app.run_test(size=SIZE) as pilot:
        t0 = time.monotonic()
        await until(pilot, lambda: app.ended is not None, timeout=60, what="the source to end")
        await until(pilot, lambda: app.view.status == "ended")
        elapsed = time.monotonic() - t0
        full = build_report(ev.sort_timeline(converging.events))
        assert n_checks(app) == len(full.migrations[-1].checks)
        assert sum(len(b) for b in recorded) == len(converging.events)
        # the feed posts at most 10 updates a second (+2: the first and the final one)
        assert 1 < app.updates <= app.feed.posted <= 10 * elapsed + 2
        header = header_text(app)
        assert "LIVE: ENDED" in header
        await pilot.press("q")
    assert app.return_code == 0


@run_async
async def test_live_source_dying_mid_run_keeps_the_screen(converging):
    src = FakeDyingSource(ev.sort_timeline(converging.events), good_batches=3)
    app = MigprofApp(LiveFeed(src, title="dying"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.source_failed is not None, what="the failure")
        await until(pilot, lambda: app.view.status == "failed")
        assert "ConnectionResetError" in app.source_failed
        assert src.entered and src.exited  # detached in the worker, also on error
        assert app.view.applied > 0  # what arrived before the crash is kept
        header = header_text(app)
        assert "SOURCE FAILED" in header
        assert app.is_running
        await pilot.press("q")
    assert app.return_code == 2


def test_replay_feed_answers_typed_commands_without_a_terminal():
    """The feed worker alone (no Textual): typed commands move the cursor; inside a retry
    the report equals a full build of the prefix while only the open attempt was built."""
    loaded = pipeline.load([str(real_run("cancel-retry"))])
    events = ev.sort_timeline(loaded.events)
    feed = ReplayFeed(loaded.events, build=default_build(), playing=False)
    posted: queue.Queue = queue.Queue()
    stop = threading.Event()
    worker = threading.Thread(target=feed.run, args=(posted.put, stop))
    worker.start()

    def view_where(cond):
        while True:
            msg = posted.get(timeout=60)
            if isinstance(msg, ModelUpdated) and cond(msg.view):
                return msg.view

    try:
        full = view_where(lambda v: v.full is not None).full
        second = sorted(m.start_ns for m in full.migrations)[1]
        cursor = second + 50_000_000
        feed.send(SeekTime(cursor))
        v = view_where(lambda v: v.cursor_ns == cursor)
        pos = int((events["t_ns"] <= cursor).sum())
        assert v.applied == pos and not v.playing
        assert len(feed.model.frozen) == 1  # the cancelled attempt, from the whole report
        want = build_report(events.iloc[:pos])
        assert [m.outcome for m in v.report.migrations] == [m.outcome for m in want.migrations]
        assert v.report.migrations[-1].checks == want.migrations[-1].checks
        feed.send(Step("check", -1))
        back = view_where(lambda v: v.applied < pos)
        assert events["event"].iloc[back.applied - 1].startswith("migrate_pending")  # a check
        at_check = build_report(events.iloc[: back.applied]).migrations[-1]
        assert back.report.migrations[-1].checks == at_check.checks
        feed.send(SetFilter("cancel"))
        v = view_where(lambda v: v.log_filter == "cancel")
        assert v.log_rows and all("cancel" in (r.event + r.text).lower() for r in v.log_rows)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive()


def test_live_feed_is_driven_batch_by_batch_by_any_loop(converging):
    """consume/tick/end without the feed's own loop (as a session would drive it): a
    refresh when due, nothing new while frozen, everything at the end."""
    events = ev.sort_timeline(converging.events)
    feed = LiveFeed(None, title="driven")
    posted: list = []
    feed.attach(posted.append)
    later = iter(range(1, 1000))

    def views():
        return [m.view for m in posted if isinstance(m, ModelUpdated)]

    def due() -> float:
        """A "now" a second after the last one: the tick is due."""
        return time.monotonic() + next(later)

    chunks = [events.iloc[i : i + len(events) // 4] for i in range(0, len(events), len(events) // 4)]
    feed.consume(chunks[0])
    feed.tick(due())
    assert views()[-1].applied == len(chunks[0]) and views()[-1].playing
    feed.tick(feed._last_post)  # not due: no second view within 100 ms
    assert len(views()) == 1
    feed.send(TogglePlay())
    feed.consume(chunks[1])
    feed.tick(due())  # the freeze itself is shown
    frozen_at = views()[-1].applied
    assert not views()[-1].playing
    feed.consume(chunks[2])
    feed.tick(due())
    assert views()[-1].applied == frozen_at  # frozen: no newer data drawn
    feed.send(TogglePlay())
    feed.send(SetFilter("pending"))
    for c in chunks[3:]:
        feed.consume(c)
    feed.tick(due())
    feed.end()
    last = views()[-1]
    assert last.status == "ended" and last.applied == len(events) and last.log_filter == "pending"
    assert isinstance(posted[-1], SourceEnded)
    want = build_report(events).migrations[-1]
    assert last.report.migrations[-1].checks == want.checks


@run_async
async def test_several_migrations_can_be_selected():
    loaded = pipeline.load([str(real_run("cancel-retry"))])
    app = make_replay(loaded, at="end")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.view is not None and app.view.applied == app.view.total)
        n = len(app.view.report.migrations)
        assert n >= 2
        assert shown_mig(app).index == n - 1  # follows the latest
        assert f"mig {n}/{n} (latest)" in header_text(app)
        await pilot.press("m")
        assert app.selected == 0 and shown_mig(app).index == 0
        assert shown_mig(app).outcome == "cancelled" and "CANCELLED" in header_text(app)
        await pilot.press("M")
        assert app.selected is None and shown_mig(app).index == n - 1


@run_async
async def test_a_recording_replays_like_the_run_it_was_made_from(converging, tmp_path):
    path = write_recording(tmp_path / "run.mpr", converging.events)
    from_rec = pipeline.load([str(path)])
    app = make_replay(from_rec, at="end")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.view is not None and app.view.applied == app.view.total)
        want = report_of(converging).migrations[-1]
        got = shown_mig(app)
        assert [c.pending_bytes for c in got.checks] == [c.pending_bytes for c in want.checks]
        assert got.outcome == want.outcome


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--speed", "0"], "--speed"),
        (["--at", "soon"], "--at"),
    ],
)
def test_replay_rejects_bad_options_in_one_line(args, msg, capsys):
    from profiler.cli import main

    rc = main(["replay", str(real_run("converges")), *args])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and err.count("\n") == 1


def test_chart_marks_switchover_parameter_change_and_passes():
    """On a real run where downtime-limit was raised: P and S on the time axis, pass ticks,
    the zero row for the threshold before the first bandwidth window."""
    from profiler.views.curve import Y_LABEL_W
    from tui.view import View
    from tui.widgets.base import Shown
    from tui.widgets.chart import render_chart

    loaded = pipeline.load([str(real_run("downtime-raise"))])
    rep = report_of(loaded)
    mig = rep.migrations[-1]
    assert mig.markers and mig.switchover_ms is not None
    view = View(mode="replay", report=rep, full=rep, cursor_ns=mig.end_ns or mig.start_ns)
    lines = render_chart(Shown(view, mig, mig), 120, 30).renderables
    axis = lines[-1].plain
    assert "S" in axis and "P" in axis and "╵" in axis
    assert axis.index("P") <= axis.index("S")  # the change came before the switch-over
    labels = [ln.plain[: Y_LABEL_W - 1].strip() for ln in lines[1:-1]]
    assert "0 B" in labels  # threshold 0 before the first 100 ms window has its own row
    assert lines[0].plain.startswith(f"━ pending {fmt_bytes(mig.checks[-1].pending_bytes)}")
    log_rows = [ln.plain for ln in lines[1:-1]]
    lin = render_chart(Shown(view, mig, mig, log_scale=False), 120, 30).renderables
    assert [ln.plain for ln in lin[1:-1]] != log_rows and "[lin]" in lin[0].plain


@run_async
async def test_live_space_freezes_the_display(converging, tmp_path):
    path = write_recording(tmp_path / "run.mpr", converging.events)
    app = MigprofApp(LiveFeed(RecordingSource(path, speed=0.5), title="freeze"))
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot, lambda: app.view is not None and app.view.applied > 0, what="first events"
        )
        await pilot.press("space")
        await until(pilot, lambda: not app.view.playing, what="frozen")
        held = app.view.applied
        await pilot.pause(1.0)
        assert app.view.applied == held  # frozen: no redraw of newer data
        assert app.feed.index.frame is not None and len(app.feed.index) >= held
        await pilot.press("space")
        await until(pilot, lambda: app.view.playing, what="unfrozen")


REAL_VFIO = REAL.parent / "real-vfio"


@run_async
async def test_vfio_devices_in_chart_table_and_timeline():
    """A real mtty VFIO migration (nested lab): the device's pending, bytes and states show."""
    run = REAL_VFIO / "converges"
    assert (run / "run.json").exists(), f"{run}: the nested VFIO lab (issue 4) records it"
    loaded = pipeline.load([str(run)])
    m = report_of(loaded).migrations[-1]
    vfio = [d for d in m.devices if d.kind == "vfio" and d.precopy_bytes]
    assert vfio
    app = make_replay(loaded, at="end")
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.view is not None and app.view.applied == app.view.total)
        await pilot.pause(0.2)
        mig = shown_mig(app)
        text = legend(mig, True).plain
        for name, value in m.checks[-1].devices.items():
            assert f"{short_name(name)} {fmt_bytes(value)}" in text
        table = app.screen.query_one("#devices")
        rows = {table.get_row_at(i)[0]: table.get_row_at(i) for i in range(table.row_count)}
        for d in vfio:
            row = rows[short_name(d.name, 20)]
            assert row[1] == "vfio" and row[3] == fmt_bytes(d.precopy_bytes)
            assert row[7] == fmt_bytes(d.stopcopy_bytes)
            assert row[2] == "STOP"  # the source device ends stopped
        timeline = app.screen.query_one("#timeline").render()
        lines = [t.plain for t in timeline.renderables]
        label = short_name(vfio[0].name, LABEL_W - 1)
        assert any(ln.startswith(label) and "PRE_COPY" in ln for ln in lines), lines
