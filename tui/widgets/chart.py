"""The convergence chart: pending bytes per check against the threshold, per device."""

from __future__ import annotations

import math

from rich.console import Group, RenderableType
from rich.text import Text

from profiler.model.results import Migration
from tui.fmt import fmt_axis_time, fmt_bytes, fmt_bytes_axis, short_name
from tui.view import TERMINAL_OUTCOMES, check_x, cursor_ms, last_check
from tui.widgets.base import Panel, Shown
from tui.widgets.braille import Canvas

TOTAL_STYLE = "bold bright_white"
THRESHOLD_STYLE = "bold red"
RAM_STYLE = "green"
DEVICE_STYLES = ("cyan", "yellow", "bright_blue", "bright_magenta", "bright_green", "orange1")
SWITCHOVER_STYLE = "magenta"
PARAM_STYLE = "yellow"
PASS_STYLE = "blue"
Y_LABEL_W = 10  # y labels and the axis; the timeline's labels take the same width


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


def legend(mig: Migration | None, log_scale: bool) -> Text:
    """One line: pending and threshold at the latest check, then each device's pending."""
    t = Text(no_wrap=True, overflow="ellipsis")
    c = last_check(mig)
    if c is None:
        t.append("no convergence check yet", "dim")
        return t
    t.append("━ pending ", TOTAL_STYLE)
    t.append(fmt_bytes(c.pending_bytes), TOTAL_STYLE)
    t.append("  ┄ threshold ", THRESHOLD_STYLE)
    t.append(fmt_bytes(c.threshold_bytes), THRESHOLD_STYLE)
    order = device_names(mig)
    for name in order:
        if name in c.devices:
            t.append(f"  ━ {short_name(name)} ", device_style(name, order))
            t.append(fmt_bytes(c.devices[name]), device_style(name, order))
    t.append("   [log]" if log_scale else "   [lin]", "dim")
    return t


class _YScale:
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


def render_chart(shown: Shown, width: int, height: int) -> RenderableType:
    """The chart as Rich lines for a ``width`` x ``height`` cell area (legend and axis included)."""
    mig, full = shown.mig, shown.full_mig or shown.mig
    lines: list[Text] = [legend(mig, shown.log_scale)]
    plot_w, plot_h = width - Y_LABEL_W, height - 2
    if mig is None or not mig.checks or plot_w < 10 or plot_h < 2:
        msg = (
            "no migration in the input yet"
            if mig is None
            else "waiting for the first convergence check"
        )
        if mig is not None and mig.checks:
            msg = "chart needs more room"
        for i in range(max(height - 1, 0)):
            lines.append(Text(msg.center(width) if i == (height - 1) // 2 else "", "dim"))
        return Group(*lines)

    checks = mig.checks
    xs = [check_x(c, i) for i, c in enumerate(checks)]
    timed = checks[0].t_ms is not None
    full_checks = full.checks if full is not None else checks
    x_max = max(xs[-1], 1.0)
    if timed:
        cur = cursor_ms(shown.view, mig)
        if full is not None and full.total_ms is not None:
            x_max = max(x_max, full.total_ms)
        elif full_checks and full_checks[-1].t_ms is not None:
            x_max = max(x_max, full_checks[-1].t_ms)
        # live: the axis grows with the clock while the migration runs, and stops at its end
        if cur is not None and shown.view.mode == "live" and mig.outcome not in TERMINAL_OUTCOMES:
            x_max = max(x_max, cur)
    else:
        x_max = max(len(full_checks) - 1, 1)
    x_min = 0.0

    names = device_names(mig)
    values: list[float] = [float(c.pending_bytes) for c in checks]
    values += [float(c.threshold_bytes) for c in checks if c.threshold_bytes is not None]
    for c in checks:
        values += [float(v) for v in c.devices.values() if v is not None]
    canvas = Canvas(plot_w, plot_h)
    ys = _YScale(values, shown.log_scale, canvas.dots_y)

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
    for cy in range(plot_h):
        lab = labels.get(cy, "")
        row = Text(
            f"{lab:>{Y_LABEL_W - 1}}┤" if lab else " " * (Y_LABEL_W - 1) + "│",
            "dim",
            no_wrap=True,
            overflow="crop",
        )
        row.append_text(canvas.row_text(cy))
        lines.append(row)
    lines.append(_x_axis(plot_w, x_min, x_max, timed, axis_marks))
    return Group(*lines)


def _x_axis(
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


class ConvergenceChart(Panel):
    """Pending bytes per check (total and per device) against the threshold line."""

    DEFAULT_CSS = """
    ConvergenceChart { height: 1fr; min-height: 6; }
    """

    def render(self) -> RenderableType:
        if self.shown is None:
            return Text("loading…", "dim")
        return render_chart(self.shown, self.size.width, self.size.height)
