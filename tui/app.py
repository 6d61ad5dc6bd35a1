"""The migprof Textual app: bindings, screens, and the entry points ``run_live``/``run_replay``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input, TabbedContent

from profiler.errors import EXIT_OK, EXIT_USAGE
from tui import feed as feeds
from tui.commands import (
    ChangeSpeed,
    SeekEnd,
    SeekFraction,
    SeekPosition,
    SeekTime,
    SetFilter,
    Step,
    TogglePlay,
)
from tui.fmt import parse_time
from tui.messages import (
    FilterChanged,
    ModelUpdated,
    Notice,
    SeekRequested,
    SourceEnded,
    SourceFailed,
)
from tui.screens.help import HelpScreen
from tui.screens.jump import JumpScreen
from tui.screens.main import MainScreen
from tui.view import View

log = logging.getLogger(__name__)

REPLAY_ONLY = {"faster", "slower", "step_check", "step_pass", "seek_start", "seek_end", "jump"}


class _Stop:
    """Set when either the app asked the feed to stop or its worker was cancelled."""

    def __init__(self, *events: threading.Event) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)

    def wait(self, timeout: float | None = None) -> bool:
        # sources poll with short timeouts; waiting on the first is enough to be responsive
        self._events[0].wait(timeout)
        return self.is_set()

    def set(self) -> None:
        self._events[0].set()


class MigprofApp(App[int]):
    """One app for live, demo and replay; the feed decides which."""

    CSS_PATH = str(Path(__file__).with_name("migprof.tcss"))  # absolute: subclasses live elsewhere
    TITLE = "migprof"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),  # bcc tools stop on Ctrl-C
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("space", "toggle", "Play/Pause"),
        Binding("plus,equals_sign,right_square_bracket", "faster", "Faster", key_display="+"),
        Binding("minus,left_square_bracket", "slower", "Slower", key_display="-"),
        Binding("full_stop", "step_check(1)", "Check→", key_display="."),
        Binding("comma", "step_check(-1)", "←Check", key_display=",", show=False),
        Binding("greater_than_sign", "step_pass(1)", "Pass→", key_display=">", show=False),
        Binding("less_than_sign", "step_pass(-1)", "←Pass", key_display="<", show=False),
        Binding("home", "seek_start", "Start", show=False),
        Binding("end", "seek_end", "End", show=False),
        Binding("g", "jump", "Jump"),
        Binding("l", "log_scale", "Log/Lin"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("m", "next_migration", "Migration", show=False),
        Binding("M", "follow_latest", "Latest migration", show=False),
        Binding("d", "tab('tab-devices')", "Devices", show=False),
        Binding("e", "tab('tab-events')", "Events", show=False),
        Binding("v", "tab('tab-verdict')", "Verdict", show=False),
        Binding("h", "tab('tab-health')", "Health", show=False),
        Binding("escape", "unfocus", "Leave filter", show=False),
    ]

    def __init__(self, feed: feeds.Feed, *, debug: bool = False) -> None:
        super().__init__()
        self.feed = feed
        self.title = feed.title
        self.debug_mode = debug
        self.view: View | None = None
        self.selected: int | None = None
        self.log_scale = True
        self.updates = 0
        self._stop = threading.Event()
        self._last_error: BaseException | None = None
        self.source_failed: str | None = None
        self.ended: str | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def get_default_screen(self) -> Screen:
        return MainScreen(self.feed.mode)

    def on_mount(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                loop.add_signal_handler(sig, self._signal_exit)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests): Ctrl-C and q still work
        worker_stop = threading.Event()
        self._feed_stop = _Stop(self._stop, worker_stop)
        self._worker = feeds.start(self, self.feed, self._feed_stop)

    def _signal_exit(self) -> None:
        self._stop.set()
        self.exit(EXIT_OK, return_code=EXIT_OK)

    def on_unmount(self) -> None:
        self._stop.set()

    def _handle_exception(self, error: Exception) -> None:
        self._last_error = error
        self._stop.set()
        super()._handle_exception(error)

    def _print_error_renderables(self) -> None:
        # the terminal is restored by now; show one line unless --debug asked for tracebacks
        if self.debug_mode or self._last_error is None:
            super()._print_error_renderables()
            return
        e = self._last_error
        print(
            f"migprof: error: the TUI stopped: {type(e).__name__}: {e} (run with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        self._exit_renderables.clear()

    async def action_quit(self) -> None:
        self._stop.set()
        code = EXIT_USAGE if self.source_failed else EXIT_OK
        self.exit(code, return_code=code)

    # --- messages from the feed ------------------------------------------------------------
    def on_model_updated(self, message: ModelUpdated) -> None:
        self.view = message.view
        self.updates += 1
        self._apply()

    def _apply(self) -> None:
        if self.view is None:
            return
        screen = self.screen if isinstance(self.screen, MainScreen) else self._main()
        if screen is None:
            return
        try:
            screen.apply(self.view, self.selected, self.log_scale)
        except Exception as e:  # a bad value must not take the terminal down
            log.debug("apply failed", exc_info=True)
            self.notify(f"cannot show this update: {type(e).__name__}: {e}", severity="error")

    def _main(self) -> MainScreen | None:
        for s in self.screen_stack:
            if isinstance(s, MainScreen):
                return s
        return None

    def on_source_ended(self, message: SourceEnded) -> None:
        self.ended = message.reason
        if self.feed.mode == "live":  # replay shows its end in the header and seek bar
            self.notify(message.reason, title="input ended", timeout=6)

    def on_source_failed(self, message: SourceFailed) -> None:
        self.source_failed = message.error
        self.notify(
            f"{message.error}\nThe screen keeps the data received so far; q quits.",
            title="source failed",
            severity="error",
            timeout=30,
        )

    def on_notice(self, message: Notice) -> None:
        self.notify(message.text, severity=message.severity, timeout=8)

    @on(SeekRequested)
    def _seek(self, message: SeekRequested) -> None:
        if self.feed.mode != "replay":
            return
        if message.fraction is not None:
            self.feed.send(SeekFraction(message.fraction))
        elif message.t_ms is not None:
            self.feed.send(SeekTime(self._abs_ns(message.t_ms)))

    @on(FilterChanged)
    def _filter(self, message: FilterChanged) -> None:
        self.feed.send(SetFilter(message.text))

    def _abs_ns(self, t_ms: float) -> int:
        """A time from the selected migration's start (or the first event) to epoch ns."""
        v = self.view
        mig = v.migration(self.selected) if v else None
        if v is not None and v.full is not None and v.full.migrations:
            # replay: the migration as the whole input has it (the cursor may be before it)
            migs = v.full.migrations
            mig = (
                v.full_migration(mig)
                if mig is not None
                else (
                    migs[self.selected]
                    if self.selected is not None and self.selected < len(migs)
                    else migs[-1]
                )
            )
        base = (
            mig.start_ns
            if mig is not None and mig.start_ns is not None
            else (v.first_ns if v else 0)
        )
        return int((base or 0) + t_ms * 1e6)

    # --- actions ---------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in REPLAY_ONLY and self.feed.mode != "replay")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_toggle(self) -> None:
        self.feed.send(TogglePlay())

    def action_faster(self) -> None:
        self.feed.send(ChangeSpeed(+1))

    def action_slower(self) -> None:
        self.feed.send(ChangeSpeed(-1))

    def action_step_check(self, direction: int) -> None:
        self.feed.send(Step("check", direction))

    def action_step_pass(self, direction: int) -> None:
        self.feed.send(Step("pass", direction))

    def action_seek_start(self) -> None:
        self.feed.send(SeekPosition(0))

    def action_seek_end(self) -> None:
        self.feed.send(SeekEnd())

    def action_jump(self) -> None:
        def done(text: str | None) -> None:
            if not text:
                return
            try:
                t_ms = parse_time(text)
            except ValueError as e:
                self.notify(str(e), severity="error")
                return
            self.feed.send(SeekTime(self._abs_ns(t_ms)))

        self.push_screen(JumpScreen(), done)

    def action_log_scale(self) -> None:
        self.log_scale = not self.log_scale
        self._apply()

    def action_next_migration(self) -> None:
        n = len(self.view.report.migrations) if self.view and self.view.report else 0
        if n:
            cur = self.selected if self.selected is not None else n - 1
            self.selected = (cur + 1) % n
            self._apply()

    def action_follow_latest(self) -> None:
        self.selected = None
        self._apply()

    def action_tab(self, tab: str) -> None:
        main = self._main()
        if main is not None:
            main.query_one("#tabs", TabbedContent).active = tab

    def action_filter(self) -> None:
        main = self._main()
        if main is not None:
            main.query_one("#tabs", TabbedContent).active = "tab-events"
            main.query_one("#log-filter", Input).focus()

    def action_unfocus(self) -> None:
        self.set_focus(None)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "Play / pause",
            "Start or stop the replay (live: freeze the display)",
            self.action_toggle,
        )
        yield SystemCommand(
            "Toggle log scale",
            "Log or linear y axis of the convergence chart",
            self.action_log_scale,
        )
        yield SystemCommand(
            "Filter events", "Type words to filter the event log", self.action_filter
        )
        yield SystemCommand(
            "Help: keys and panels", "What each key and panel does", self.action_help
        )
        for tab, label in (
            ("tab-devices", "Devices"),
            ("tab-events", "Events"),
            ("tab-verdict", "Verdict"),
            ("tab-health", "Health"),
        ):
            yield SystemCommand(
                f"Show {label}",
                f"Switch the bottom tabs to {label}",
                lambda t=tab: self.action_tab(t),
            )
        if self.feed.mode == "replay":
            yield SystemCommand("Replay faster", "Double the replay speed", self.action_faster)
            yield SystemCommand("Replay slower", "Halve the replay speed", self.action_slower)
            yield SystemCommand(
                "Next check",
                "Step to the next convergence check",
                lambda: self.action_step_check(1),
            )
            yield SystemCommand(
                "Previous check",
                "Step back one convergence check",
                lambda: self.action_step_check(-1),
            )
            yield SystemCommand(
                "Next pass", "Step to the next dirty-bitmap pass", lambda: self.action_step_pass(1)
            )
            yield SystemCommand(
                "Previous pass",
                "Step back one dirty-bitmap pass",
                lambda: self.action_step_pass(-1),
            )
            yield SystemCommand("Jump to time", "Move the cursor to a time", self.action_jump)
            yield SystemCommand(
                "Go to start", "Move the cursor to the first event", self.action_seek_start
            )
            yield SystemCommand(
                "Go to end", "Move the cursor to the last event", self.action_seek_end
            )


def _run(app: MigprofApp) -> int:
    """Run the app; Textual restores the terminal on every exit, errors included."""
    try:
        rc = app.run()
    except KeyboardInterrupt:
        rc = 130
    finally:
        app._stop.set()
    if app.return_code not in (None, 0):
        return int(app.return_code)
    return int(rc or 0)


def run_live(
    source: Any,
    *,
    title: str,
    record: Any = None,
    debug: bool = False,
    build: feeds.Build | None = None,
) -> int:
    """Show a live ``Source`` until the user quits; 0, or 2 if the source failed.

    ``record``: an optional sink for every batch as it arrives (an object with
    ``write(frame)``/``append(frame)``, or a callable), called in the feed thread.
    """
    feed = feeds.LiveFeed(source, title=title, record=record, build=build)
    return _run(MigprofApp(feed, debug=debug))


def run_replay(feed: feeds.ReplayFeed, *, debug: bool = False) -> int:
    """Replay a loaded input (see ``profiler.commands.replay``)."""
    return _run(MigprofApp(feed, debug=debug))
