"""The status header: mode, outcome, phase, elapsed, downtime so far; and the verdict line."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from profiler.model.results import Migration
from tui.fmt import fmt_bytes, fmt_ms, fmt_rate
from tui.view import View, downtime_so_far_ms, elapsed_ms, phase
from tui.widgets.base import Panel

OUTCOME_STYLE = {
    "completed": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
    "incomplete": "bold cyan",
}


def mode_text(view: View) -> Text:
    t = Text()
    if view.mode == "live":
        if view.status == "failed":
            t.append(" LIVE: SOURCE FAILED ", "bold white on red")
        elif view.status == "ended":
            t.append(" LIVE: ENDED ", "bold black on yellow")
        else:
            t.append(" LIVE ", "bold white on dark_green")
            if not view.playing:
                t.append(" frozen", "bold yellow")
    else:
        t.append(" REPLAY ", "bold white on blue")
        t.append(" ▶ " if view.playing else " ‖ ", "bold")
        t.append(f"{view.speed:g}x", "bold")
        if not view.playing:
            t.append(" paused", "dim")
    return t


def verdict_line(mig: Migration | None, in_flight: bool = False) -> Text:
    """``✔ converged …`` / ``✘ not converging: gap …, would close with …`` in one line.

    ``in_flight``: the migration is still running at the cursor, so a negative verdict
    is only "so far".
    """
    t = Text(no_wrap=True, overflow="ellipsis")
    if mig is None:
        t.append("waiting for a migration…", "dim")
        return t
    v = mig.verdict
    if in_flight and v.converged is not True and v.post_sync_pending_bytes is None and mig.checks:
        # still in the bulk pass: no dirty sync yet, so nothing says whether it will converge
        c = mig.checks[-1]
        t.append("… bulk pass: ", "bold cyan")
        thr = "-" if c.threshold_bytes is None else fmt_bytes(c.threshold_bytes)
        t.append(f"pending {fmt_bytes(c.pending_bytes)} vs threshold {thr}; "
                 "no dirty sync yet, too early to judge", "cyan")
        return t
    if in_flight and v.converged is not True:
        t.append("so far: ", "bold")
    if v.converged is True:
        t.append("✔ ", "bold green")
        t.append(v.summary or "converged", "green")
    elif v.converged is False:
        # the full sentence is long (Verdict tab); on one line lead with what would fix it
        t.append("✘ ", "bold red")
        fixes = []
        dl = v.suggested_downtime_limit_ms or v.needed_downtime_limit_ms
        bw = v.suggested_bandwidth_bytes_per_s or v.needed_bandwidth_bytes_per_s
        if dl is not None:
            fixes.append(f"downtime-limit ≥ {fmt_ms(dl)}")
        if bw is not None:
            fixes.append(f"bandwidth ≥ {fmt_rate(bw)}")
        if fixes:
            t.append("not converging — needs " + " or ".join(fixes), "bold yellow")
            if v.post_sync_pending_bytes is not None:
                t.append(f"; {fmt_bytes(v.post_sync_pending_bytes)} pending after each sync", "red")
            elif v.min_gap_bytes is not None:
                t.append(f"; closest gap {fmt_bytes(v.min_gap_bytes)}", "red")
            t.append(" (Verdict tab)", "dim")
        else:
            t.append(v.summary or "not converging", "red")
    else:
        t.append("… ", "bold cyan")
        t.append(v.summary or "undecided", "cyan")
    return t


class StatusHeader(Panel):
    """Two lines at the top of the screen."""

    DEFAULT_CSS = """
    StatusHeader { height: 2; background: $panel; }
    """

    def render(self) -> RenderableType:
        s = self.shown
        if s is None:
            return Text(" migprof  loading…", "bold")
        view, mig = s.view, s.mig
        t = mode_text(view)
        t.append("  ")
        if mig is None:
            t.append("no migration yet", "dim")
        else:
            if mig.outcome == "incomplete":
                ended = view.status != "running"
                t.append("INCOMPLETE" if ended else "MIGRATING", OUTCOME_STYLE["incomplete"])
                t.append(" │ ", "dim")
                t.append(phase(mig), "bold")
            else:
                t.append(mig.outcome.upper(), OUTCOME_STYLE.get(mig.outcome, "bold"))
            t.append(" │ elapsed ", "dim")
            t.append(fmt_ms(elapsed_ms(view, mig)))
            t.append(" │ downtime ", "dim")
            t.append(fmt_ms(downtime_so_far_ms(view, mig)))
            if mig.view == "kernel":
                t.append(" │ ", "dim")
                t.append("KERNEL VIEW ONLY", "bold black on yellow")  # BPF alone: no RAM, no threshold
            n = len(view.report.migrations) if view.report else 0
            if n > 1:
                t.append(
                    f" │ mig {mig.index + 1}/{n}" + ("" if s.selected is not None else " (latest)"),
                    "dim",
                )
        if not view.timed and view.total:
            t.append(" │ no timestamps", "bold yellow")
        if view.error:
            t.append(f" │ {view.error}", "bold red")
        t.no_wrap = True
        t.overflow = "ellipsis"
        in_flight = mig is not None and mig.outcome == "incomplete" and view.status == "running"
        return Group(t, verdict_line(mig, in_flight))
