"""The feed: one worker thread that pulls event batches, applies them to the model it owns,
and posts at most 10 ``ModelUpdated`` a second. Live and replay are the same loop; replay
reads a loaded frame paced by a clock. The UI talks to it only through ``Feed.send``.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from profiler import events as ev
from profiler.model.results import Migration, Report
from tui.messages import ModelUpdated, Notice, SourceEnded, SourceFailed
from tui.view import HealthItem, LogRow, View

log = logging.getLogger(__name__)

POST_INTERVAL_S = 0.1  # at most 10 ModelUpdated per second
TICK_S = 0.02  # control latency of the loop
LOG_ROWS = 200  # event-log lines kept in each view
UNTIMED_EVENTS_PER_S = 200.0  # replay pace at 1x when the input has no timestamps
MIN_TIMED_SHARE = 0.9  # below this share of timed events, replay goes by event order
IDLE_SKIP_NS = 2_000_000_000  # replay jumps over stretches of input with no event this long
LEAD_NS = 500_000_000  # ... landing this much before the next event (and before a migration)
SPEEDS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)

CHECK_EVENTS = ("migrate_pending_estimate", "migrate_pending_exact", "migrate_pending")
PASS_EVENTS = ("migration_bitmap_sync_end",)

Post = Callable[[Any], Any]
Build = Callable[[pd.DataFrame], Report]


def default_build(**context: Any) -> Build:
    """``profiler.model.build_report`` bound to the context it accepts (malformed, inputs...)."""
    from profiler.model import build_report  # the model's one entry point

    params = inspect.signature(build_report).parameters
    kw = {k: v for k, v in context.items() if k in params}
    return lambda events: build_report(events, **kw)


def next_speed(speed: float, step: int) -> float:
    """The next speed in SPEEDS up (step=1) or down (step=-1) from ``speed``."""
    i = min(range(len(SPEEDS)), key=lambda j: abs(math.log(SPEEDS[j] / speed)))
    return SPEEDS[max(0, min(len(SPEEDS) - 1, i + step))]


class EventIndex:
    """The events seen so far, with a lower-cased search column for the event-log filter."""

    _TEXT_COLS = ("event", "device", "side", "state", "detail", "raw")

    def __init__(self) -> None:
        self.frame = ev.empty_frame()
        self._hay: list[np.ndarray] = []
        self._hay_all: np.ndarray | None = None
        self.filter = ""
        self._mask = np.zeros(0, dtype=bool)
        self.first_ns: int | None = None

    def __len__(self) -> int:
        return len(self.frame)

    def append(self, batch: pd.DataFrame) -> None:
        if not len(batch):
            return
        self.frame = (
            ev.concat([self.frame, batch]) if len(self.frame) else batch.reset_index(drop=True)
        )
        hay = self._haystack(batch)
        self._hay.append(hay)
        self._hay_all = None
        self._mask = np.concatenate([self._mask, self._match(hay)])
        if self.first_ns is None:
            t = batch["t_ns"].dropna()
            if len(t):
                self.first_ns = int(t.min())

    def _haystack(self, df: pd.DataFrame) -> np.ndarray:
        parts = [df[c].astype("string").fillna("") for c in self._TEXT_COLS]
        s = parts[0]
        for p in parts[1:]:
            s = s + " " + p
        return s.str.lower().to_numpy(dtype=object)

    def _match(self, hay: np.ndarray) -> np.ndarray:
        terms = self.filter.lower().split()
        if not terms:
            return np.ones(len(hay), dtype=bool)
        s = pd.Series(hay, dtype="string")
        m = np.ones(len(hay), dtype=bool)
        for term in terms:
            if term.startswith("-") and len(term) > 1:
                m &= ~s.str.contains(term[1:], regex=False).to_numpy(dtype=bool, na_value=False)
            else:
                m &= s.str.contains(term, regex=False).to_numpy(dtype=bool, na_value=False)
        return m

    def set_filter(self, text: str) -> None:
        self.filter = text.strip()
        if self._hay_all is None:
            self._hay_all = np.concatenate(self._hay) if self._hay else np.zeros(0, dtype=object)
            self._hay = [self._hay_all]
        self._mask = self._match(self._hay_all)

    def rows(self, upto: int, k: int = LOG_ROWS) -> tuple[tuple[LogRow, ...], int]:
        """The last ``k`` matching rows among the first ``upto`` events, and the match count."""
        mask = self._mask[:upto]
        if self.filter:
            hits = np.flatnonzero(mask)
            n = len(hits)
            idx = hits[-k:]
        else:
            n = upto
            idx = np.arange(max(0, upto - k), upto)
        if not len(idx):
            return (), n
        sub = self.frame.iloc[idx]
        return tuple(_log_row(r, self.first_ns) for r in sub.to_dict("records")), n


_SUMMARY_COLS = (
    ("bytes", "bytes"),
    ("pre_bytes", "pre"),
    ("threshold_bytes", "threshold"),
    ("init_bytes", "init"),
    ("dirty_bytes", "dirty"),
    ("stopcopy_bytes", "stopcopy"),
    ("dirty_syncs", "dirty_syncs"),
    ("count", "count"),
    ("dur_ns", "dur_ns"),
    ("state", "state"),
    ("detail", "detail"),
)


_SIDE = {"source": "src", "destination": "dst", "unknown": "?"}


def _isna(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _log_row(r: dict[str, Any], first_ns: int | None) -> LogRow:
    t = r.get("t_ns")
    if not _isna(t) and first_ns is not None:
        ts = f"{(int(t) - first_ns) / 1e9:9.3f}"
    else:
        seq = r.get("seq")
        ts = f"#{seq}" if not _isna(seq) else "-"
    raw = r.get("raw")
    if _isna(raw) or not raw:
        text = " ".join(f"{name}={r[col]}" for col, name in _SUMMARY_COLS if not _isna(r.get(col)))
    else:
        text = str(raw)
        name = str(r.get("event") or "")
        at = text.find(name) if name else -1
        if at >= 0:  # drop the trace prefix (pid@time:) and the name shown in its own column
            text = text[at + len(name) :].strip()
    dev = r.get("device")
    return LogRow(
        t=ts,
        side=_SIDE.get(str(r.get("side") or ""), "?"),
        event=str(r.get("event") or ""),
        device="" if _isna(dev) else str(dev),
        text=text,
    )


def health_items(h: dict[str, Any]) -> list[HealthItem]:
    """Flatten a source's ``health()`` into lines; failures and lost events stand out."""
    items: list[HealthItem] = []
    failed = h.get("failed") or {}
    subs = {k: v for k, v in h.items() if isinstance(v, dict) and k != "failed"}
    if subs:
        active = [k for k in subs if k not in failed]
        items.append(
            HealthItem(
                "sources active",
                f"{len(active)}/{len(subs)} " + " ".join(active),
                "ok" if not failed else "warn",
            )
        )
    for name, err in failed.items():
        items.append(HealthItem(f"{name} failed", str(err), "error"))
    lost = _sum_keys(h, ("lost", "drops", "dropped"))
    items.append(HealthItem("lost events", str(lost), "error" if lost else "ok"))
    for name, sub in subs.items():
        flat = ", ".join(
            f"{k}={v}" for k, v in sub.items() if k != "source" and not isinstance(v, dict)
        )
        if flat:
            items.append(HealthItem(name, flat))
    if not subs:
        flat = ", ".join(
            f"{k}={v}"
            for k, v in h.items()
            if k not in ("source", "failed") and not isinstance(v, dict)
        )
        if flat:
            items.append(HealthItem(str(h.get("source", "source")), flat))
    return items


