"""The event log: the newest events up to the cursor, with a filter the feed applies."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input

from tui.messages import FilterChanged
from tui.widgets.base import Panel

SIDE_STYLE = {"src": "cyan", "dst": "magenta", "?": "dim"}


class EventLines(Panel):
    """As many of the newest matching events as fit, newest at the bottom."""

    DEFAULT_CSS = """
    EventLines { height: 1fr; }
    """

    def render(self) -> RenderableType:
        s = self.shown
        if s is None:
            return Text("")
        v = s.view
        h = max(self.size.height, 1)
        head = Text(no_wrap=True, overflow="ellipsis")
        if v.log_filter:
            head.append(f"{v.log_matches:,} of {v.applied:,} events match ", "dim")
            head.append(repr(v.log_filter), "bold")
        else:
            head.append(f"{v.applied:,} events", "dim")
        rows = v.log_rows[-(h - 1) :] if h > 1 else ()
        lines = [head]
        for r in rows:
            t = Text(no_wrap=True, overflow="ellipsis")
            t.append(f"{r.t:>10} ", "dim")
            t.append(f"{r.side:<3} ", SIDE_STYLE.get(r.side, ""))
            t.append(f"{r.event:<28.28} ", "bold")
            if r.device:
                t.append(f"{r.device} ", "cyan")
            t.append(r.text)
            lines.append(t)
        return Group(*lines)


class EventLog(Vertical):
    """A filter box over the event lines."""

    DEFAULT_CSS = """
    EventLog { height: 1fr; }
    EventLog Input { height: 1; border: none; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: words to match, -word to exclude (Enter)", id="log-filter")
        yield EventLines(id="log-lines")

    @on(Input.Submitted, "#log-filter")
    @on(Input.Changed, "#log-filter")
    def _filter(self, event: Input.Changed | Input.Submitted) -> None:
        event.stop()
        self.post_message(FilterChanged(event.value))
