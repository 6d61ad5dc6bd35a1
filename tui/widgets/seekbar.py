"""The replay seek bar: position, speed, check marks; a click seeks there."""

from __future__ import annotations

from rich.text import Text
from textual import events

from profiler.views.fmt import fmt_ms
from tui.messages import SeekRequested
from tui.widgets.base import Panel

PREFIX_W = 22


class SeekBar(Panel):
    """``⏸ 1.23 s / 3.45 s ━━━━━━╸──── 1234/5678 ev``; click to jump."""

    DEFAULT_CSS = """
    SeekBar { height: 1; }
    """

    def _bar_geometry(self) -> tuple[int, int]:
        width = self.size.width
        return PREFIX_W, max(width - PREFIX_W - 14, 5)

    def fraction(self) -> float:
        s = self.shown
        if s is None:
            return 0.0
        v = s.view
        if v.timed and v.first_ns is not None and v.last_ns is not None and v.cursor_ns is not None:
            span = v.last_ns - v.first_ns
            return (v.cursor_ns - v.first_ns) / span if span > 0 else 1.0
        return v.applied / v.total if v.total else 0.0

    def render(self) -> Text:
        s = self.shown
        if s is None:
            return Text("")
        v = s.view
        start, bar_w = self._bar_geometry()
        if v.timed and v.first_ns is not None and v.cursor_ns is not None:
            pos = f"{fmt_ms((v.cursor_ns - v.first_ns) / 1e6)} / {fmt_ms((v.last_ns - v.first_ns) / 1e6)}"
        else:
            pos = f"#{v.applied} / #{v.total}"
        t = Text(no_wrap=True, overflow="crop")
        t.append(f"{pos:<{PREFIX_W}}"[:PREFIX_W], "bold")
        f = min(max(self.fraction(), 0.0), 1.0)
        filled = round(f * bar_w)
        t.append("━" * filled, "bold cyan")
        if filled < bar_w:
            t.append("╸", "cyan")
            t.append("─" * (bar_w - filled - 1), "dim")
        t.append(f" {v.applied:>6}/{v.total} ev", "dim")
        return t

    def on_click(self, event: events.Click) -> None:
        start, bar_w = self._bar_geometry()
        x = event.x - start
        if 0 <= x <= bar_w:
            self.post_message(SeekRequested(fraction=x / bar_w))