def _sum_keys(h: Any, keys: tuple[str, ...]) -> int:
    if not isinstance(h, dict):
        return 0
    total = 0
    for k, v in h.items():
        if isinstance(v, dict):
            total += _sum_keys(v, keys)
        elif (
            any(key in str(k).lower() for key in keys)
            and isinstance(v, int | float)
            and not isinstance(v, bool)
        ):
            total += int(v)
    return total


GLOBAL_EVENTS = (ev.QMP_PARAMS, ev.LAB_MARK)  # the model reads these from before a migration
TERMINAL = ("completed", "failed", "cancelled")
_NO_TIME = np.iinfo(np.int64).max


def _times(frame: pd.DataFrame) -> np.ndarray:
    """t_ns as int64, untimed rows last (they stay in every tail)."""
    return frame["t_ns"].fillna(_NO_TIME).to_numpy(dtype="int64")


def tail_frame(frame: pd.DataFrame, cut_ns: int | None) -> pd.DataFrame:
    """The events the newest migrations need: from ``cut_ns`` on, plus parameter changes before."""
    if cut_ns is None:
        return frame
    keep = _times(frame) >= cut_ns
    keep |= frame["event"].isin(GLOBAL_EVENTS).to_numpy(dtype=bool, na_value=False)
    return frame[keep]


