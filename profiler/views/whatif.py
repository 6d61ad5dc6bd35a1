"""The terminal form of `migprof whatif`: what was measured, the predictions, a sweep chart."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from profiler.model.verdict import fmt_bytes, fmt_rate
from profiler.model.whatif import Measured, Prediction, Setting, Sweep

CHART_WIDTH = 24  # bar columns of the sweep chart (fits 80 columns)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


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
            tail = Text(", ".join(f"{d.name} {fmt_bytes(d.stopcopy_bytes)}"
                                  + (f" {d.downtime_ms:.1f} ms" if d.downtime_ms is not None else "")
                                  for d in p.devices) or "-")
        tab.add_row(head, Text("yes", style="green") if p.converges else Text("no", style="red"),
                    "-" if p.dirty_syncs is None else str(p.dirty_syncs), _ms(p.total_ms), _ms(p.downtime_ms),
                    tail)
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
