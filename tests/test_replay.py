"""The replay clock (profiler/replay.py) as a pure unit: no threads, no terminal; wall time
is an argument, so nothing here waits on the clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from profiler import events as ev
from profiler import pipeline
from profiler.replay import (
    IDLE_SKIP_NS,
    LEAD_NS,
    SPEEDS,
    UNTIMED_EVENTS_PER_S,
    ReplayClock,
    next_speed,
)

REAL = Path(__file__).resolve().parent / "data" / "real"
S = 1_000_000_000


def clock(times_s: list[float], names: list[str] | None = None, **kw) -> ReplayClock:
    """A clock over events at ``times_s`` seconds (None: untimed)."""
    names = names or ["x"] * len(times_s)
    frame = ev.conform(
        pd.DataFrame(
            {
                "t_ns": [None if t is None else int(t * S) for t in times_s],
                "event": names,
                "seq": range(len(times_s)),
            }
        )
    )
    return ReplayClock.of(frame, **kw)


def test_playing_moves_the_cursor_by_wall_time_times_speed():
    c = clock([0, 1, 2, 3, 4], speed=2.0)
    assert (c.pos, c.cursor_ns) == (0, 0)
    assert c.advance(0.75)  # 1.5 s of input
    assert c.cursor_ns == int(1.5 * S) and c.pos == 2  # events at 0 s and 1 s applied
    c.change_speed(+1)
    assert c.speed == 5.0
    c.advance(1.0)  # 5 s more: past the end
    assert c.at_end and c.pos == 5 and not c.playing and c.cursor_ns == 4 * S
    assert not c.advance(1.0)  # stopped at the end


def test_paused_does_not_move_and_toggle_at_the_end_restarts():
    c = clock([0, 1, 2], playing=False)
    assert not c.advance(10.0) and c.pos == 0
    c.seek_pos(3)
    assert c.at_end
    c.toggle()
    assert c.playing and c.pos == 0 and c.cursor_ns == 0
    c.toggle()
    assert not c.playing


def test_long_idle_stretches_are_skipped():
    c = clock([0, 1, 60, 61])
    assert c.skips_idle
    c.advance(1.5)  # cursor 1.5 s: the next event is 58.5 s away
    assert c.cursor_ns == 60 * S - LEAD_NS and c.pos == 2
    c.advance(0.6)
    assert c.pos == 3  # the event at 60 s
    assert not clock([0, 1, 2]).skips_idle
    assert IDLE_SKIP_NS < 58 * S


def test_seeking_pauses_and_clamps():
    c = clock([0, 1, 2, 3])
    assert c.seek_ns(int(1.5 * S))
    assert not c.playing and c.pos == 2 and c.cursor_ns == int(1.5 * S)
    c.seek_ns(-5 * S)
    assert c.pos == 1 and c.cursor_ns == 0  # the first event is at the first time
    c.seek_ns(99 * S)
    assert c.at_end and c.cursor_ns == 3 * S
    c.seek_fraction(0.5)
    assert c.cursor_ns == int(1.5 * S)
    c.seek_fraction(7.0)
    assert c.cursor_ns == 3 * S
    c.seek_pos(-3)
    assert c.pos == 0 and c.cursor_ns == 0
    c.seek_pos(1 << 62)
    assert c.pos == 4


def test_stepping_lands_just_after_each_check_or_pass():
    names = ["a", "migrate_pending_exact", "b", "migration_bitmap_sync_end", "migrate_pending_estimate", "c"]
    c = clock([0, 1, 2, 3, 4, 5], names)
    assert list(c.checks) == [2, 5] and list(c.passes) == [4]
    c.step_check(+1)
    assert c.pos == 2 and c.cursor_ns == 1 * S and not c.playing
    c.step_check(+1)
    assert c.pos == 5
    c.step_check(+1)
    assert c.pos == 6  # past the last check: the end
    c.step_check(-1)
    assert c.pos == 5
    c.step_pass(-1)
    assert c.pos == 4
    c.step_pass(-1)
    assert c.pos == 0  # before the first pass: the start
    nothing = clock([0, 1])
    nothing.step_check(+1)
    assert nothing.pos == 0  # no checks: stays


def test_opening_position():
    c = clock([0, 10, 11, 12])
    c.open_at("start", starts=[11 * S])
    assert c.cursor_ns == 11 * S - LEAD_NS and c.pos == 2 and c.playing
    c = clock([0, 10, 11, 12])
    c.open_at(None, starts=[])
    assert c.pos == 0 and c.cursor_ns == 0
    c.open_at("end", starts=[])
    assert c.at_end and not c.playing
    c = clock([0, 10, 11, 12])
    c.open_at(10_500.0, starts=[])  # ms from the first event
    assert c.cursor_ns == int(10.5 * S) and c.pos == 2 and not c.playing


def test_untimed_input_plays_by_event_order_and_refuses_times():
    c = clock([None] * 1000 + [0.0], speed=1.0)  # fewer than 90 % of the events timed
    assert not c.timed and c.first_ns is None and c.cursor_ns is None
    c.advance(0.5)
    assert c.pos == int(0.5 * UNTIMED_EVENTS_PER_S)
    assert not c.seek_ns(0) and not c.playing and c.pos == int(0.5 * UNTIMED_EVENTS_PER_S)
    c.seek_fraction(0.5)
    assert c.pos == round(0.5 * 1001)
    c.open_at(7.0, starts=[])
    assert c.pos == 7


def test_a_few_untimed_rows_take_the_last_known_time():
    c = clock([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, None])  # ten of eleven timed: by time
    assert c.timed and c.last_ns == 9 * S
    c.seek_ns(9 * S)
    assert c.at_end  # the untimed row comes with the last time


def test_speed_steps():
    assert next_speed(1.0, +1) == 2.0
    assert next_speed(SPEEDS[-1], +1) == SPEEDS[-1]
    assert next_speed(SPEEDS[0], -1) == SPEEDS[0]
    c = clock([0, 1])
    c.set_speed(3.0)
    c.change_speed(+1)
    assert c.speed == 5.0  # from between two steps, the nearest then one up


def test_a_real_run_steps_through_every_check():
    run = next(p for p in sorted(REAL.iterdir()) if p.name.endswith("downtime-raise"))
    events = ev.sort_timeline(pipeline.load([str(run)]).events)
    c = ReplayClock.of(events, playing=False)
    assert c.timed and len(c.checks) > 10
    seen = []
    while not c.at_end:
        c.step_check(+1)
        seen.append(c.pos)
    assert seen[:-1] == list(c.checks) and seen[-1] == len(events)
    names = events["event"].astype(str).to_numpy()
    assert all(names[p - 1].startswith("migrate_pending") for p in c.checks)
    t = events["t_ns"].to_numpy(dtype="float64")
    assert np.all(np.diff(c.t) >= 0) and c.first_ns == int(np.nanmin(t))


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_inputs(n):
    c = clock([0.0] * n)
    c.advance(1.0)
    c.step_check(+1)
    c.seek_fraction(0.5)
    assert c.pos == n
