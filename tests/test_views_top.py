"""`migprof top --no-tui` and `--json`: the bcc-style table and the JSON lines of real rows."""

from __future__ import annotations

import io
import json

import pytest
from test_per_vm import side_events

from profiler.model.build import build_report
from profiler.model.vm_row import vm_row
from profiler.views.top import HEADER, TopPrinter, line, table


@pytest.fixture(scope="module")
def done():
    rep = build_report(side_events("10.0-downtime-raise", 41), inputs=["live"])
    return rep.migrations[-1], vm_row(rep, pid=41, label="vm-downtime", side="source")


def test_table_line_holds_the_row(done):
    mig, row = done
    text = line(row).split()
    assert text[:6] == ["41", "vm-downtime", "src", "completed", "completed", str(mig.dirty_syncs)]
    last = mig.checks[-1]
    assert float(text[6]) == pytest.approx(last.pending_bytes / 2**20, abs=0.05)
    assert float(text[7]) == pytest.approx(last.threshold_bytes / 2**20, abs=0.05)
    assert float(text[8]) == pytest.approx(last.bandwidth_bytes_per_ms * 1000 / 2**20, abs=0.05)
    assert float(text[9]) == pytest.approx(last.pending_bytes / last.bandwidth_bytes_per_ms, abs=0.5)
    assert text[10] == "ok"
    # columns line up under the header: upper case, units in the names
    assert len(line(row)) <= len(HEADER) + len("converging") - len("VERDICT")
    assert "PEND(MiB)" in HEADER and "EXPDT(ms)" in HEADER


def test_blocks_and_json(done):
    _, row = done
    idle = vm_row(None, pid=7, label="pid 7", side="source")
    out = io.StringIO()
    p = TopPrinter(out)
    p.show([idle, row], now_s=0.0)
    p.show([row], now_s=1.0, final=True)
    lines = out.getvalue().splitlines()
    assert lines[1] == HEADER and "2 QEMUs, 0 migrating" in lines[0]
    assert lines[2].split()[0] == "7" and lines[3].split()[0] == "41"
    assert lines[4] == "" and "final: 1 QEMU," in lines[5]
    assert table([], 0.0)[0].endswith("0 QEMUs, 0 migrating")
    out = io.StringIO()
    TopPrinter(out, as_json=True).show([row], now_s=2.0, final=True)
    d = json.loads(out.getvalue())
    assert d["schema"] == "migprof.top/1" and d["final"] is True and d["time_ns"] == 2 * 10**9
    (vm,) = d["vms"]
    assert vm["pid"] == 41 and vm["pass_no"] == row.pass_no and vm["verdict"] == "ok"
    assert vm["pending_bytes"] == row.pending_bytes and vm["sources"] == []


def test_board_rows_and_one_qemus_stream():
    """The board keeps each QEMU's events apart; a VmStream (the full TUI of one QEMU) gets
    that QEMU's events so far, then its new ones, and never another's."""
    import threading

    from profiler import events as ev
    from profiler.views.top import Follows, TopBoard, VmStream

    a = side_events("7.2-converges", 11)
    b = side_events("10.0-converges", 22)
    follows = [Follows(11, "a", "source"), Follows(22, "b", "source", alive=False)]
    board = TopBoard(lambda: follows, interval=1.0, count=2)
    board.start({})
    board.feed(ev.concat([a.iloc[:40], b.iloc[:40]]))
    stream = VmStream(board, 11)
    stream.__enter__()
    board.feed(ev.concat([a.iloc[40:], b.iloc[40:]]))  # hands the backlog over, then this
    stop = threading.Event()
    got = []
    for batch in stream.batches(stop):
        if len(batch):
            got.append(batch)
        if sum(len(g) for g in got) >= len(a):
            stop.set()
    stream.close()
    mine = ev.concat(got)
    assert len(mine) == len(a) and set(mine["pid"]) == {11}
    board.tick(0.0)
    board.tick(1.0)
    assert not board.done()
    board.tick(2.0)
    assert board.done() and board.shown == 2
    board.close({})
    rows, _ = board.rows()
    by = {r.pid: r for r in rows}
    assert by[11].status == "completed" and by[11].events == len(a)
    assert by[22].status == "completed" and by[22].pass_no is not None  # gone, but it had ended
