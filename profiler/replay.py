"""The replay clock: where a replay is in its events, and how play, seek and step move it.

The cursor moves by play/pause, speed steps, seeking to a time, stepping by check or pass,
and the wall time that passes while playing. Pure state, no threads and no UI: the TUI's
feed owns one and asks it where the cursor is. The events are on one timeline
(``events.sort_timeline``). An input with timestamps plays on its own clock; one without
(or with too few) plays by event order.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from profiler import registry

UNTIMED_EVENTS_PER_S = 200.0  # pace at 1x when the input has no timestamps
MIN_TIMED_SHARE = 0.9  # below this share of timed events, replay goes by event order
IDLE_SKIP_NS = 2_000_000_000  # playing jumps over stretches of input with no event this long
LEAD_NS = 500_000_000  # ... landing this much before the next event (and before a migration)
SPEEDS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


def next_speed(speed: float, step: int) -> float:
    """The next speed in SPEEDS up (step=1) or down (step=-1) from ``speed``."""
    i = min(range(len(SPEEDS)), key=lambda j: abs(math.log(SPEEDS[j] / speed)))
    return SPEEDS[max(0, min(len(SPEEDS) - 1, i + step))]


class ReplayClock:
    """Where a replay is: ``pos`` events applied, ``cursor_ns`` on the input's clock.

    ``t_ns``: one time per event, non-decreasing (None: the input is untimed and positions
    are event numbers); ``checks``/``passes``: positions just after each convergence check /
    dirty-bitmap pass (the prefix that includes it). Seeking and stepping pause.
    """

    def __init__(
        self,
        t_ns: np.ndarray | None,
        n: int,
        checks: np.ndarray,
        passes: np.ndarray,
        *,
        speed: float = 1.0,
        playing: bool = True,
    ) -> None:
        self.n = n
        self.timed = t_ns is not None
        self.t = np.asarray(t_ns, dtype="int64") if t_ns is not None else np.arange(n, dtype="int64")
        self.first_ns = int(self.t[0]) if self.timed and n else None
        self.last_ns = int(self.t[-1]) if self.timed and n else None
        self.checks = checks
        self.passes = passes
        self.speed = speed
        self.playing = playing
        self.pos = 0
        self.cursor_ns: int | None = self.first_ns
        self._upos = 0.0  # fractional position when untimed
        # stretches without events that playing skips (guest boot, between attempts)
        self.skips_idle = self.timed and n > 1 and bool((np.diff(self.t) > IDLE_SKIP_NS).any())

    @classmethod
    def of(cls, events: pd.DataFrame, *, speed: float = 1.0, playing: bool = True) -> ReplayClock:
        """The clock over an event table already on one timeline."""
        t = events["t_ns"]
        n = len(events)
        # mostly untimed (trace lines without -msg timestamp=on, with a few timed QMP events):
        # the untimed rows sort last, so pacing by time would hold them to the end
        timed = bool(n) and int(t.notna().sum()) >= MIN_TIMED_SHARE * n
        # untimed rows sort last; they take the last known time so the clock stays monotonic
        t_ns = t.ffill().bfill().to_numpy(dtype="int64") if timed else None
        names = events["event"].astype("string").to_numpy(dtype=object, na_value="")
        # the events the model counts as checks and as pass ends (the registry's roles)
        checks = np.flatnonzero(np.isin(names, list(registry.check_kinds()))) + 1
        passes = np.flatnonzero(np.isin(names, registry.with_role("sync_end"))) + 1
        return cls(t_ns, n, checks, passes, speed=speed, playing=playing)

    @property
    def at_end(self) -> bool:
        return self.pos >= self.n

    # --- playing --------------------------------------------------------------------------
    def toggle(self) -> None:
        """Play or pause; playing again at the end starts from the beginning."""
        if not self.playing and self.at_end:
            self._set_pos(0)
        self.playing = not self.playing

    def play(self) -> None:
        self.playing = True

    def pause(self) -> None:
        self.playing = False

    def set_speed(self, speed: float) -> None:
        self.speed = float(speed)

    def change_speed(self, step: int) -> None:
        """One step up (1) or down (-1) in SPEEDS."""
        self.speed = next_speed(self.speed, step)

    def advance(self, dt_s: float) -> bool:
        """Let ``dt_s`` seconds of wall time pass; True when the cursor moved. Playing stops
        at the end."""
        if not self.playing or self.at_end:
            return False
        before = self.pos
        if self.timed:
            self._move_ns(self.cursor_ns + int(dt_s * self.speed * 1e9))
            if self.pos < self.n and int(self.t[self.pos]) - self.cursor_ns > IDLE_SKIP_NS:
                # nothing happens for a while (guest boot, between attempts): skip ahead
                self.cursor_ns = int(self.t[self.pos]) - LEAD_NS
        else:
            self._upos = min(float(self.n), self._upos + dt_s * self.speed * UNTIMED_EVENTS_PER_S)
            self.pos = int(self._upos)
        if self.at_end:
            self.pos = self.n
            self.playing = False
        # a timed cursor moves between events too (the elapsed time shown runs)
        return self.pos != before or self.timed

    # --- seeking (pauses) -----------------------------------------------------------------
    def seek_ns(self, t_ns: int) -> bool:
        """Go to a time on the input's clock; False (and no move) without timestamps."""
        self.playing = False
        if not self.timed:
            return False
        self._move_ns(t_ns)
        return True

    def seek_fraction(self, fraction: float) -> None:
        """Go to a fraction of the input's time span (of its events when untimed)."""
        self.playing = False
        f = max(0.0, min(1.0, float(fraction)))
        if self.timed:
            self._move_ns(self.first_ns + round(f * (self.last_ns - self.first_ns)))
        else:
            self._set_pos(round(f * self.n))

    def seek_pos(self, pos: int) -> None:
        """Go to ``pos`` events applied (clamped to 0..n)."""
        self.playing = False
        self._set_pos(pos)

    def step_check(self, direction: int) -> None:
        """To the next (1) or previous (-1) convergence check."""
        self.playing = False
        self._step(self.checks, direction)

    def step_pass(self, direction: int) -> None:
        """To the next (1) or previous (-1) dirty-bitmap pass."""
        self.playing = False
        self._step(self.passes, direction)

    def open_at(self, at: str | float | None, starts: list[int]) -> None:
        """The opening position: ``start``/None (just before the first migration in
        ``starts``, skipping a lab run's QEMU start-up), ``end`` (paused), or ms from the first
        event (paused; an event number when untimed)."""
        if at is None or at == "start":
            self._set_pos(0)
            if self.timed and starts:
                self._move_ns(max(self.first_ns, min(starts) - LEAD_NS))
        elif at == "end":
            self._set_pos(self.n)
            self.playing = False
        else:
            self.playing = False
            if self.timed:
                self._move_ns(self.first_ns + int(float(at) * 1e6))
            else:
                self._set_pos(int(float(at)))

    # --- internals ------------------------------------------------------------------------
    def _set_pos(self, pos: int) -> None:
        self.pos = max(0, min(self.n, int(pos)))
        self._upos = float(self.pos)
        if self.timed:
            self.cursor_ns = int(self.t[self.pos - 1]) if self.pos > 0 else self.first_ns

    def _move_ns(self, t_ns: int) -> None:
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
