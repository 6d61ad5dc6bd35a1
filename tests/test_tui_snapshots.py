"""SVG snapshots of the TUI on a fixed real lab run (pytest-textual-snapshot).

Update after checking the report: ``.venv/bin/pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import pytest
from test_tui import make_replay, real_run, until
from textual.widgets import Input

from profiler import pipeline


@pytest.fixture(scope="module")
def loaded() -> pipeline.Loaded:
    # a run with a parameter change and 29 checks: every mark of the chart shows
    return pipeline.load([str(real_run("downtime-raise", "converges"))])


def _settle(app, cond, press: tuple[str, ...] = ()):
    async def run_before(pilot) -> None:
        for inp in app.screen.query(Input):
            inp.cursor_blink = False
        await until(pilot, lambda: app.view is not None, what="the first view")
        for key in press:
            await pilot.press(key)
            await pilot.pause(0.15)
        await until(pilot, lambda: cond(app), what="the replay to settle")
        # then until the screen stops changing: DataTable sizes its columns when the app is
        # idle, which the feed worker's model rebuild can delay on a busy host
        last = None
        for _ in range(50):
            await pilot.pause(0.2)
            shot = app.export_screenshot()
            if shot == last:
                break
            last = shot
        else:
            raise AssertionError("the screen did not settle within 10 s")

    return run_before


def _at_end(app) -> bool:
    return app.view.applied == app.view.total


def test_snapshot_end_80x24(snap_compare, loaded):
    app = make_replay(loaded, at="end")
    assert snap_compare(app, terminal_size=(80, 24), run_before=_settle(app, _at_end))


def test_snapshot_end_160x48(snap_compare, loaded):
    app = make_replay(loaded, at="end")
    assert snap_compare(app, terminal_size=(160, 48), run_before=_settle(app, _at_end))


def test_snapshot_third_check_events_tab(snap_compare, loaded):
    app = make_replay(loaded)

    def at_third(a) -> bool:
        m = a.view.migration(None)
        return m is not None and len(m.checks) == 3

    press = ("full_stop",) * 3 + ("e",)
    assert snap_compare(app, terminal_size=(100, 30), run_before=_settle(app, at_third, press))


def test_snapshot_vfio_end_120x34(snap_compare):
    """Also the README screenshot (docs/tui.svg) of a real mtty VFIO migration."""
    from test_tui import REAL_VFIO

    app = make_replay(pipeline.load([str(REAL_VFIO / "converges")]), at="end")
    assert snap_compare(app, terminal_size=(120, 34), run_before=_settle(app, _at_end))
