"""The `migprof top` screen: a table of every QEMU on the host; Enter opens one in the full TUI.

The app draws what ``rows()`` returns (a snapshot the session publishes from its own thread)
every ``interval`` seconds and never touches a source or a model. Enter ends the app with
``("open", pid)``: ``run_table`` then shows that QEMU in the full live TUI
(``tui.app.run_live``) and opens a new top app, the session running on meanwhile;
``q``/Ctrl-C end it with ``("quit", status)``.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from profiler.errors import EXIT_OK
from profiler.model.vm_row import VmRow
from profiler.session import Session
from profiler.views.top import TopBoard, VmStream, migrating, order

Rows = Callable[[], tuple[Sequence[VmRow], str]]  # the rows, and a line about the host
# the verdict early: a narrow terminal still shows it (the table scrolls sideways)
COLUMNS = ("PID", "VM", "SIDE", "STATUS", "PHASE", "PASS", "VERDICT", "PENDING", "THRESHOLD",
           "BANDWIDTH", "EXP. DOWNTIME", "DOWNTIME")
_SIDE = {"source": "src", "destination": "dst"}


def _mib(v: float | None, unit: str = "MiB") -> str:
    return "-" if v is None else f"{v / (1 << 20):.1f} {unit}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def cells(row: VmRow) -> tuple[str, ...]:
    """A row's cells, in ``COLUMNS`` order."""
    return (str(row.pid), row.label, _SIDE.get(row.side, "?"), row.status, row.phase,
            "-" if row.pass_no is None else str(row.pass_no), row.verdict, _mib(row.pending_bytes),
            _mib(row.threshold_bytes), _mib(row.bandwidth_bytes_per_s, "MiB/s"),
            _ms(row.expected_downtime_ms), _ms(row.downtime_ms))


class TopApp(App[tuple[str, int]]):
    """Every QEMU in one table, refreshed every ``interval`` seconds."""

    CSS_PATH = str(Path(__file__).with_name("top.tcss"))
    TITLE = "migprof top"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("enter", "open", "Open in the full TUI"),
    ]

    def __init__(self, rows: Rows, *, interval: float = 1.0, selected: int | None = None,
                 running: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.running = running  # False once the session has ended (-d, count): the app ends
        self.interval = interval
        self.selected = selected  # pid to put the cursor on (coming back from the full TUI)
        self.shown: list[int] = []  # pids in table order
        self.refreshes = 0

    def compose(self) -> ComposeResult:
        yield Static("", id="host")
        table: DataTable = DataTable(id="vms", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Static("", id="summary")
        yield Footer()

    def on_mount(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                loop.add_signal_handler(sig, self._quit)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests)
        self.refresh_rows()
        self.set_interval(self.interval, self.refresh_rows)

    def refresh_rows(self) -> None:
        if self.running is not None and not self.running():
            self._quit()
            return
        rows, host = self.rows()
        rows = order(rows)
        table = self.query_one("#vms", DataTable)
        keep = self.selected if self.selected is not None else self._cursor_pid()
        table.clear()
        for r in rows:
            table.add_row(*cells(r), key=str(r.pid))
        self.shown = [r.pid for r in rows]
        if keep in self.shown:
            table.move_cursor(row=self.shown.index(keep))
        self.selected = None
        busy = sum(1 for r in rows if migrating(r))
        self.query_one("#host", Static).update(
            f"{len(rows)} QEMU{'s' if len(rows) != 1 else ''}, {busy} migrating   {host}")
        self._show_summary()
        self.refreshes += 1

    def _cursor_pid(self) -> int | None:
        table = self.query_one("#vms", DataTable)
        if not self.shown or table.cursor_row is None or table.cursor_row >= len(self.shown):
            return None
        return self.shown[table.cursor_row]

    def _show_summary(self) -> None:
        pid = self._cursor_pid()
        rows = {r.pid: r for r in self.rows()[0]}
        r = rows.get(pid) if pid is not None else None
        text = "" if r is None else f"{r.label} (pid {r.pid}): {r.summary or r.verdict}"
        self.query_one("#summary", Static).update(text)

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_summary()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.exit(("open", int(str(event.row_key.value))))

    def action_open(self) -> None:
        pid = self._cursor_pid()
        if pid is not None:
            self.exit(("open", pid))

    def _quit(self) -> None:
        self.exit(("quit", EXIT_OK))

    async def action_quit(self) -> None:
        self._quit()


def run_table(session: Session, board: TopBoard, interval: float, debug: bool) -> int:
    """The table on this thread, the session on another; Enter shows one QEMU in the full
    live TUI (``tui.app.run_live`` over its events) while the session goes on, then the
    table again, its cursor on that QEMU. Ends on q, or when the session has ended."""
    from tui.app import run_live

    def loop() -> None:
        with session:
            for _ in session.batches():
                pass

    worker = threading.Thread(target=loop, name="top-session")
    worker.start()
    selected, rc = None, EXIT_OK
    try:
        while worker.is_alive():
            action, value = TopApp(board.rows, interval=interval, selected=selected,
                                   running=worker.is_alive).run() or ("quit", EXIT_OK)
            if action != "open":
                rc = value
                break
            selected = value
            row = next((r for r in board.rows()[0] if r.pid == value), None)
            label = row.label if row is not None else f"pid {value}"
            run_live(VmStream(board, value), title=f"migprof: {label} (pid {value})", debug=debug)
    finally:
        session.stop.set()
        worker.join()
    return rc
