"""The `migprof top` app headless (Textual pilot): rows from real lab runs' reports, the table
follows the rows it is given, Enter asks for that QEMU's full TUI, q quits."""

from __future__ import annotations

import asyncio

import pytest
from test_per_vm import side_events

from profiler.model.build import build_report
from profiler.model.vm_row import vm_row
from tui.top import COLUMNS, TopApp, cells


@pytest.fixture(scope="module")
def rows():
    out = []
    for pid, run in ((301, "7.2-converges"), (302, "7.2-destination-dies")):
        rep = build_report(side_events(run, pid), inputs=["live"])
        out.append(vm_row(rep, pid=pid, label=run, side="source"))
    out.append(vm_row(None, pid=303, label="idle-vm", side="source"))
    return out


class Board:
    """What the session publishes: the rows now (a test changes them between refreshes)."""

    def __init__(self, rows):
        self.rows = list(rows)

    def __call__(self):
        return self.rows, "BPF tracepoint"


def _table_rows(app) -> list[tuple[str, ...]]:
    t = app.query_one("#vms")
    return [tuple(str(c) for c in t.get_row_at(i)) for i in range(t.row_count)]


def test_table_shows_the_rows_and_enter_opens_one(rows):
    board = Board(rows)

    async def go():
        app = TopApp(board, interval=0.05)
        async with app.run_test(size=(140, 30)) as pilot:
            await pilot.pause()
            assert _table_rows(app) == [cells(r) for r in sorted(rows, key=lambda r: r.label)]
            assert "3 QEMUs, 0 migrating" in str(app.query_one("#host").content)
            # the highlighted QEMU's verdict in words under the table
            first = sorted(rows, key=lambda r: r.label)[0]
            assert first.summary in str(app.query_one("#summary").content)
            # the rows change under it (a new QEMU): the table follows at the next refresh
            n = app.refreshes
            board.rows = [*rows, vm_row(None, pid=304, label="000-new", side="destination")]
            while app.refreshes < n + 2:
                await pilot.pause(0.05)
            assert [r[0] for r in _table_rows(app)][0] == "304"
            # the cursor stayed on the QEMU it was on, which moved down a line
            assert app.shown[app.query_one("#vms").cursor_row] == first.pid
            await pilot.press("down", "enter")
        return app.return_value

    result = asyncio.run(go())
    order = sorted([*rows, vm_row(None, pid=304, label="000-new", side="source")], key=lambda r: r.label)
    pids = [r.pid for r in order]
    assert result == ("open", pids[pids.index(order[1].pid) + 1])


def test_cursor_comes_back_to_the_qemu_left_and_q_quits(rows):
    async def go():
        app = TopApp(Board(rows), interval=0.05, selected=302)
        async with app.run_test(size=(100, 24)) as pilot:
            await pilot.pause()
            t = app.query_one("#vms")
            assert app.shown[t.cursor_row] == 302
            assert len(COLUMNS) == len(_table_rows(app)[0])
            await pilot.press("q")
        return app.return_value

    assert asyncio.run(go()) == ("quit", 0)
