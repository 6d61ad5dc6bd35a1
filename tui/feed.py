"""The feed: one worker thread applies event batches to its model and posts views (<= 10/s).

Live pulls batches from a source; replay moves a ``ReplayClock`` over a loaded table. The
worker owns an ``IncrementalModel`` and posts ``ModelUpdated`` at most 10 times a second.
The UI reaches it only through typed commands on a thread-safe queue (``Feed.send``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from profiler import events as ev
from profiler.model.incremental import Build, IncrementalModel, bind
from profiler.model.results import Report
from profiler.replay import IDLE_SKIP_NS, UNTIMED_EVENTS_PER_S, ReplayClock
from tui.commands import (
    ChangeSpeed,
    Command,
    Pause,
    Play,
    SeekEnd,
    SeekFraction,
    SeekPosition,
    SeekTime,
    SetFilter,
    SetSpeed,
    Step,
    TogglePlay,
)
from tui.event_index import EventIndex
from tui.health import feed_items, health_items
from tui.messages import ModelUpdated, Notice, SourceEnded, SourceFailed
from tui.view import HealthItem, View

log = logging.getLogger(__name__)

POST_INTERVAL_S = 0.1  # at most 10 ModelUpdated per second
TICK_S = 0.02  # control latency of the replay loop

Post = Callable[[Any], Any]


def _nowhere(message: Any) -> None:
    """Where a feed posts before it is attached to an app."""


def default_build(**context: Any) -> Build:
    """``build_report`` bound to the context it accepts (inputs, malformed, meta...)."""
    return bind(**context)


class Feed:
    """Base of the live and replay feeds: the command queue, the model, the posting cadence."""

    mode = "live"

    def __init__(self, *, title: str = "migprof", build: Build | None = None) -> None:
        self.title = title
        self.model = IncrementalModel(build)
        self.index = EventIndex()
        self.report: Report | None = None
        self.notices: list[str] = []
        self.model_error: str | None = None
        self.posted = 0  # ModelUpdated messages posted
        self._cmds: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._seq = 0
        self._last_post = 0.0
        self._build_ms: float | None = None
        self._posts: list[float] = []

    # --- called from the UI thread -------------------------------------------------------
    def send(self, cmd: Command) -> None:
        """Queue a command for the worker (thread-safe)."""
        self._cmds.put(cmd)

    # --- worker side ---------------------------------------------------------------------
    def _drain(self) -> list[Command]:
        out = []
        while True:
            try:
                out.append(self._cmds.get_nowait())
            except queue.Empty:
                return out

    def _model(self, post: Post | None, make: Callable[[], Report], n: int) -> Report | None:
        """The report from ``make``; on a model error keep the last one and say so once."""
        t0 = time.perf_counter()
        try:
            rep = make()
        except Exception as e:
            log.debug("model failed on %d events", n, exc_info=True)
            text = f"model error at event {n}: {type(e).__name__}: {e}"
            if self.model_error is None and post is not None:
                post(Notice(text + " (showing the last good state)", "error"))
            self.model_error = text
            return self.report
        self._build_ms = (time.perf_counter() - t0) * 1000
        return rep

    def _own_health(self) -> list[HealthItem]:
        now = time.monotonic()
        self._posts = [t for t in self._posts if now - t < 2.0]
        return feed_items(len(self.index), self._build_ms, len(self._posts) / 2, self.model_error)

    def _post_view(self, post: Post, view: View) -> None:
        self.posted += 1
        self._posts.append(time.monotonic())
        self._last_post = time.monotonic()
        post(ModelUpdated(view))

    def run(self, post: Post, stop: threading.Event) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class LiveFeed(Feed):
    """Shows a live ``Source``: ``run`` pulls its batches (entering and leaving it in the
    worker thread) and hands each to ``consume``; ``tick`` refreshes when due.

    ``attach``/``consume``/``tick``/``end``/``fail`` are the per-batch work, apart from the
    loop, so that any loop that owns the source (a session feeding several sinks) can drive
    the feed from its thread.
    """

    mode = "live"

    def __init__(
        self,
        source: Any,
        *,
        title: str = "migprof live",
        build: Build | None = None,
        record: Any = None,
    ) -> None:
        super().__init__(title=title, build=build)
        self.source = source
        self.record = record
        self.health: dict[str, Any] = {}  # the source's health(), as of the last batch
        self.playing = True  # False: the display is frozen (events keep arriving)
        self.status = "running"
        self.error: str | None = None
        self._post: Post = _nowhere
        self._pending: list[pd.DataFrame] = []
        self._changed = False  # a command (filter, freeze) waits for the next due refresh
        self._last_t: int | None = None
        self._last_arrival = 0.0

    # --- the per-batch work --------------------------------------------------------------
    def attach(self, post: Post) -> None:
        """Where the views and notices go (the app's thread-safe ``post_message``)."""
        self._post = post

    def consume(self, batch: pd.DataFrame | None) -> None:
        """Take one batch; it reaches the model and the screen at the next refresh."""
        if batch is not None and len(batch):
            self._pending.append(batch)

    def tick(self, now: float | None = None) -> None:
        """Apply the UI's commands; when a refresh is due (10 a second) and the display is not
        frozen, or a command changed what it shows, apply what arrived and post the view.
        ``now``: time.monotonic()."""
        self._changed |= self._handle(self._drain())
        now = time.monotonic() if now is None else now
        if now - self._last_post >= POST_INTERVAL_S and (self.playing or self._changed):
            self._refresh()
            self._changed = False

    def end(self, *, announce: bool = True) -> None:
        """The source ended: show everything that arrived; ``announce`` it unless quitting."""
        self.status = "ended"
        self._refresh()
        if announce:
            self._post(SourceEnded("the live source ended"))

    def fail(self, error: BaseException) -> None:
        """The source failed: keep what arrived on screen with a notice."""
        self.status = "failed"
        self.error = f"{type(error).__name__}: {error}"
        try:
            self._refresh()
        except Exception:
            log.debug("final refresh failed", exc_info=True)
        self._post(SourceFailed(self.error))

    def _handle(self, cmds: list[Command]) -> bool:
        changed = False
        for cmd in cmds:
            match cmd:
                case SetFilter(text):
                    self.index.set_filter(text)
                    changed = True
                case TogglePlay():
                    self.playing = not self.playing
                    changed = True
                case Play() | Pause():
                    self.playing = isinstance(cmd, Play)
                    changed = True
                case _:
                    pass  # seeking, stepping and speed have no meaning on a live source
        return changed

    def _clock(self, batch: pd.DataFrame) -> None:
        """Track the newest event time and when it arrived (the live cursor runs from it)."""
        t = batch["t_ns"]
        if len(t) and t.notna().any():
            newest = int(t.max())
            if self._last_t is None or newest > self._last_t:
                self._last_t, self._last_arrival = newest, time.monotonic()

    def _refresh(self) -> None:
        if self._pending:
            # one append of all that arrived: each append copies the whole event log once
            batch = ev.concat(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending = []
            self.index.append(batch)
            self._clock(batch)
            self.model.add(batch)
            self.report = self._model(self._post, self.model.report, self.model.events)
        self._post_view(self._post, self._view())

    def _view(self) -> View:
        rows, n = self.index.rows(len(self.index))
        last = self._last_t
        # "now" on the events' own clock: the newest event time plus the wall time since it
        # arrived, so elapsed ticks between events and a source with an old or skewed clock
        # (a recording played live) still lines up with its events
        now = (
            last + int((time.monotonic() - self._last_arrival) * 1e9) if last is not None else None
        )
        items = self._own_health() + health_items(self.health)
        self._seq += 1
        return View(
            mode="live",
            report=self.report,
            title=self.title,
            seq=self._seq,
            cursor_ns=now if self.status == "running" else last,
            first_ns=self.index.first_ns,
            last_ns=last,
            applied=len(self.index),
            total=len(self.index),
            timed=last is not None or not len(self.index),
            playing=self.playing,
            speed=1.0,
            log_rows=rows,
            log_matches=n,
            log_filter=self.index.filter,
            health=tuple(items),
            status=self.status,
            error=self.error,
            notices=tuple(self.notices),
        )

    # --- the loop over the source --------------------------------------------------------
    def _record(self, batch: pd.DataFrame) -> None:
        if self.record is None:
            return
        write = (
            getattr(self.record, "write", None)
            or getattr(self.record, "append", None)
            or self.record
        )
        write(batch)

    def run(self, post: Post, stop: threading.Event) -> None:
        self.attach(post)
        try:
            with self.source:
                for batch in self.source.batches(stop):
                    if batch is not None and len(batch):
                        self._record(batch)
                    self.consume(batch)
                    self.health = self.source.health()
                    if stop.is_set():
                        break
                    self.tick()
                self.health = self.source.health()
            self.end(announce=not stop.is_set())
        except Exception as e:  # the screen stays up with a notice; never a traceback
            log.debug("live source failed", exc_info=True)
            self.fail(e)
        self.serve(stop)

    def serve(self, stop: threading.Event) -> None:
        """After the source is gone the screen stays: keep answering filter and freeze."""
        while not stop.is_set():
            try:
                cmds = [self._cmds.get(timeout=TICK_S * 5), *self._drain()]
            except queue.Empty:
                continue
            if self._handle(cmds):
                self.playing = True  # nothing arrives any more: a freeze would only hide the filter
                self._post_view(self._post, self._view())


class ReplayFeed(Feed):
    """Replays a loaded event table, paced by its timestamps (or by event order without)."""

    mode = "replay"

    def __init__(
        self,
        events: pd.DataFrame,
        *,
        title: str = "migprof replay",
        build: Build | None = None,
        speed: float = 1.0,
        playing: bool = True,
        at: str | float | None = None,
        health: list[HealthItem] | None = None,
        notices: list[str] | None = None,
    ) -> None:
        super().__init__(title=title, build=build)
        self.events = ev.sort_timeline(events)
        self.index.append(self.events)
        self.n = len(self.events)
        self.clock = ReplayClock.of(self.events, speed=speed, playing=playing)
        self.full: Report | None = None  # the whole input's report
        self.extra_health = health or []
        self.notices = list(notices or [])
        self.quiet_notices: list[str] = []  # shown in the Health tab only, no pop-up
        self._at = at
        self._built_pos: int | None = None
        self._ended_posted = False
        self._post: Post | None = None
        if self.clock.skips_idle:
            self.quiet_notices.append(
                f"replay skips stretches without events longer than "
                f"{IDLE_SKIP_NS / 1e9:.0f} s of input time"
            )
        if not self.clock.timed and self.n:
            n_timed = int(self.events["t_ns"].notna().sum())
            what = (
                "input has no timestamps"
                if not n_timed
                else f"{self.n - n_timed:,} of {self.n:,} events have no timestamp"
            )
            self.notices.append(
                f"{what}: replay is paced by event order "
                f"({UNTIMED_EVENTS_PER_S:.0f} events/s at 1x), times are event numbers"
            )

    def _handle(self, cmds: list[Command], post: Post) -> bool:
        c = self.clock
        changed = False
        for cmd in cmds:
            changed = True
            match cmd:
                case TogglePlay():
                    c.toggle()
                case Play():
                    c.play()
                case Pause():
                    c.pause()
                case SetSpeed(speed):
                    c.set_speed(speed)
                case ChangeSpeed(step):
                    c.change_speed(step)
                case SeekTime(t_ns):
                    if not c.seek_ns(t_ns):
                        post(Notice("no timestamps in this input: cannot jump to a time"))
                case SeekFraction(fraction):
                    c.seek_fraction(fraction)
                case SeekPosition(pos):
                    c.seek_pos(pos)
                case SeekEnd():
                    c.seek_pos(c.n)
                case Step("check", direction):
                    c.step_check(direction)
                case Step("pass", direction):
                    c.step_pass(direction)
                case SetFilter(text):
                    self.index.set_filter(text)
                case _:
                    changed = False
        return changed

    def _report_at(self, pos: int) -> Report:
        """The model over the first ``pos`` events: the whole input's report at the end, else
        the model restarted there (the migrations that ended before the open one come from the
        whole report, so only the open one is built)."""
        if pos == self.n and self.full is not None:
            return self.full
        self.model.restart(
            self.events, pos, self.full, self.clock.cursor_ns if self.clock.timed else None
        )
        return self.model.report()

    def _view(self) -> View:
        c = self.clock
        if self._built_pos != c.pos:
            self.report = self._model(self._post, lambda: self._report_at(c.pos), c.pos)
            self._built_pos = c.pos
        rows, n = self.index.rows(c.pos)
        self._seq += 1
        return View(
            mode="replay",
            report=self.report,
            title=self.title,
            seq=self._seq,
            cursor_ns=c.cursor_ns,
            first_ns=c.first_ns,
            last_ns=c.last_ns,
            applied=c.pos,
            total=self.n,
            timed=c.timed,
            playing=c.playing,
            speed=c.speed,
            full=self.full,
            log_rows=rows,
            log_matches=n,
            log_filter=self.index.filter,
            health=tuple(self._own_health() + list(self.extra_health)),
            status="ended" if c.at_end else "running",
            notices=tuple(self.notices + self.quiet_notices),
        )

    def run(self, post: Post, stop: threading.Event) -> None:
        c = self.clock
        try:
            self._post = post
            self.full = self._model(post, lambda: self.model.whole(self.events), self.n)
            starts = [m.start_ns for m in (self.full.migrations if self.full else ()) if m.start_ns]
            c.open_at(self._at, starts)
            for text in self.notices:
                post(Notice(text))
            self._post_view(post, self._view())
            last = time.monotonic()
            dirty = False
            while not stop.is_set():
                try:
                    cmds = [self._cmds.get(timeout=TICK_S), *self._drain()]
                except queue.Empty:
                    cmds = []
                now = time.monotonic()
                dirty |= self._handle(cmds, post)
                dirty |= c.advance(now - last)
                last = now
                if dirty and now - self._last_post >= POST_INTERVAL_S:
                    self._post_view(post, self._view())
                    dirty = False
                    if c.at_end and not self._ended_posted:
                        self._ended_posted = True
                        post(SourceEnded("end of replay"))
                    elif not c.at_end:
                        self._ended_posted = False
        except Exception as e:  # keep the screen up with a notice
            log.debug("replay failed", exc_info=True)
            post(SourceFailed(f"{type(e).__name__}: {e}"))


def start(app: Any, feed: Feed, stop: threading.Event) -> Any:
    """Run ``feed`` in the app's one exclusive thread worker (group ``feed``)."""
    return app.run_worker(
        lambda: feed.run(app.post_message, stop),
        name="feed",
        group="feed",
        thread=True,
        exclusive=True,
        exit_on_error=False,
    )
