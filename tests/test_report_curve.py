"""`report` draws the convergence curve above the checks table, on real runs.

Each check's pending is a dot of the drawn text, at the height the printed y labels give
its value and in check order along the x axis; the threshold, when the model has one, is
another series; the curve is as wide as the terminal, or 100 columns on a pipe. The curve
sections are kept as text snapshots in tests/data/report_curve/ (rewrite them with
MIGPROF_UPDATE_SNAPSHOTS=1 after a deliberate change, and read the diff).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from conftest import REAL, REAL_RUNS, REAL_VFIO, ROOT, TESTS

from profiler import pipeline
from profiler.model.build import build_report
from profiler.views.curve import _BITS, Y_LABEL_W, draw, x_range
from profiler.views.report import CURVE_ROWS

MIGPROF = [sys.executable, "-m", "profiler.cli"]
SNAPSHOTS = TESTS / "data" / "report_curve"  # plain text, not syrupy's (it would call them unused)
RUNS = [*REAL_RUNS, *sorted(p for p in REAL_VFIO.iterdir() if (p / "run.json").exists())]
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def _report(run: Path):
    loaded = pipeline.load([str(run)])
    return build_report(loaded.events, inputs=(str(run),), meta=loaded.meta)


def _curves(text: str) -> list[list[str]]:
    """Each curve section of a report: its title, the plot rows and the x axis."""
    lines = text.splitlines()
    out = []
    for i, ln in enumerate(lines):
        if ln.startswith("Convergence, log scale: "):
            end = next(j for j in range(i, len(lines)) if lines[j].startswith(" " * 9 + "└"))
            out.append([ln, *lines[end - CURVE_ROWS:end + 1]])
    return out


def _labels(rows: list[str]) -> dict[int, float]:
    """The y labels printed left of the plot: row -> bytes."""
    got = {}
    for r, row in enumerate(rows):
        m = re.fullmatch(r"\s*([\d.]+) (B|KiB|MiB|GiB|TiB)", row[:Y_LABEL_W - 1])
        if m:
            got[r] = float(m[1]) * UNITS[m[2]]
    return got


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_every_check_is_a_dot_at_its_value(run: Path) -> None:
    rep = _report(run)
    for m in rep.migrations:
        if len(m.checks) < 2:
            continue
        c = draw(m, 100, CURVE_ROWS, x_max=x_range(m), devices=False)
        rows = [t.plain for t in c.rows[:-1]]
        assert len(c.points) == len(m.checks)
        for (x, y), chk in zip(c.points, m.checks, strict=True):
            ch = rows[y >> 2][Y_LABEL_W + (x >> 1)]
            assert 0x2800 <= ord(ch) <= 0x28FF and (ord(ch) - 0x2800) & _BITS[x & 1][y & 3], \
                (run.name, chk, ch)
        xs = [x for x, _ in c.points]
        assert xs == sorted(xs) and xs[-1] > xs[0]  # in check order along the axis
        # the height agrees with the printed labels: between the labels around the value
        labels = _labels(rows)
        assert len(labels) >= 2
        for (_, y), chk in zip(c.points, m.checks, strict=True):
            v = chk.pending_bytes
            above = [r for r, lv in labels.items() if lv >= v]  # rows of labels >= v
            below = [r for r, lv in labels.items() if lv <= v]
            if above:
                assert (y >> 2) >= max(above) - 1, (run.name, v, labels, y)
            if below:
                assert (y >> 2) <= min(below) + 1, (run.name, v, labels, y)
        # larger pending never lower on the screen
        for (_, ya), a in zip(c.points, m.checks, strict=True):
            for (_, yb), b in zip(c.points, m.checks, strict=True):
                if a.pending_bytes > b.pending_bytes:
                    assert ya <= yb


def _snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("MIGPROF_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no snapshot {path}: run with MIGPROF_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text()


@pytest.mark.parametrize("run", [REAL / "7.2-downtime-raise", REAL / "10.0-cancel-retry",
                                 REAL / "7.2-no-timestamps", REAL_VFIO / "converges"],
                         ids=lambda p: p.name)
def test_report_shows_the_curve_above_the_checks(run: Path) -> None:
    """As a user pipes it: one curve per migration with checks, 100 columns, right above
    its checks table, the same text as the snapshot."""
    r = subprocess.run([*MIGPROF, "report", str(run)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert "\x1b" not in r.stdout  # plain text: reads pasted anywhere
    curves = _curves(r.stdout)
    rep = _report(run)
    assert len(curves) == sum(1 for m in rep.migrations if len(m.checks) >= 2) >= 1
    lines = r.stdout.splitlines()
    for cv in curves:
        assert all(len(row) == 100 for row in cv[1:]), [len(row) for row in cv]
        end = lines.index(cv[-1]) if cv[-1] in lines else -1
        assert lines[end + 1].startswith(("Pre-copy checks", "Pending per VFIO device"))
    _snapshot(run.name, "\n".join("\n".join(cv) for cv in curves) + "\n")


def test_curve_follows_the_terminal_width() -> None:
    """On a real terminal (a pty 132 columns wide) the curve spans the terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    p = subprocess.Popen([*MIGPROF, "report", str(REAL / "7.2-converges")], cwd=ROOT,
                         stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not b:
            break
        chunks.append(b)
    os.close(master)
    assert p.wait(timeout=120) == 0
    text = re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode())
    cv = _curves(text.replace("\r\n", "\n"))
    assert len(cv) == 1
    assert {len(row) for row in cv[0][1:]} == {132}