def splice(frozen: list[Migration], rep: Report, events: int) -> Report:
    """Finished migrations kept from earlier builds, then the tail's, numbered in order."""
    migs = list(frozen) + [
        dataclasses.replace(m, index=len(frozen) + i) for i, m in enumerate(rep.migrations)
    ]
    return dataclasses.replace(rep, migrations=tuple(migs), events=events)


class TailModel:
    """Live model updates that rebuild only the migrations still open.

    A migration is frozen once it ended and a later one has started: its events are all
    before the later one's start, so later batches cannot change it. Each refresh then
    builds the report over the events from the oldest open migration on (plus parameter
    changes before it), whatever the total number of events.
    """

    def __init__(self) -> None:
        self.frozen: list[Migration] = []
        self.cut_ns: int | None = None

    def report(self, frame: pd.DataFrame, build: Build) -> Report:
        rep = build(tail_frame(frame, self.cut_ns))
        migs = list(rep.migrations)
        if len(migs) >= 2 and all(m.start_ns is not None for m in migs):
            newest = max(m.start_ns for m in migs)
            ended = [m for m in migs if m.outcome in TERMINAL and m.start_ns < newest]
            still = [m for m in migs if m not in ended]
            # freeze only migrations that started before every open one, so the cut (the
            # oldest open start) leaves all their events behind
            keep = sorted(
                (m for m in ended if all(m.start_ns < o.start_ns for o in still)),
                key=lambda m: m.start_ns,
            )
            if keep:
                self.frozen += [
                    dataclasses.replace(m, index=len(self.frozen) + i) for i, m in enumerate(keep)
                ]
                rest = [m for m in migs if m not in keep]
                self.cut_ns = min(m.start_ns for m in rest)
                rep = dataclasses.replace(rep, migrations=tuple(rest))
        return splice(self.frozen, rep, len(frame))


def frozen_at(full: Report | None, cursor_ns: int | None) -> tuple[list[Migration], int | None]:
    """Replay: the migrations of the whole input that ended before the one open at the cursor.

    Returns them and the start of the first migration still open (the cut), or ([], None)
    when times are unknown.
    """
    if full is None or cursor_ns is None or len(full.migrations) < 2:
        return [], None
    migs = sorted(full.migrations, key=lambda m: (m.start_ns is None, m.start_ns or 0))
    if any(m.start_ns is None for m in migs):
        return [], None
    frozen: list[Migration] = []
    for m, nxt in zip(migs, migs[1:], strict=False):
        if m.outcome in TERMINAL and nxt.start_ns <= cursor_ns and m.start_ns < nxt.start_ns:
            frozen.append(m)
        else:
            break
    if not frozen:
        return [], None
    return frozen, migs[len(frozen)].start_ns


