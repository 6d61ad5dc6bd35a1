"""The convergence curve: pending bytes per check against the threshold, in braille dots.

One drawing for the TUI's chart (tui/widgets/chart.py: colours, the live cursor, devices)
and for `migprof report` (plain text that reads without colour: the pending line solid, the
threshold dashed). ``Canvas`` holds 2x4 dots per terminal cell; ``draw`` lays a migration's
checks on it with y labels and a time (or check-number) axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text

from profiler.model.results import Check, Migration
from profiler.views.fmt import fmt_axis_time, fmt_bytes_axis

TOTAL_STYLE = "bold bright_white"
THRESHOLD_STYLE = "bold red"
RAM_STYLE = "green"
DEVICE_STYLES = ("cyan", "yellow", "bright_blue", "bright_magenta", "bright_green", "orange1")
SWITCHOVER_STYLE = "magenta"
PARAM_STYLE = "yellow"
PASS_STYLE = "blue"
Y_LABEL_W = 10  # y labels and the axis; the TUI's timeline labels take the same width

# dot (dx, dy) inside a cell -> bit of the braille code point (U+2800 + bits)
_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


class Canvas:
    """``width`` x ``height`` cells; dot coordinates run 0..2w-1, 0..4h-1 with y down."""

    def __init__(self, width: int, height: int) -> None:
        self.width = max(width, 1)
        self.height = max(height, 1)
        self.bits = [[0] * self.width for _ in range(self.height)]
        self.color: list[list[str | None]] = [[None] * self.width for _ in range(self.height)]
        self.prio = [[-1] * self.width for _ in range(self.height)]
        self.chars: list[list[tuple[str, str] | None]] = [
            [None] * self.width for _ in range(self.height)
        ]

    @property
    def dots_x(self) -> int:
        return self.width * 2

    @property
    def dots_y(self) -> int:
        return self.height * 4

    def dot(self, x: int, y: int, color: str, prio: int = 0) -> None:
        if not (0 <= x < self.dots_x and 0 <= y < self.dots_y):
            return
        cx, cy = x >> 1, y >> 2
        self.bits[cy][cx] |= _BITS[x & 1][y & 3]
        if prio >= self.prio[cy][cx]:
            self.prio[cy][cx] = prio
            self.color[cy][cx] = color

    def line(
        self, x0: int, y0: int, x1: int, y1: int, color: str, prio: int = 0, dash: int = 0
    ) -> None:
        """Bresenham line; ``dash`` > 0 draws ``dash`` dots on, ``dash`` off."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        n = 0
        while True:
            if not dash or (n // dash) % 2 == 0:
                self.dot(x0, y0, color, prio)
            n += 1
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def polyline(
        self,
        pts: list[tuple[int, int]],
        color: str,
        prio: int = 0,
        dash: int = 0,
        step: bool = False,
    ) -> None:
        """Connect points; ``step`` holds each value until the next x (a step function)."""
        if len(pts) == 1:
            self.dot(*pts[0], color, prio)
        for (xa, ya), (xb, yb) in zip(pts, pts[1:], strict=False):
            if step:
                self.line(xa, ya, xb, ya, color, prio, dash)
                self.line(xb, ya, xb, yb, color, prio, dash)
            else:
                self.line(xa, ya, xb, yb, color, prio, dash)

    def mark_column(self, cx: int, char: str, color: str) -> None:
        """A vertical marker through empty cells of column ``cx`` (drawn under the data)."""
        if 0 <= cx < self.width:
            for cy in range(self.height):
                if self.chars[cy][cx] is None:
                    self.chars[cy][cx] = (char, color)

    def put(self, cx: int, cy: int, char: str, color: str) -> None:
        """A text character in a cell; data dots in that cell win."""
        if 0 <= cx < self.width and 0 <= cy < self.height:
            self.chars[cy][cx] = (char, color)

    def row_text(self, cy: int) -> Text:
        text = Text(no_wrap=True, overflow="crop")
        bits, colors, chars = self.bits[cy], self.color[cy], self.chars[cy]
        run_style: str | None = None
        run: list[str] = []
        for cx in range(self.width):
            if bits[cx]:
                ch, st = chr(0x2800 + bits[cx]), colors[cx] or ""
            elif chars[cx] is not None:
                ch, st = chars[cx]
            else:
                ch, st = " ", ""
            if st != run_style and run:
                text.append("".join(run), Style.parse(run_style) if run_style else None)
                run = []
            run_style = st
            run.append(ch)
        if run:
            text.append("".join(run), Style.parse(run_style) if run_style else None)
        return text


def device_style(name: str, order: list[str]) -> str:
    if name == "ram":
        return RAM_STYLE
    vfio = [n for n in order if n != "ram"]
    return DEVICE_STYLES[vfio.index(name) % len(DEVICE_STYLES)] if name in vfio else "white"


def device_names(mig: Migration | None) -> list[str]:
    """Device series in a stable order: ram first, then the others as first seen."""
    names: list[str] = []
    if mig is None:
        return names
    for c in mig.checks:
        for k in c.devices:
            if k not in names:
                names.append(k)
    names.sort(key=lambda n: (n != "ram",))
    return names


def check_x(check: Check, i: int) -> float:
    """A check's position on the time axis: its t_ms, or its index without timestamps."""
    return check.t_ms if check.t_ms is not None else float(i)


class YScale:
    """Log scale on powers of two (labels land on 1 MiB, 4 MiB, ...), or linear from zero."""

    def __init__(self, values: list[float], log_scale: bool, dots: int) -> None:
        self.log = log_scale
        self.dots = dots
        pos = [v for v in values if v > 0]
        # log scale: zero (threshold before the first bandwidth window, pending at the end)
        # gets the bottom cell row to itself instead of being clamped onto real values
        self.zero_row = log_scale and len(pos) < len(values) and dots > 8
        if log_scale:
            lo = min(pos) if pos else 1.0
            hi = max(pos) if pos else 1024.0
            self.hi = math.ceil(math.log2(max(hi, 1.0)))
            self.lo = min(math.floor(math.log2(max(lo, 1.0))), self.hi - 4)
            self.lo = max(self.lo, 0)
            if self.hi <= self.lo:
                self.hi = self.lo + 1
        else:
            hi = max(values) if values else 1.0
            self.lo, self.hi = 0.0, (hi * 1.05 if hi > 0 else 1.0)

    def frac(self, v: float) -> float:
        if self.log:
            lv = math.log2(v) if v > 0 else self.lo
            f = (lv - self.lo) / (self.hi - self.lo)
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return min(max(f, 0.0), 1.0)

    def y(self, v: float) -> int:
        if self.zero_row:
            if v <= 0:
                return self.dots - 1
            return round((1.0 - self.frac(v)) * (self.dots - 5))
        return round((1.0 - self.frac(v)) * (self.dots - 1))

    def ticks(self, rows: int) -> list[float]:
        """Label values: powers of two (log) or 1/2/5 steps (linear), about one per 3 rows."""
        want = max(rows // 3, 2)
        if self.log:
            span = self.hi - self.lo
            step = max(1, math.ceil(span / want))
            return [2.0**e for e in range(self.hi, self.lo - 1, -step)]
        raw = (self.hi - self.lo) / want
        mag = 1024 ** max(0, int(math.log(max(raw, 1), 1024)))
        unit = raw / mag
        base = 10 ** math.floor(math.log10(unit)) if unit > 0 else 1
        step = next(m * base for m in (1, 2, 5, 10) if m * base >= unit) * mag
        n = int(self.hi // step)
        return [k * step for k in range(n, -1, -1)]


@dataclass(frozen=True, slots=True)
class Curve:
    """A drawn curve: ``rows`` (y labels and dots, then the x axis) and, for each check in
    order, where its pending landed: (dot x, dot y) on the canvas right of the labels."""

    rows: tuple[Text, ...]
    points: tuple[tuple[int, int], ...]
    scale: YScale


def draw(mig: Migration, width: int, plot_h: int, *, x_max: float, log_scale: bool = True,
         devices: bool = True) -> Curve:
    """``mig``'s checks on ``plot_h`` rows of ``width`` cells (Y_LABEL_W of them labels),
    then the x axis from 0 to ``x_max`` (ms, or check index without timestamps). Markers:
    ``S`` switch-over, ``P`` a parameter change, ``╵`` a pre-copy dirty-bitmap pass.
    ``devices``: each device's pending too (told apart by colour only)."""
    checks = mig.checks
    plot_w = width - Y_LABEL_W
    xs = [check_x(c, i) for i, c in enumerate(checks)]
    timed = bool(checks) and checks[0].t_ms is not None
    x_min = 0.0
    names = device_names(mig) if devices else []
    values: list[float] = [float(c.pending_bytes) for c in checks]
    values += [float(c.threshold_bytes) for c in checks if c.threshold_bytes is not None]
    for c in checks if devices else ():
        values += [float(v) for v in c.devices.values() if v is not None]
    canvas = Canvas(plot_w, plot_h)
    ys = YScale(values, log_scale, canvas.dots_y)

    def px(x: float) -> int:
        return round((x - x_min) / (x_max - x_min) * (canvas.dots_x - 1)) if x_max > x_min else 0

    def cell(x: float | None) -> int | None:
        return None if x is None else px(x) >> 1

    # markers first, so data drawn later wins the cell
    axis_marks: dict[int, tuple[str, str]] = {}
    if timed:
        for p in mig.passes:
            cx = cell(p.t_ms)
            if cx is not None and p.phase == "precopy":
                axis_marks[cx] = ("╵", PASS_STYLE)
        for mk in mig.markers:
            cx = cell(mk.get("t_ms"))
            if cx is not None:
                canvas.mark_column(cx, "┊", PARAM_STYLE)
                axis_marks[cx] = ("P", PARAM_STYLE)
        cx = cell(mig.switchover_ms)
        if cx is not None:
            canvas.mark_column(cx, "┃", SWITCHOVER_STYLE)
            axis_marks[cx] = ("S", "bold " + SWITCHOVER_STYLE)

    for name in names:
        pts = [
            (px(x), ys.y(float(c.devices[name])))
            for x, c in zip(xs, checks, strict=False)
            if c.devices.get(name) is not None
        ]
        canvas.polyline(pts, device_style(name, names), prio=1)
    thr = [
        (px(x), ys.y(float(c.threshold_bytes)))
        for x, c in zip(xs, checks, strict=False)
        if c.threshold_bytes is not None
    ]
    canvas.polyline(thr, THRESHOLD_STYLE, prio=3, dash=2, step=True)
    tot = [(px(x), ys.y(float(c.pending_bytes))) for x, c in zip(xs, checks, strict=False)]
    canvas.polyline(tot, TOTAL_STYLE, prio=2)

    # y labels on the rows their tick values fall in
    labels: dict[int, str] = {plot_h - 1: "0 B"} if ys.zero_row else {}
    for v in ys.ticks(plot_h - (1 if ys.zero_row else 0)):
        cy = ys.y(v) >> 2
        if cy not in labels and not any(abs(cy - o) < 2 for o in labels):
            labels[cy] = fmt_bytes_axis(v)
    rows: list[Text] = []
    for cy in range(plot_h):
        lab = labels.get(cy, "")
        row = Text(
            f"{lab:>{Y_LABEL_W - 1}}┤" if lab else " " * (Y_LABEL_W - 1) + "│",
            "dim",
            no_wrap=True,
            overflow="crop",
        )
        row.append_text(canvas.row_text(cy))
        rows.append(row)
    rows.append(x_axis(plot_w, x_min, x_max, timed, axis_marks))
    return Curve(tuple(rows), tuple(tot), ys)


def x_axis(
    plot_w: int, x_min: float, x_max: float, timed: bool, marks: dict[int, tuple[str, str]]
) -> Text:
    cells: list[tuple[str, str]] = [("─", "dim")] * plot_w
    for cx, m in marks.items():
        if 0 <= cx < plot_w:
            cells[cx] = m
    # tick labels at 0, 1/4.. of the range, skipping ones that would overlap marks
    for k in range(5):
        f = k / 4
        x = x_min + f * (x_max - x_min)
        lab = fmt_axis_time(x) if timed else f"#{x + 1:.0f}"  # check numbers count from 1
        cx = round(f * (plot_w - 1))
        start = min(max(cx - len(lab) // 2, 0), plot_w - len(lab))
        if all(cells[i][1] == "dim" for i in range(start, start + len(lab))):
            for i, ch in enumerate(lab):
                cells[start + i] = (ch, "dim")
    t = Text(" " * (Y_LABEL_W - 1) + "└", "dim", no_wrap=True, overflow="crop")
    for ch, st in cells:
        t.append(ch, st)
    return t


def x_range(mig: Migration) -> float:
    """The x axis end of a whole migration: its total time (else the last check's), or the
    last check's index without timestamps."""
    checks = mig.checks
    if not checks or checks[0].t_ms is None:
        return float(max(len(checks) - 1, 1))
    x_max = max(check_x(checks[-1], len(checks) - 1), 1.0)
    return max(x_max, mig.total_ms) if mig.total_ms is not None else x_max
