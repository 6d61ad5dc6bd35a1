"""The model over a growing event stream: each report rebuilds only the migrations still open.

A migration is frozen once it ended and a later one has started: its events all lie before
the later one's first event, so later events cannot change it. The model keeps the frozen
migrations and, as its tail, only the events from the first event of the oldest open
migration on (plus the parameter changes and lab marks before it, which the model reads,
and untimed events, which have no place in time). Each ``report()`` builds the tail alone,
with a ``PrefixCache`` this object owns, so a refresh costs one or two migrations whatever
the number of events, and the open migration's unchanged checks are not made again. What
the left-out events showed of each trace stream's QEMU release (a property of the whole
file) goes into every build as ``eras``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from profiler import events as E
from profiler.model import names as N
from profiler.model.build import build_report, stream_eras
from profiler.model.prefix_cache import PrefixCache
from profiler.model.results import Migration, Report
from profiler.model.version import Era

# build_report, or one bound to its context: called as build(events, cache=..., eras=...)
Build = Callable[..., Report]

GLOBAL_EVENTS = (E.QMP_PARAMS, E.LAB_MARK)  # read from before a migration's start
TERMINAL = ("completed", "failed", "cancelled")
_NO_TIME = np.iinfo(np.int64).max


def bind(**context: Any) -> Build:
    """``build_report`` bound to the context it accepts (inputs, malformed, skipped, warnings,
    meta); other keys are dropped."""
    params = inspect.signature(build_report).parameters
    kw = {k: v for k, v in context.items() if k in params and k not in ("cache", "eras")}
    return lambda events, **incremental: build_report(events, **incremental, **kw)


def first_ns(m: Migration) -> int | None:
    """Epoch ns of a migration's first event on either side (the destination sets up first)."""
    if m.start_ns is None:
        return None
    if m.dest_start_ms is not None and m.dest_start_ms < 0:
        return m.start_ns + round(m.dest_start_ms * 1e6)
    return m.start_ns


def tail_mask(frame: pd.DataFrame, cut_ns: int | None) -> np.ndarray:
    """The rows the migrations from ``cut_ns`` on need: timed at or after it, untimed, and the
    parameter changes and lab marks before it."""
    if cut_ns is None:
        return np.ones(len(frame), dtype=bool)
    keep = frame["t_ns"].fillna(_NO_TIME).to_numpy(dtype="int64") >= cut_ns
    keep |= frame["event"].isin(GLOBAL_EVENTS).to_numpy(dtype=bool, na_value=False)
    return keep


def merge_eras(known: dict[str, Era], more: dict[str, Era]) -> dict[str, Era]:
    return known | {s: e.merge(known.get(s)) for s, e in more.items()}


Kind = tuple[str, str, str, str, bool, bool]


def line_kinds(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[Kind]]:
    """The kinds of timed trace lines in ``frame`` (file, origin, side, event, whether detail
    and count are set), each with its earliest row: all that version detection reads of a
    stream, in a few rows."""
    m = frame["origin"].isin(N.TRACE_ORIGINS).to_numpy(dtype=bool, na_value=False)
    m = m & frame["t_ns"].notna().to_numpy(dtype=bool)
    idx = np.flatnonzero(m)
    if not len(idx):
        return frame.iloc[:0], []
    # one integer per kind from the columns' codes (no copy of the wide frame)
    cols = [pd.factorize(frame[c])[0][idx] + 1 for c in ("file", "origin", "side", "event")]
    cols += [frame[c].isna().to_numpy(dtype=np.int64)[idx] for c in ("detail", "count")]
    key = np.ravel_multi_index(cols, [int(c.max()) + 1 for c in cols])
    order = np.argsort(frame["t_ns"].to_numpy(dtype="float64")[idx], kind="stable")
    _, first = np.unique(key[order], return_index=True)
    rows = frame.iloc[idx[np.sort(order[first])]]
    kinds = list(
        zip(
            *(rows[c].astype(object).map(str).tolist() for c in ("file", "origin", "side", "event")),
            rows["detail"].isna().tolist(),
            rows["count"].isna().tolist(),
            strict=True,
        )
    )
    return rows, kinds