class Feed:
    """Base of the live and replay feeds: a command queue and the posting cadence."""

    mode = "live"

    def __init__(self, *, title: str = "migprof", build: Build | None = None) -> None:
        self.title = title
        self._build = build
        self._cmds: queue.SimpleQueue[tuple[str, tuple[Any, ...]]] = queue.SimpleQueue()
        self.index = EventIndex()
        self.playing = True
        self.speed = 1.0
        self.report: Report | None = None
        self._seq = 0
        self._last_post = 0.0
        self._build_ms: float | None = None
        self._posts: list[float] = []
        self.notices: list[str] = []
        self.model_error: str | None = None
        self._post: Post | None = None
        self.posted = 0  # ModelUpdated messages posted

    # --- called from the UI thread -------------------------------------------------------
    def send(self, cmd: str, *args: Any) -> None:
        """Queue a command for the worker (thread-safe): play, pause, toggle, speed, seek..."""
        self._cmds.put((cmd, args))

    # --- worker side ---------------------------------------------------------------------
    def build(
        self,
        frame: pd.DataFrame,
        post: Post | None = None,
        how: Callable[[pd.DataFrame], Report] | None = None,
    ) -> Report | None:
        """The model over ``frame`` (through ``how``, default the whole build); on a model
        error keep the last report and say so once."""
        if self._build is None:
            self._build = default_build()
        t0 = time.perf_counter()
        try:
            rep = (how or self._build)(frame)
        except Exception as e:
            log.debug("model failed on %d events", len(frame), exc_info=True)
            text = f"model error at event {len(frame)}: {type(e).__name__}: {e}"
            if self.model_error is None and post is not None:
                post(Notice(text + " (showing the last good state)", "error"))
            self.model_error = text
            return self.report
        self._build_ms = (time.perf_counter() - t0) * 1000
        return rep

    def _drain(self) -> list[tuple[str, tuple[Any, ...]]]:
        out = []
        while True:
            try:
                out.append(self._cmds.get_nowait())
            except queue.Empty:
                return out

    def _own_health(self) -> list[HealthItem]:
        now = time.monotonic()
        self._posts = [t for t in self._posts if now - t < 2.0]
        items = [HealthItem("events", f"{len(self.index):,}")]
        if self._build_ms is not None:
            items.append(
                HealthItem(
                    "model update",
                    f"{self._build_ms:.1f} ms",
                    "warn" if self._build_ms > 100 else "ok",
                )
            )
        items.append(HealthItem("UI updates", f"{len(self._posts) / 2:.0f}/s"))
        if self.model_error:
            items.append(HealthItem("model", self.model_error, "error"))
        return items

    def _post_view(self, post: Post, view: View) -> None:
        self.posted += 1
        self._posts.append(time.monotonic())
        self._last_post = time.monotonic()
        post(ModelUpdated(view))

    def run(self, post: Post, stop: threading.Event) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class LiveFeed(Feed):
    """Pulls batches from a live ``Source`` (entered and left in the worker thread)."""

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
        self.health: dict[str, Any] = {}
        self.tail = TailModel()
        self._last_t: int | None = None
        self._last_arrival = 0.0
        self.status = "running"
        self.error: str | None = None

    def _record(self, batch: pd.DataFrame) -> None:
        if self.record is None:
            return
        write = (
            getattr(self.record, "write", None)
            or getattr(self.record, "append", None)
            or self.record
        )
        write(batch)

    def _handle(self, cmds: list[tuple[str, tuple[Any, ...]]]) -> bool:
        changed = False
        for cmd, args in cmds:
            if cmd == "filter":
                self.index.set_filter(args[0])
                changed = True
            elif cmd in ("toggle", "play", "pause"):
                self.playing = (not self.playing) if cmd == "toggle" else cmd == "play"
                changed = True
            # seeking and stepping have no meaning on a live source: ignored
        return changed

    def _clock(self, batch: pd.DataFrame) -> None:
        """Track the newest event time and when it arrived (the live cursor runs from it)."""
        t = batch["t_ns"]
        if len(t) and t.notna().any():
            newest = int(t.max())
            if self._last_t is None or newest > self._last_t:
                self._last_t, self._last_arrival = newest, time.monotonic()

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

    def _refresh(self, post: Post, pending: list[pd.DataFrame]) -> None:
        if pending:
            # one append of all that arrived: each append copies the whole table once
            batch = ev.concat(pending) if len(pending) > 1 else pending[0]
            self.index.append(batch)
            self._clock(batch)
        if pending:
            self.report = self.build(
                self.index.frame, post, lambda f: self.tail.report(f, self._build)
            )
        pending.clear()
        self._post_view(post, self._view())

    def run(self, post: Post, stop: threading.Event) -> None:
        pending: list[pd.DataFrame] = []
        changed = False  # a command (filter, freeze) waits for the next due refresh
        try:
            with self.source:
                for batch in self.source.batches(stop):
                    if batch is not None and len(batch):
                        self._record(batch)
                        pending.append(batch)
                    changed |= self._handle(self._drain())
                    self.health = self.source.health()
                    if stop.is_set():
                        break
                    due = time.monotonic() - self._last_post >= POST_INTERVAL_S
                    if due and (self.playing or changed):
                        self._refresh(post, pending)
                        changed = False
                self.health = self.source.health()
            self.status = "ended"
            self._refresh(post, pending)
            if not stop.is_set():
                post(SourceEnded("the live source ended"))
            self._serve(post, stop)
        except Exception as e:  # the screen stays up with a notice; never a traceback
            log.debug("live source failed", exc_info=True)
            self.status = "failed"
            self.error = f"{type(e).__name__}: {e}"
            try:
                self._refresh(post, pending)
            except Exception:
                log.debug("final refresh failed", exc_info=True)
            post(SourceFailed(self.error))
            self._serve(post, stop)

    def _serve(self, post: Post, stop: threading.Event) -> None:
        """After the source is gone the screen stays: keep answering filter and freeze."""
        while not stop.is_set():
            try:
                cmds = [self._cmds.get(timeout=TICK_S * 5)] + self._drain()
            except queue.Empty:
                continue
            if self._handle(cmds):
                self.playing = True  # nothing arrives any more: a freeze would only hide the filter
                self._post_view(post, self._view())


