"""Every message the TUI passes: feed -> app (model updates, source state), widgets -> app (intent)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from tui.view import View


@dataclass
class ModelUpdated(Message):
    """A new read-only view of the model; posted by the feed at most 10 times a second."""

    view: View

    def can_replace(self, message: Message) -> bool:
        # a newer view supersedes an older one still queued: the UI only draws the latest
        return isinstance(message, ModelUpdated)


@dataclass
class SourceEnded(Message):
    """The input ended normally (live source finished, replay reached the end)."""

    reason: str


@dataclass
class SourceFailed(Message):
    """The source or the model raised; the screen stays up with this notice."""

    error: str


@dataclass
class Notice(Message):
    """Something the user should read (no timestamps in the input, a bad jump target)."""

    text: str
    severity: str = "warning"  # information | warning | error


@dataclass
class SeekRequested(Message):
    """The user asked to move the replay cursor: to ``t_ms`` from the first event, or a fraction."""

    t_ms: float | None = None
    fraction: float | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SeekRequested)


@dataclass
class FilterChanged(Message):
    """The event-log filter text changed."""

    text: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, FilterChanged)
