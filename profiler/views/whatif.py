"""The terminal form of `migprof whatif`: what was measured, the predictions, a sweep chart."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from profiler.model.verdict import fmt_bytes, fmt_rate
from profiler.model.whatif import (
    BANDWIDTH_STEP,
    LOWER_BOUND,
    SIZE_ESTIMATE,
    Measured,
    Prediction,
    Setting,
    Sweep,
    step_jitter,
)

CHART_WIDTH = 24  # bar columns of the sweep chart (fits 80 columns)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def _span(v: tuple | None, point: float | None, fmt=_ms) -> str:
    """A figure with its range: ``30-45`` (``45`` when the ends read the same); a range of a
    prediction that does not converge at its point in parentheses (where it converges)."""
    if v is None:
        return fmt(point) if point is not None else "-"
    lo, hi = fmt(v[0]), fmt(v[1])
    text = lo if lo == hi else f"{lo}-{hi}"
    return text if point is not None else f"({text})"


def _syncs(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _converges(p: Prediction) -> Text:
    if p.range is not None and p.range.converges == (False, True):
        return Text("depends", style="yellow")
    return Text("yes", style="green") if p.converges else Text("no", style="red")


def _bytes_span(b: tuple[int, int]) -> str:
    lo, hi = fmt_bytes(b[0]), fmt_bytes(b[1])
    unit = hi.split()[-1]
    return hi if lo == hi else f"{lo.removesuffix(' ' + unit)}-{hi}"


def _stopcopy(p: Prediction) -> Text:
    """Each device's stop-copy bytes (a range where the prediction has one) and downtime share;
    a prediction that converges only somewhere in its range shows that range in parentheses."""
    if not p.converges and p.range is not None:
        return Text(", ".join(f"{d.name} ({_bytes_span(d.stopcopy_bytes)})" for d in p.range.devices) or "-")
    r = {d.name: d.stopcopy_bytes for d in p.range.devices} if p.range is not None else {}
    return Text(", ".join(f"{d.name} {_bytes_span(r[d.name]) if d.name in r else fmt_bytes(d.stopcopy_bytes)}"
                          + (f" {d.downtime_ms:.1f} ms" if d.downtime_ms is not None else "")
                          for d in p.devices) or "-")


def range_notes(x: Measured, preds: Sequence[Prediction]) -> Text | None:
    """What the ranges in a table mean, for the reasons its predictions have one."""
    rs = [p for p in preds if p.range is not None]
    why = {w for p in rs for w in p.range.why}
    if not why:
        return None
    rate = fmt_rate(x.dirty_rate_bytes_per_s)
    t = Text()
    t.append("ranges", style="yellow")
    t.append(" (a-b): what the recording cannot pin down.")
    if LOWER_BOUND in why:
        t.append(f" The dirty rate is only known to be >= {rate}: a-b runs from the replay at {rate} to the "
                 "safe side (the whole set re-dirtied after each sync), which --json's point values are.")
    if BANDWIDTH_STEP in why:
        steps = ", ".join(f"{v:.0f}" for v in x.bandwidth_steps_ms)
        jit = step_jitter(x)
        t.append(f" The bandwidth stepped (after {steps} ms): a-b is the replay at each phase of QEMU's 100 ms "
                 "bandwidth window against the step, as another run lands"
                 + (f", with the threshold moved by the bandwidth's window-to-window jitter (+-{jit:.0%})"
                    if jit >= 0.01 else "") + " (--json's point values: as recorded).")
    if SIZE_ESTIMATE in why:
        t.append(" A device's stop-copy size is its own estimate, and the recording never saw it send its "
                 "stop-copy: a-b runs from that size less what the device sent in pre-copy (a driver may "
                 "count both, as mtty does) to the size.")
    dep = [p for p in rs if p.range.converges == (False, True)]
    if dep:
        t.append(" ")
        t.append("depends", style="yellow")
        t.append(": converges in part of the range only.")
        if any(not p.converges for p in dep):
            at_floor = all(p.range.converges_at_lower_bound for p in dep if not p.converges)
            t.append(" Where the point (the safe side, as recorded) does not, "
                     + (f"the replay at {rate} does" if at_floor else "some replays of the range do")
                     + ": figures in parentheses are theirs.")
        if any(p.converges for p in dep):
            t.append(" Where the point does, some replays of the range do not.")
    return t


def setting_text(s: Setting, short: bool = False) -> str:
    bw = fmt_rate(s.max_bandwidth_bytes_per_s) if s.max_bandwidth_bytes_per_s else "unlimited"
    asb = s.avail_switchover_bandwidth_bytes_per_s
    if short:
        return f"{s.downtime_limit_ms:g} ms @ {bw}" + (f" (switchover {fmt_rate(asb)})" if asb else "")
    return (f"downtime-limit {s.downtime_limit_ms:g} ms, max-bandwidth {bw}"
            + (f", avail-switchover-bandwidth {fmt_rate(asb)}" if asb else ""))


def _param_text(param: str, v: float) -> str:
    return f"{v:g} ms" if param == "downtime-limit" else fmt_rate(v)


def measured_text(x: Measured) -> Text:
    t = Text()
    t.append(f"Migration {x.migration + 1}", style="bold")
    t.append(f" (QEMU {x.qemu_version or '?'}), recorded with {setting_text(x.recorded)}: {x.outcome}")
    if x.total_ms is not None:
        t.append(f", total {_ms(x.total_ms)} ms")
    if x.downtime_ms is not None:
        t.append(f", downtime {_ms(x.downtime_ms)} ms")
    t.append(f", {x.dirty_syncs} dirty syncs\n")
    ws = fmt_bytes(x.working_set_bytes) if x.working_set_bytes is not None else "not seen whole"
    rate = fmt_rate(x.dirty_rate_bytes_per_s) + (" or more (the whole set each pass)" if x.saturated else "")
    bw = [w.bytes_per_ms * 1000 for w in x.windows]
    bws = f"{fmt_rate(min(bw))} .. {fmt_rate(max(bw))}" if bw else "no window"
    t.append(f"  RAM {fmt_bytes(x.ram_bytes)} ({fmt_bytes(x.bulk_wire_bytes)} on the wire in the first pass), "
             f"working set {ws}, dirty rate {rate}\n")
    t.append(f"  bandwidth {bws} over {len(bw)} windows, stop-copy {fmt_rate(x.stop_rate_bytes_per_ms * 1000)} "
             f"({x.stop_rate_source}), fixed downtime {_ms(x.fixed_downtime_ms)} ms, "
             f"{x.passes_seen} passes seen\n")
    for d in x.devices:
        t.append(f"  {d.name}: initial {fmt_bytes(d.initial_bytes)}, dirty {fmt_bytes(d.dirty_bytes)}, "
                 f"stop-copy size {fmt_bytes(d.stopcopy_size_bytes)}"
                 + ("" if d.precopy_info else " (no PRE_COPY info)") + "\n")
    for w in x.weak:
        t.append("  weak: ", style="yellow")
        t.append(w + "\n")
    return t


def _bar(p: Prediction, top: float) -> Text:
    """The predicted total time as a bar, its downtime part solid."""
    if not p.converges or p.total_ms is None:
        return Text("")
    n = max(1, round(p.total_ms / top * CHART_WIDTH))
    d = min(n, round((p.downtime_ms or 0) / top * CHART_WIDTH))
    return Text("█" * d, style="magenta") + Text("░" * (n - d), style="cyan")


def predictions_table(preds: Sequence[Prediction], title: str, param: str | None = None) -> Table:
    """One row per setting; with ``param`` (a sweep) the swept value and a bar chart of the
    predicted total (light) and downtime (solid) instead of the whole setting."""
    tab = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    first = param.upper() if param else "DOWNTIME-LIMIT @ MAX-BANDWIDTH"
    last = "TOTAL ░ / DOWNTIME █" if param else "STOP-COPY"
    for col in (first, "CONVERGES", "SYNCS", "TOTAL(ms)", "DOWN(ms)", last):
        tab.add_column(col, justify="right" if col in ("SYNCS", "TOTAL(ms)", "DOWN(ms)") else "left",
                       no_wrap=bool(param) and col in (first, last))
    top = max([p.total_ms for p in preds if p.total_ms is not None] or [1.0])
    for p in preds:
        if param:
            head, tail = _param_text(param, p.setting.value(param)), _bar(p, top)
        else:
            head = setting_text(p.setting, short=True)
            tail = _stopcopy(p)
        r = p.range
        tab.add_row(head, _converges(p), _span(r and r.dirty_syncs, p.dirty_syncs, _syncs),
                    _span(r and r.total_ms, p.total_ms), _span(r and r.downtime_ms, p.downtime_ms), tail)
    return tab


def verdict_text(x: Measured, preds: Sequence[Prediction]) -> Text | None:
    """How the prediction reads next to the verdict's one suggested setting."""
    if x.verdict_needed_downtime_limit_ms is None:
        return None
    t = Text("Verdict: ")
    t.append(f"switches over at downtime-limit >= {x.verdict_needed_downtime_limit_ms:g} ms (a sure bound "
             "at the measured bandwidth)")
    sug = next((p for p in preds if x.verdict_suggested_downtime_limit_ms
                and p.setting.downtime_limit_ms == x.verdict_suggested_downtime_limit_ms), None)
    if sug is not None:
        t.append(f"; at its suggestion ({x.verdict_suggested_downtime_limit_ms:g} ms, +25% for bandwidth swings) "
                 + (f"the replay converges after {sug.dirty_syncs} dirty syncs, total {_ms(sug.total_ms)} ms, "
                    f"downtime {_ms(sug.downtime_ms)} ms" if sug.converges else "the replay does not converge"))
    return t


