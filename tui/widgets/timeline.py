"""The phase timeline: setup, pre-copy passes, stop-and-copy, complete; VFIO states beneath."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from profiler.model.results import Migration, StateChange
from profiler.views.curve import Y_LABEL_W
from profiler.views.fmt import short_name
from tui.view import cursor_ms
from tui.widgets.base import Panel, Shown

LABEL_W = Y_LABEL_W  # the bars start in the chart's first plot column, so times line up
PHASE_STYLE = {
    "setup": "black on bright_blue",
    "pre-copy": "black on green",
    "stop-and-copy": "white on red",
    "complete": "black on bright_white",
}
STATE_STYLE = {
    "RUNNING": "black on green",
    "PRE_COPY": "black on yellow",
    "PRE_COPY_P2P": "black on dark_orange",
    "RUNNING_P2P": "black on bright_green",
    "STOP_COPY": "white on red",
    "STOP": "white on grey35",
    "RESUMING": "white on blue",
    "ERROR": "white on dark_red",
}


def _norm(state: str) -> str:
    """QMP says ``pre-copy``, traces ``PRE_COPY``: one spelling."""
    return state.upper().replace("-", "_")


def timeline_height(mig: Migration | None) -> int:
    n = sum(1 for d in mig.devices if d.states) if mig is not None else 0
    return 1 + min(n, 4)


def _segments_row(
    label: str, segs: list[tuple[float, float, str, str]], x_max: float, width: int
) -> Text:
    """``segs``: (start_ms, end_ms, name, style) drawn on ``width`` cells for 0..x_max."""
    t = Text(f"{label[: LABEL_W - 1]:<{LABEL_W}}", "bold", no_wrap=True, overflow="crop")
    cells: list[tuple[str, str]] = [(" ", "")] * width
    for a, b, name, style in segs:
        ca = int(a / x_max * width) if x_max > 0 else 0
        cb = max(int(b / x_max * width), ca + 1) if x_max > 0 else width
        ca, cb = max(0, min(ca, width - 1)), max(0, min(cb, width))
        span = cb - ca
        text = name if len(name) <= span else name[: max(span, 0)]
        for i in range(ca, cb):
            j = i - ca
            cells[i] = (text[j] if j < len(text) else " ", style)
    run, style = "", None
    for ch, st in cells:
        if st != style and run:
            t.append(run, style or None)
            run = ""
        style = st
        run += ch
    t.append(run, style or None)
    return t


def phase_segments(mig: Migration, end_ms: float) -> list[tuple[float, float, str, str]]:
    segs: list[tuple[float, float, str, str]] = []
    setup = mig.setup_ms
    sw = mig.switchover_ms
    if setup is not None:
        segs.append((0.0, min(setup, end_ms), "setup", PHASE_STYLE["setup"]))
    pre_end = sw if sw is not None else end_ms
    start = setup or 0.0
    if pre_end > start:
        n = sum(1 for p in mig.passes if p.phase == "precopy")
        segs.append(
            (
                start,
                pre_end,
                f"pre-copy {n} pass" + ("es" if n != 1 else ""),
                PHASE_STYLE["pre-copy"],
            )
        )
    if sw is not None:
        stop_end = sw + mig.stopcopy_ms if mig.stopcopy_ms is not None else end_ms
        segs.append((sw, max(stop_end, sw), "stop-and-copy", PHASE_STYLE["stop-and-copy"]))
        if mig.outcome == "completed" and mig.total_ms is not None and mig.total_ms > stop_end:
            segs.append((stop_end, mig.total_ms, "complete", PHASE_STYLE["complete"]))
    return segs


def state_segments(
    states: tuple[StateChange, ...], end_ms: float
) -> list[tuple[float, float, str, str]]:
    known = [s for s in states if s.t_ms is not None and s.side == "source"] or [
        s for s in states if s.t_ms is not None
    ]
    # the same change reported twice (trace request and confirmation, QMP event) is one
    # segment: keep the first report of each run of equal states
    merged: list[StateChange] = []
    for s in sorted(known, key=lambda s: s.t_ms):
        if merged and _norm(merged[-1].state) == _norm(s.state):
            if s.confirmed and not merged[-1].confirmed:
                merged[-1] = StateChange(
                    merged[-1].t_ms, merged[-1].state, merged[-1].side, True, merged[-1].origin
                )
            continue
        merged.append(s)
    known = merged
    segs = []
    for a, b in zip(known, known[1:] + [None], strict=False):
        stop = b.t_ms if b is not None else end_ms
        # QMP VFIO_MIGRATION says "pre-copy", traces say "PRE_COPY": one colour for both
        style = STATE_STYLE.get(_norm(a.state), "black on white")
        if not a.confirmed:
            style += " italic"
        segs.append((a.t_ms, max(stop, a.t_ms), _norm(a.state), style))
    return segs


def render_timeline(shown: Shown, width: int) -> RenderableType:
    mig, full = shown.mig, shown.full_mig or shown.mig
    if mig is None:
        return Text("timeline: no migration yet", "dim")
    bar_w = max(width - LABEL_W, 10)
    cur = cursor_ms(shown.view, mig)
    if cur is None or not shown.view.timed:
        n = sum(1 for p in mig.passes if p.phase == "precopy")
        return Text(
            f"{'phase':<{LABEL_W}}setup → pre-copy ({n} passes) → "
            f"{'stop-and-copy → ' if mig.switchover_ms is not None else ''}{mig.outcome}"
            "  (no timestamps)",
            no_wrap=True,
            overflow="ellipsis",
        )
    end = (
        mig.total_ms
        if mig.outcome in ("completed", "failed", "cancelled") and mig.total_ms
        else cur
    )
    x_max = (
        max(full.total_ms or 0.0, end, 1.0)
        if shown.view.mode == "replay" and full
        else max(end, 1.0)
    )
    rows = [_segments_row("phase", phase_segments(mig, end), x_max, bar_w)]
    for dev in [d for d in mig.devices if d.states][:4]:
        rows.append(
            _segments_row(
                short_name(dev.name, LABEL_W - 1), state_segments(dev.states, end), x_max, bar_w
            )
        )
    return Group(*rows)


class PhaseTimeline(Panel):
    """Phases of the selected migration on the chart's time axis, VFIO device states beneath."""

    DEFAULT_CSS = """
    PhaseTimeline { height: auto; min-height: 1; max-height: 5; }
    """

    def render(self) -> RenderableType:
        if self.shown is None:
            return Text("")
        return render_timeline(self.shown, self.size.width)

    def get_content_height(self, container, viewport, width: int) -> int:
        return timeline_height(self.shown.mig if self.shown else None)