class ReplayFeed(Feed):
    """Replays a loaded event frame, paced by its timestamps (or by event order without)."""

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
        t = self.events["t_ns"]
        n_timed = int(t.notna().sum())
        # mostly untimed (e.g. trace lines without -msg timestamp=on, with a few timed QMP
        # events): the untimed rows sort last, so pacing by time would hold them to the end
        self.timed = bool(len(t)) and n_timed >= MIN_TIMED_SHARE * len(t)
        if self.timed:
            # untimed rows sort last; give them the last known time so the clock stays monotonic
            self.t = t.ffill().bfill().to_numpy(dtype="int64")
            self.first_ns, self.last_ns = int(self.t[0]), int(self.t[-1])
        else:
            self.t = np.arange(self.n, dtype="int64")
            self.first_ns = self.last_ns = None
        ev_names = self.events["event"].astype("string").to_numpy(dtype=object, na_value="")
        # positions just after each check / pass: the prefix that includes it
        self.check_pos = np.flatnonzero(np.isin(ev_names, CHECK_EVENTS)) + 1
        self.pass_pos = np.flatnonzero(np.isin(ev_names, PASS_EVENTS)) + 1
        self.speed = speed
        self.playing = playing
        self.pos = 0  # events applied
        self.cursor_ns: int | None = self.first_ns
        self._upos = 0.0  # fractional position when untimed
        self._at = at
        self._built_pos: int | None = None
        self.full: Report | None = None
        self.extra_health = health or []
        self.notices = list(notices or [])
        self._ended_posted = False
        self.quiet_notices: list[str] = []  # shown in the Health tab only, no pop-up
        if self.timed and self.n > 1 and (np.diff(self.t) > IDLE_SKIP_NS).any():
            self.quiet_notices.append(
                f"replay skips stretches without events longer than "
                f"{IDLE_SKIP_NS / 1e9:.0f} s of input time"
            )
        if not self.timed and self.n:
            what = (
                "input has no timestamps"
                if not n_timed
                else f"{self.n - n_timed:,} of {self.n:,} events have no timestamp"
            )
            self.notices.append(
                f"{what}: replay is paced by event order "
                f"({UNTIMED_EVENTS_PER_S:.0f} events/s at 1x), times are event numbers"
            )

    # --- cursor ---------------------------------------------------------------------------
    def _set_pos(self, pos: int) -> None:
        self.pos = max(0, min(self.n, int(pos)))
        self._upos = float(self.pos)
        if self.timed:
            self.cursor_ns = int(self.t[self.pos - 1]) if self.pos > 0 else self.first_ns

    def _seek_ns(self, t_ns: int) -> None:
        if not self.timed:
            return
        self.cursor_ns = max(self.first_ns, min(self.last_ns, int(t_ns)))
        self.pos = int(np.searchsorted(self.t, self.cursor_ns, side="right"))

    def _step(self, marks: np.ndarray, direction: int) -> None:
        if not len(marks):
            return
        if direction > 0:
            i = int(np.searchsorted(marks, self.pos, side="right"))
            target = marks[i] if i < len(marks) else self.n
        else:
            i = int(np.searchsorted(marks, self.pos, side="left")) - 1
            target = marks[i] if i >= 0 else 0
        self._set_pos(int(target))

    def _handle(self, cmds: list[tuple[str, tuple[Any, ...]]], post: Post) -> bool:
        changed = False
        for cmd, args in cmds:
            changed = True
            if cmd == "toggle":
                if not self.playing and self.pos >= self.n:
                    self._set_pos(0)  # play again from the start
                self.playing = not self.playing
            elif cmd == "play":
                self.playing = True
            elif cmd == "pause":
                self.playing = False
            elif cmd == "speed":
                self.speed = float(args[0])
            elif cmd == "faster":
                self.speed = next_speed(self.speed, +1)
            elif cmd == "slower":
                self.speed = next_speed(self.speed, -1)
            elif cmd == "seek_ns":
                self.playing = False
                if self.timed:
                    self._seek_ns(int(args[0]))
                else:
                    post(Notice("no timestamps in this input: cannot jump to a time"))
            elif cmd == "seek_fraction":
                self.playing = False
                f = max(0.0, min(1.0, float(args[0])))
                if self.timed:
                    self._seek_ns(self.first_ns + round(f * (self.last_ns - self.first_ns)))
                else:
                    self._set_pos(round(f * self.n))
            elif cmd == "seek_pos":
                self.playing = False
                self._set_pos(int(args[0]))
            elif cmd == "step_check":
                self.playing = False
                self._step(self.check_pos, int(args[0]))
            elif cmd == "step_pass":
                self.playing = False
                self._step(self.pass_pos, int(args[0]))
            elif cmd == "filter":
                self.index.set_filter(args[0])
            else:
                changed = False
        return changed

    def _advance(self, dt: float) -> bool:
        if not self.playing or self.pos >= self.n:
            return False
        before = self.pos
        if self.timed:
            self._seek_ns(self.cursor_ns + int(dt * self.speed * 1e9))
            if self.pos < self.n and int(self.t[self.pos]) - self.cursor_ns > IDLE_SKIP_NS:
                # nothing happens for a while (guest boot, between attempts): skip ahead
                self.cursor_ns = int(self.t[self.pos]) - LEAD_NS
        else:
            self._upos = min(float(self.n), self._upos + dt * self.speed * UNTIMED_EVENTS_PER_S)
            self.pos = int(self._upos)
        if self.pos >= self.n:
            self.pos = self.n
            self.playing = False
        return self.pos != before or self.timed

    def _view(self) -> View:
        if self._built_pos != self.pos:
            if self.pos == self.n and self.full is not None:
                self.report = self.full
            else:
                frozen, cut = frozen_at(self.full, self.cursor_ns if self.timed else None)
                self.report = self.build(
                    self.events.iloc[: self.pos],
                    self._post,
                    lambda f: splice(frozen, self._build(tail_frame(f, cut)), len(f)),
                )
            self._built_pos = self.pos
        rows, n = self.index.rows(self.pos)
        self._seq += 1
        return View(
            mode="replay",
            report=self.report,
            title=self.title,
            seq=self._seq,
            cursor_ns=self.cursor_ns,
            first_ns=self.first_ns,
            last_ns=self.last_ns,
            applied=self.pos,
            total=self.n,
            timed=self.timed,
            playing=self.playing,
            speed=self.speed,
            full=self.full,
            log_rows=rows,
            log_matches=n,
            log_filter=self.index.filter,
            health=tuple(self._own_health() + list(self.extra_health)),
            status="ended" if self.pos >= self.n else "running",
            notices=tuple(self.notices + self.quiet_notices),
        )

    def _initial_position(self) -> None:
        at = self._at
        starts = [m.start_ns for m in (self.full.migrations if self.full else ()) if m.start_ns]
        if at is None or at == "start":
            self._set_pos(0)
            if self.timed and starts:  # open just before the first migration, not at boot
                self._seek_ns(max(self.first_ns, min(starts) - LEAD_NS))
        elif at == "end":
            self._set_pos(self.n)
            self.playing = False
        else:
            self.playing = False
            if self.timed:
                self._seek_ns(self.first_ns + int(float(at) * 1e6))
            else:
                self._set_pos(int(float(at)))

    def run(self, post: Post, stop: threading.Event) -> None:
        try:
            self._post = post
            self.full = self.build(self.events, post)
            self._initial_position()
            for text in self.notices:
                post(Notice(text))
            self._post_view(post, self._view())
            last = time.monotonic()
            dirty = False
            while not stop.is_set():
                try:
                    first = self._cmds.get(timeout=TICK_S)
                    cmds = [first] + self._drain()
                except queue.Empty:
                    cmds = []
                now = time.monotonic()
                dirty |= self._handle(cmds, post)
                dirty |= self._advance(now - last)
                last = now
                if dirty and now - self._last_post >= POST_INTERVAL_S:
                    self._post_view(post, self._view())
                    dirty = False
                    if self.pos >= self.n and not self._ended_posted:
                        self._ended_posted = True
                        post(SourceEnded("end of replay"))
                    elif self.pos < self.n:
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
