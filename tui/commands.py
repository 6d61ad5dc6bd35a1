"""Typed commands from the UI thread to the feed worker (put on its thread-safe queue)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class TogglePlay:
    """Replay: play or pause (from the start again at the end). Live: freeze or unfreeze."""


@dataclass(frozen=True, slots=True)
class Play:
    pass


@dataclass(frozen=True, slots=True)
class Pause:
    pass


@dataclass(frozen=True, slots=True)
class SetSpeed:
    speed: float  # replay speed factor


@dataclass(frozen=True, slots=True)
class ChangeSpeed:
    step: int  # +1 one step faster, -1 one step slower (profiler.replay.SPEEDS)


@dataclass(frozen=True, slots=True)
class SeekTime:
    t_ns: int  # epoch ns on the input's clock


@dataclass(frozen=True, slots=True)
class SeekFraction:
    fraction: float  # 0..1 of the input's time span (of its events when untimed)


@dataclass(frozen=True, slots=True)
class SeekPosition:
    pos: int  # events applied: 0 is the start; past the end is the end


@dataclass(frozen=True, slots=True)
class SeekEnd:
    pass


@dataclass(frozen=True, slots=True)
class Step:
    mark: Literal["check", "pass"]
    direction: int  # +1 next, -1 previous


@dataclass(frozen=True, slots=True)
class SetFilter:
    text: str  # event-log filter: words that must all match, -word excludes


Command = (
    TogglePlay
    | Play
    | Pause
    | SetSpeed
    | ChangeSpeed
    | SeekTime
    | SeekFraction
    | SeekPosition
    | SeekEnd
    | Step
    | SetFilter
)