def render(console: Console, x: Measured, preds: Sequence[Prediction], sw: Sweep | None = None) -> None:
    console.print(measured_text(x))
    console.print(predictions_table(preds, "Predicted"))
    v = verdict_text(x, preds)
    if v is not None:
        console.print(v)
    if sw is not None:
        console.print()
        console.print(predictions_table(sw.predictions, f"Sweep of {sw.param}", param=sw.param))
        if sw.smallest is not None:
            if x.saturated:  # the table is at any dirty rate; the measured floor converges sooner
                sure = (_param_text(sw.param, sw.smallest_any_rate) if sw.smallest_any_rate is not None
                        else "none in the range")
                t = (f"smallest {sw.param} that converges at any dirty rate: {sure}; "
                     f"{_param_text(sw.param, sw.smallest)} if the guest dirties no faster than "
                     f"{fmt_rate(x.dirty_rate_bytes_per_s)}")
            else:
                t = f"smallest {sw.param} that converges: {_param_text(sw.param, sw.smallest)}"
            if sw.param == "downtime-limit" and x.verdict_needed_downtime_limit_ms:
                t += f" (the verdict's sure bound, at the run's mean bandwidth: {x.verdict_needed_downtime_limit_ms:g} ms)"
            console.print(t)
        else:
            console.print(f"no {sw.param} in the range converges", style="red")
    notes = range_notes(x, list(preds) + list(sw.predictions if sw is not None else ()))
    if notes is not None:
        console.print(notes)
