"""TUI building blocks without a terminal: formatting, the braille canvas, the feed's index."""

from __future__ import annotations

import pandas as pd
import pytest

from profiler import events as ev
from profiler.replay import next_speed
from tui.event_index import EventIndex
from tui.fmt import fmt_bytes, fmt_bytes_axis, fmt_ms, parse_time
from tui.health import health_items
from tui.widgets.braille import Canvas


@pytest.mark.parametrize(
    "n,text",
    [
        (None, "-"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (12_345_678, "11.8 MiB"),
        (3 << 30, "3.00 GiB"),
        (150 << 20, "150 MiB"),
        (-(2 << 20), "-2.00 MiB"),
    ],
)
def test_fmt_bytes(n, text):
    assert fmt_bytes(n) == text


def test_fmt_bytes_axis_drops_trailing_zeros():
    assert fmt_bytes_axis(4 << 20) == "4 MiB"
    assert fmt_bytes_axis(1.5 * (1 << 30)) == "1.5 GiB"


@pytest.mark.parametrize(
    "ms,text",
    [
        (None, "-"),
        (0.25, "250 µs"),
        (42.04, "42.0 ms"),
        (320, "320 ms"),
        (3210, "3.21 s"),
        (125_000, "2m05s"),
    ],
)
def test_fmt_ms(ms, text):
    assert fmt_ms(ms) == text


@pytest.mark.parametrize(
    "text,ms", [("1.5", 1500), ("1.5s", 1500), ("250ms", 250), ("1m30s", 90_000), (" 2 ", 2000)]
)
def test_parse_time(text, ms):
    assert parse_time(text) == pytest.approx(ms)


@pytest.mark.parametrize("bad", ["", "abc", "1.2.3s"])
def test_parse_time_rejects_with_a_readable_message(bad):
    with pytest.raises(ValueError, match="time"):
        parse_time(bad)


def test_speed_steps_are_clamped():
    assert next_speed(1.0, +1) == 2.0
    assert next_speed(1.0, -1) == 0.5
    assert next_speed(1000.0, +1) == 1000.0
    assert next_speed(0.1, -1) == 0.1
    assert next_speed(3.0, +1) == 5.0  # from between two steps, the nearest then one up


def test_canvas_line_sets_braille_dots_and_colour():
    c = Canvas(4, 2)
    c.line(0, 0, 7, 7, "red")
    row0 = c.row_text(0)
    # dots y 0..3 are x 0..3: the first two cells of the top row, the rest blank
    assert all(0x2800 < ord(ch) <= 0x28FF for ch in row0.plain[:2]) and row0.plain[2:] == "  "
    assert any(span.style and "red" in str(span.style) for span in row0.spans)
    # a diagonal across 4x2 cells touches the top-left and bottom-right cells only at the ends
    assert c.bits[0][0] and c.bits[1][3]


def test_canvas_marker_yields_to_data():
    c = Canvas(3, 1)
    c.mark_column(1, "┃", "magenta")
    c.dot(2, 0, "white")  # cell 1, top-left dot
    assert c.row_text(0).plain[1] == chr(0x2800 + 0x01)
    c2 = Canvas(3, 1)
    c2.mark_column(1, "┃", "magenta")
    assert c2.row_text(0).plain == " ┃ "


def _frame(rows: list[dict]) -> pd.DataFrame:
    return ev.conform(pd.DataFrame(rows))


def test_event_index_filters_with_and_and_exclusion():
    idx = EventIndex()
    idx.append(
        _frame(
            [
                {
                    "t_ns": 1_000_000_000,
                    "event": "migrate_pending_estimate",
                    "side": "source",
                    "raw": "a",
                },
                {
                    "t_ns": 1_100_000_000,
                    "event": "vfio_state_pending_exact",
                    "device": "0000:00:03.0",
                    "side": "source",
                },
                {
                    "t_ns": 1_200_000_000,
                    "event": "migrate_set_state",
                    "state": "active",
                    "side": "destination",
                },
            ]
        )
    )
    rows, n = idx.rows(3)
    assert n == 3 and [r.event for r in rows][-1] == "migrate_set_state"
    assert rows[0].t.strip() == "0.000" and rows[1].t.strip() == "0.100"
    idx.set_filter("pending -vfio")
    rows, n = idx.rows(3)
    assert n == 1 and rows[0].event == "migrate_pending_estimate"
    # the filter keeps applying to events that arrive later
    idx.append(
        _frame([{"t_ns": 1_300_000_000, "event": "migrate_pending_exact", "side": "source"}])
    )
    rows, n = idx.rows(4)
    assert n == 2 and rows[-1].event == "migrate_pending_exact"
    # a prefix (the replay cursor) only sees what came before it
    assert idx.rows(1)[1] == 1
    # values stand in for raw text when a source has none
    idx.set_filter("")
    assert "state=active" in idx.rows(3)[0][-1].text


def test_health_items_flag_failures_and_lost_events():
    items = health_items(
        {
            "source": "merged",
            "failed": {"bpf": "ring buffer gone"},
            "bpf": {"source": "bpf", "lost": 7, "events": 100},
            "qmp": {"source": "qmp", "polls": 12},
        }
    )
    by = {i.label: i for i in items}
    assert by["sources active"].value.startswith("1/2")
    assert by["bpf failed"].level == "error"
    assert by["lost events"].value == "7" and by["lost events"].level == "error"
    assert "polls=12" in by["qmp"].value


def test_an_internal_error_is_one_line_after_the_terminal_is_restored(capsys):
    from tui.app import MigprofApp
    from tui.feed import ReplayFeed

    app = MigprofApp(ReplayFeed(ev.empty_frame()))
    app._last_error = KeyError("chart")
    app._exit_renderables.append("a rich traceback would be here")
    app._print_error_renderables()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KeyError" in err and "--debug" in err
    assert not app._exit_renderables