def frozen_before(whole: Report | None, cursor_ns: int | None) -> tuple[list[Migration], int | None]:
    """The migrations of ``whole`` (the report of a whole input) that ended before the one open
    at ``cursor_ns``, and the first event of the oldest migration still open (the cut); ([], None)
    when times are unknown."""
    if whole is None or cursor_ns is None or len(whole.migrations) < 2:
        return [], None
    migs = list(whole.migrations)
    if any(m.start_ns is None for m in migs):
        return [], None
    migs.sort(key=lambda m: m.start_ns)
    frozen: list[Migration] = []
    for m, nxt in zip(migs, migs[1:], strict=False):
        if m.outcome in TERMINAL and nxt.start_ns <= cursor_ns and m.start_ns < nxt.start_ns:
            frozen.append(m)
        else:
            break
    if not frozen:
        return [], None
    return frozen, first_ns(migs[len(frozen)])


def splice(frozen: Sequence[Migration], rep: Report, events: int) -> Report:
    """Frozen migrations, then the tail's, numbered in order; ``events``: all events taken."""
    migs = list(frozen) + [
        dataclasses.replace(m, index=len(frozen) + i) for i, m in enumerate(rep.migrations)
    ]
    return dataclasses.replace(rep, migrations=tuple(migs), events=events)


