"""The convergence chart: pending bytes per check against the threshold, per device."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from profiler.model.results import Migration
from profiler.views.curve import (  # Y_LABEL_W: the timeline aligns on the chart's labels
    THRESHOLD_STYLE,
    TOTAL_STYLE,
    Y_LABEL_W,
    check_x,
    device_names,
    device_style,
    draw,
)
from profiler.views.fmt import fmt_bytes, short_name
from tui.view import TERMINAL_OUTCOMES, cursor_ms, last_check
from tui.widgets.base import Panel, Shown


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
    lines += draw(mig, width, plot_h, x_max=x_max, log_scale=shown.log_scale).rows
    return Group(*lines)


class ConvergenceChart(Panel):
    """Pending bytes per check (total and per device) against the threshold line."""

    DEFAULT_CSS = """
    ConvergenceChart { height: 1fr; min-height: 6; }
    """

    def render(self) -> RenderableType:
        if self.shown is None:
            return Text("loading…", "dim")
        return render_chart(self.shown, self.size.width, self.size.height)
