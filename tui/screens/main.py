"""The one dashboard screen, shared by live, demo and replay."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from tui.view import View
from tui.widgets.base import Shown
from tui.widgets.chart import ConvergenceChart
from tui.widgets.devices import DevicesTable
from tui.widgets.eventlog import EventLines, EventLog
from tui.widgets.header import StatusHeader
from tui.widgets.health import HealthPanel
from tui.widgets.seekbar import SeekBar
from tui.widgets.timeline import PhaseTimeline, timeline_height
from tui.widgets.verdict import VerdictPanel

MIN_W, MIN_H = 60, 18  # below this the dashboard is replaced by a notice
WIDE_W, TALL_H = 130, 40  # from here the side column and a taller tab area appear


class MainScreen(Screen):
    """Header, seek bar, chart (+ side column when wide), timeline, tabs, footer."""

    def __init__(self, mode: str) -> None:
        super().__init__(name="main")
        self.mode = mode
        self.shown: Shown | None = None
        self._timeline_h = 1

    def compose(self) -> ComposeResult:
        with Vertical(id="body"):
            yield StatusHeader(id="header")
            seek = SeekBar(id="seek")
            seek.display = self.mode == "replay"
            yield seek
            with Horizontal(id="top"):
                # the timeline sits under the chart at the same width: their time axes line up
                with Vertical(id="left"):
                    yield ConvergenceChart(id="chart")
                    yield PhaseTimeline(id="timeline")
                with Vertical(id="side"):
                    yield VerdictPanel(id="verdict-side")
            with TabbedContent(id="tabs", initial="tab-devices"):
                with TabPane("Devices", id="tab-devices"):
                    yield DevicesTable(id="devices")
                with TabPane("Events", id="tab-events"):
                    yield EventLog(id="events")
                with TabPane("Verdict", id="tab-verdict"), VerticalScroll():
                    yield VerdictPanel(id="verdict")
                with TabPane("Health", id="tab-health"), VerticalScroll():
                    yield HealthPanel(id="health")
        yield Static(id="too-small")
        yield Footer()

    def on_mount(self) -> None:
        self._layout_for(self.size.width, self.size.height)

    def on_resize(self, event: events.Resize) -> None:
        self._layout_for(event.size.width, event.size.height)

    def _layout_for(self, w: int, h: int) -> None:
        small = w < MIN_W or h < MIN_H
        self.set_class(small, "-too-small")
        self.set_class(w >= WIDE_W, "-wide")
        self.set_class(h >= TALL_H, "-tall")
        if small:
            self.query_one("#too-small", Static).update(
                f"Terminal too small: {w}x{h}.\nmigprof needs at least {MIN_W}x{MIN_H} "
                f"(80x24 or larger reads best).\nEnlarge the window, or press q to quit."
            )

    def apply(self, view: View, selected: int | None, log_scale: bool) -> Shown:
        """Hand one view to every panel (attributes down)."""
        mig = view.migration(selected)
        shown = Shown(
            view=view,
            mig=mig,
            full_mig=view.full_migration(mig),
            log_scale=log_scale,
            selected=selected,
        )
        self.shown = shown
        for sel in (
            "#header",
            "#seek",
            "#chart",
            "#timeline",
            "#verdict",
            "#verdict-side",
            "#health",
        ):
            self.query_one(sel).shown = shown
        self.query_one("#log-lines", EventLines).shown = shown
        self.query_one("#devices", DevicesTable).show(shown)
        th = timeline_height(mig)
        if th != self._timeline_h:
            self._timeline_h = th
            self.query_one("#timeline", PhaseTimeline).refresh(layout=True)
        return shown