class IncrementalModel:
    """Takes event batches, gives the ``Report`` over all of them; rebuilds the open migrations.

    The caller owns it (one per feed); it is not thread-safe. ``build``: ``build_report`` or
    one from ``bind(...)``. A build error propagates from ``report()``; the events stay taken,
    and the next ``report()`` tries again. The report's warnings are the last build's: a
    warning about a frozen migration is not repeated once it is frozen.
    """

    def __init__(self, build: Build | None = None) -> None:
        self._build: Build = build or build_report
        self.cache = PrefixCache()
        self.frozen: tuple[Migration, ...] = ()
        self.cut_ns: int | None = None  # first event of the oldest open migration
        self.events = 0  # events taken since the start (or the last restart)
        self.eras: dict[str, Era] = {}  # per trace stream, from the events left out of the tail
        self._kinds: set[Kind] = set()  # the kinds of lines those eras were read from
        self._tail = E.empty_frame()
        self._new: list[pd.DataFrame] = []
        self._report: Report | None = None
        self._input: _Input | None = None  # restart's input, read once

    @property
    def tail_events(self) -> int:
        """Rows the next build reads."""
        return len(self._tail) + sum(len(b) for b in self._new)

    def add(self, batch: pd.DataFrame) -> None:
        """Take a batch of new events (any order; the model orders them)."""
        if batch is None or not len(batch):
            return
        self.events += len(batch)
        self._new.append(self._cut(batch))
        self._report = None

    def _cut(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame``'s rows for the tail; what the rest shows of each stream's era is kept."""
        keep = tail_mask(frame, self.cut_ns)
        if keep.all():
            return frame
        rows, kinds = line_kinds(frame[~keep])
        new = [i for i, k in enumerate(kinds) if k not in self._kinds]
        if new:  # most migrations print the kinds of lines the one before did
            self._kinds.update(kinds[i] for i in new)
            self.eras = merge_eras(self.eras, stream_eras(rows.iloc[new]))
        return frame[keep]

    def restart(
        self,
        events: pd.DataFrame,
        upto: int | None = None,
        whole: Report | None = None,
        cursor_ns: int | None = None,
    ) -> None:
        """Start over with the first ``upto`` rows (all: None) of ``events``, a whole input on
        one timeline whose report is ``whole`` (replay seeking): the migrations of ``whole``
        that ended before the one open at ``cursor_ns`` are frozen at once, so only the open
        one is built. What the input holds is read once, on the first restart with it; the
        object cache is kept (it checks what it reuses)."""
        if self._input is None or self._input.events is not events:
            self._input = _Input(events)
        inp = self._input
        n = len(events) if upto is None else max(0, min(len(events), upto))
        frozen, cut = frozen_before(whole, cursor_ns)
        self.frozen, self.cut_ns = tuple(frozen), cut
        self.events = n
        self._new = []
        self._report = None
        prefix = events.iloc[:n]
        if cut is None:
            self._tail, self.eras, self._kinds = prefix, {}, set()
            return
        self._tail = prefix[(inp.t[:n] >= cut) | inp.glob[:n]]
        self._kinds, self.eras = inp.eras_before(cut)

    def whole(self, events: pd.DataFrame) -> Report:
        """A one-off report over ``events`` (replay's whole input) through this model's
        builder and object cache; the model's own state does not change."""
        return self._build(events, cache=self.cache)

    def report(self) -> Report:
        """The report over every event taken (built again only after new events)."""
        if self._report is not None:
            return self._report
        if self._new:
            self._tail = E.concat([self._tail, *self._new])
            self._new = []
        rep = self._freeze(self._build(self._tail, cache=self.cache, eras=self.eras))
        self._report = splice(self.frozen, rep, self.events)
        return self._report

    def _freeze(self, rep: Report) -> Report:
        """Move the tail's migrations that can no longer change to ``frozen`` and cut the tail
        at the first event of the oldest one still open."""
        migs = list(rep.migrations)
        if len(migs) < 2 or any(m.start_ns is None for m in migs):
            return rep
        newest = max(m.start_ns for m in migs)
        ended = [m.outcome in TERMINAL and m.start_ns < newest for m in migs]
        open_starts = [m.start_ns for m, e in zip(migs, ended, strict=True) if not e]
        # freeze only migrations that started before every open one, so the cut (the oldest
        # open migration's first event) leaves all their events behind
        keep = [e and all(m.start_ns < s for s in open_starts) for m, e in zip(migs, ended, strict=True)]
        if not any(keep):
            return rep
        done = sorted((m for m, k in zip(migs, keep, strict=True) if k), key=lambda m: m.start_ns)
        rest = [m for m, k in zip(migs, keep, strict=True) if not k]
        base = len(self.frozen)
        self.frozen += tuple(dataclasses.replace(m, index=base + i) for i, m in enumerate(done))
        self.cut_ns = min(first_ns(m) for m in rest)
        self._tail = self._cut(self._tail)
        return dataclasses.replace(rep, migrations=tuple(rest))


class _Input:
    """What ``restart`` reads of a whole input once: times, the rows kept before any cut, and
    the kinds of trace lines with their first time (the eras before a cut come from them)."""

    def __init__(self, events: pd.DataFrame) -> None:
        self.events = events
        self.t = events["t_ns"].fillna(_NO_TIME).to_numpy(dtype="int64")
        self.glob = events["event"].isin(GLOBAL_EVENTS).to_numpy(dtype=bool, na_value=False)
        self.kind_rows, self.kinds = line_kinds(events)
        self.kind_t = self.kind_rows["t_ns"].to_numpy(dtype="int64")
        self._eras: dict[frozenset[Kind], dict[str, Era]] = {}

    def eras_before(self, cut_ns: int) -> tuple[set[Kind], dict[str, Era]]:
        """The kinds of lines before ``cut_ns`` and the eras they show (the same few sets
        recur as the cursor moves: each is read once)."""
        at = np.flatnonzero(self.kind_t < cut_ns)
        kinds = frozenset(self.kinds[i] for i in at)
        if kinds not in self._eras:
            self._eras[kinds] = stream_eras(self.kind_rows.iloc[at]) if len(at) else {}
        return set(kinds), self._eras[kinds]
