"""The file follower and the QEMU log tail on real files: whole lines, true line numbers,
rotation, truncation, from the start or the end, the half line at the end, untimed lines
stamped on arrival."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from profiler import events
from profiler.sources.follow import FileFollower
from profiler.sources.qemu_tail import QemuLogSource

SET = "1@1700000000.{:06d}:migrate_set_state new state {}\n"


def _text(got) -> list[str]:
    return got.data.decode().splitlines() if got is not None else []


def test_whole_lines_only_and_line_numbers(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("one\ntwo\nthr")
    f = FileFollower(p)
    got = f.read()
    assert (_text(got), got.first_line, got.count) == (["one", "two"], 1, 2)
    assert f.read() is None  # the half line waits for its end
    with p.open("a") as w:
        w.write("ee\nfour\n")
    got = f.read()
    assert (_text(got), got.first_line, got.count) == (["three", "four"], 3, 2)
    assert f.read() is None


def test_from_end_skips_what_is_there_and_counts_it(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("old 1\nold 2\nhalf of old 3")
    f = FileFollower(p, from_start=False)
    assert f.open()
    assert f.read() is None  # nothing new: what was there is never handed out
    with p.open("a") as w:
        w.write(" ends now\nnew 4\n")
    got = f.read()
    # the line being written when following started is read whole, with its true number
    assert (_text(got), got.first_line) == (["half of old 3 ends now", "new 4"], 3)


def test_rotation_reads_the_old_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("1\n2\n")
    f = FileFollower(p)
    assert _text(f.read()) == ["1", "2"]
    with p.open("a") as old:
        os.rename(p, tmp_path / "a.log.1")
        p.write_text("new 1\nnew 2\n")
        old.write("3\nlast of the old file, no newline")  # the writer still had it open
    lines = []
    while (got := f.read()) is not None:
        lines += [(t, got.first_line + i, got.generation) for i, t in enumerate(_text(got))]
    assert lines == [("3", 3, 0), ("last of the old file, no newline", 4, 0),
                     ("new 1", 1, 1), ("new 2", 2, 1)]
    assert (f.rotations, f.truncations) == (1, 0)


def test_truncation_starts_again_at_the_first_line(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("1\n2\n3\nhalf")
    f = FileFollower(p)
    assert _text(f.read()) == ["1", "2", "3"]
    p.write_text("A\n")  # copytruncate: same inode, shorter than what was read
    got = f.read()
    assert (_text(got), got.first_line, got.generation) == (["A"], 1, 1)
    assert (f.rotations, f.truncations) == (0, 1)


def test_a_file_that_appears_later_is_read_from_its_start(tmp_path: Path) -> None:
    p = tmp_path / "later.log"
    f = FileFollower(p, from_start=False)
    assert not f.open() and f.read() is None
    p.write_text("first\n")
    assert _text(f.read()) == ["first"]


def test_flush_hands_out_the_half_line(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("1\n2")
    f = FileFollower(p)
    assert _text(f.read()) == ["1"]
    got = f.flush()
    assert (_text(got), got.first_line) == (["2"], 2)
    assert f.flush() is None


# ---------------------------------------------------------------- the QEMU log tail


def _follow(src: QemuLogSource, stop: threading.Event, out: list) -> None:
    with src:
        for b in src.batches(stop):
            if len(b):
                out.append(b)


def _wait(pred, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "state not reached"
        time.sleep(0.02)


def test_tail_through_truncation_and_rotation(tmp_path: Path) -> None:
    p = tmp_path / "src.log"
    p.write_text(SET.format(0, "none"))  # there before following starts: never yielded
    src = QemuLogSource(p, follow=True, poll_s=0.02, from_start=False)
    stop = threading.Event()
    out: list = []
    th = threading.Thread(target=_follow, args=(src, stop, out), daemon=True)
    th.start()
    n = lambda: sum(len(b) for b in out)  # noqa: E731
    try:
        _wait(lambda: src.tail._f is not None)
        with open(p, "a") as f:
            f.write(SET.format(1, "setup") + SET.format(2, "active")[:20])
            f.flush()
            _wait(lambda: n() == 1)
            f.write(SET.format(2, "active")[20:])
            f.flush()
            _wait(lambda: n() == 2)
        p.write_text(SET.format(3, "completed"))  # truncated in place (copytruncate)
        _wait(lambda: n() == 3)
        os.rename(p, tmp_path / "src.log.1")  # rotated: a new file under the same name
        p.write_text(SET.format(4, "failed"))
        _wait(lambda: n() == 4)
    finally:
        stop.set()
        th.join(5)
    df = events.concat(out)
    assert list(df["state"]) == ["setup", "active", "completed", "failed"]
    assert list(df["line"]) == [2, 3, 1, 1]  # true line numbers in the file each came from
    assert set(df["side"]) == {"source"}
    h = src.health()
    assert h["events"] == 4 and h["rotations"] == 2 and h["malformed"] == 0


def test_tail_without_follow_reads_to_the_end(tmp_path: Path) -> None:
    p = tmp_path / "dst.log"
    p.write_text("loadvm_state_setup \nmigrate_set_state new state active")
    out: list = []
    _follow(QemuLogSource(p, follow=False), threading.Event(), out)
    df = events.concat(out)
    assert list(df["event"]) == ["loadvm_state_setup", "migrate_set_state"]
    assert set(df["side"]) == {"destination"}


@pytest.mark.parametrize("drain", [False, True])
def test_stop_reads_what_is_there(tmp_path: Path, drain: bool) -> None:
    """Stopped, the tail reads the whole lines written meanwhile; with ``drain`` (the
    writer has exited) the half line at the end too."""
    p = tmp_path / "src.log"
    p.write_text("")
    src = QemuLogSource(p, "source", poll_s=60, drain=drain)  # no poll before the stop
    stop = threading.Event()
    with src:
        it = src.batches(stop)
        assert not len(next(it))
        p.write_text(SET.format(1, "setup") + SET.format(2, "active").rstrip("\n"))
        stop.set()
        df = events.concat([b for b in it if len(b)])
    assert list(df["state"]) == (["setup", "active"] if drain else ["setup"])


def test_untimed_lines_stamped_on_arrival(tmp_path: Path) -> None:
    """QEMU without -msg timestamp=on prints no time: such a line gets the time it was
    read (t_ns), its own clock stays unknown (clock_ns NA, clock "none"); timed lines keep
    their own time."""
    p = tmp_path / "src.log"
    p.write_text("")
    src = QemuLogSource(p, "source", pid=4242, stamp_untimed=True)
    with src:
        it = src.batches(threading.Event())
        next(it)
        before = time.time_ns()
        p.write_text("migrate_set_state new state setup\n" + SET.format(7, "active"))
        df = next(b for b in it if len(b))
        after = time.time_ns()
    untimed, timed = df.iloc[0], df.iloc[1]
    assert before <= untimed["t_ns"] <= after
    assert pd.isna(untimed["clock_ns"]) and untimed["clock"] == "none"
    assert timed["t_ns"] == 1700000000_000007_000 == timed["clock_ns"]
    assert list(df["pid"]) == [4242, 4242]
    assert src.health()["stamped_on_arrival"] == 1
    # without stamping the untimed line keeps no time at all
    q = tmp_path / "q.log"
    q.write_text("migrate_set_state new state setup\n")
    out: list = []
    _follow(QemuLogSource(q, "source", follow=False), threading.Event(), out)
    assert pd.isna(events.concat(out)["t_ns"].iloc[0])
