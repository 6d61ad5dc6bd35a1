"""Render a comparison: a rich terminal table, Markdown, and its one JSON form."""

from __future__ import annotations

import json
import math
from typing import IO, Any

from profiler.model.compare import Comparison, Group, MetricResult, Stats, left_out_text

COMPARE_SCHEMA = "migprof.compare/1"


def fmt_value(v: float | None, unit: str) -> str:
    """A metric value with its unit, scaled for reading (MiB, MiB/s, ms)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit == "bytes":
        a = abs(v)
        for u, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if a >= div:
                return f"{v / div:.2f} {u}"
        return f"{v:.0f} B"
    if unit == "bytes/s":
        return f"{v / (1 << 20):.1f} MiB/s"
    if unit == "ms":
        return f"{v:.1f} ms" if abs(v) < 10000 else f"{v / 1000:.2f} s"
    if unit == "count":
        return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"
    return f"{v:.4g}"


def _cell(s: Stats, unit: str) -> str:
    if s.n == 0:
        return "-"
    if s.n == 1:
        return fmt_value(s.median, unit)
    # median with the spread, as benchstat shows it (half-range, relative)
    spread = ""
    if s.median and s.max is not None and s.min is not None:
        spread = f" ±{(s.max - s.min) / 2 / abs(s.median) * 100:.0f}%"
    return f"{fmt_value(s.median, unit)}{spread}"


def delta_text(m: MetricResult) -> str:
    """``+12.3%``, ``~`` when the test finds no significant difference."""
    if m.delta is None:
        return "-"
    if m.significant is False:
        return "~"
    if m.delta_pct is None or not math.isfinite(m.delta_pct):
        return f"{m.delta:+.4g}"
    return f"{m.delta_pct:+.1f}%"


def p_text(m: MetricResult, c: Comparison | None = None) -> str:
    """``p=0.008``; the sample counts only where this metric has fewer than its side."""
    n = ""
    if c is None or (m.base.n, m.candidate.n) != (len(c.base.samples), len(c.candidate.samples)):
        n = f" n={m.base.n}/{m.candidate.n}"
    if m.p_value is None:
        return f"too few{n}" if m.note else n.strip()
    return f"p={m.p_value:.3f}{n}"


def side_line(c: Comparison, which: str) -> str:
    """``base: 5 run(s), 6 migration(s) compared (...); QEMU 7.2.22``; a dataset group says
    how it was drawn and where it ran: ``base qemu_version=7.2.22 where ...: 5 recording(s),
    ...; hosts hv1, hv2``."""
    g = c.base if which == "base" else c.candidate
    outc = ", ".join(f"{k} {v}" for k, v in sorted(g.outcomes.items())) or "no migrations"
    qv = f"; QEMU {', '.join(g.qemu_versions)}" if g.qemu_versions else ""
    hosts = f"; {_few('host', g.hosts)}" if g.hosts else ""
    note = f"; {g.note}" if g.note else ""
    k = g.kernel_view
    kv = f"; {k} kernel view only (BPF alone: no RAM, no threshold)" if k else ""
    if g.selection is not None:
        return (f"{which} {g.selection.text}: {len(g.inputs)} recording(s), {len(g.samples)} "
                f"migration(s) compared ({outc}){qv}{hosts}{kv}{note}")
    return f"{which}: {len(g.inputs)} run(s), {len(g.samples)} migration(s) compared ({outc}){qv}{hosts}{kv}{note}"


def _few(what: str, names: tuple[str, ...], most: int = 5) -> str:
    shown = ", ".join(names[:most]) + (f" +{len(names) - most}" if len(names) > most else "")
    return f"{what}{'s' if len(names) > 1 else ''} {shown}"


def dataset_line(c: Comparison) -> str | None:
    """``dataset fleet/ by qemu_version where ...`` above the sides (None: files compared)."""
    sel = c.base.selection
    if sel is None:
        return None
    w = f" where {sel.where.strip()}" if sel.where and sel.where.strip() else ""
    return f"dataset {sel.dataset}: by {sel.by}{w}"


def render_terminal(c: Comparison, file: IO[str] | None = None, *, color: bool | None = None) -> None:
    """The comparison table on a terminal (rich); rules and left-out metrics below it."""
    from rich.table import Table

    from profiler.views.console import output_console

    con = output_console(file, no_color=color is False, force_terminal=color if color else None,
                         soft_wrap=False)
    for line in filter(None, (dataset_line(c), side_line(c, "base"), side_line(c, "candidate"))):
        con.print(line, markup=False, soft_wrap=True)
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col, just in (("METRIC", "left"), ("BASE", "right"), ("CAND", "right"),
                      ("DELTA", "right"), ("TEST", "left")):
        t.add_column(col, justify=just, no_wrap=True)
    for m in c.metrics:
        dt = delta_text(m)
        style = ""
        if m.significant and m.worse:
            style = "red"
        elif m.significant and m.worse is False:
            style = "green"
        t.add_row(m.name, _cell(m.base, m.unit), _cell(m.candidate, m.unit),
                  f"[{style}]{dt}[/]" if style else dt, p_text(m, c))
    con.print(t)
    for line in footer(c):
        con.print(line, markup=False, soft_wrap=True)


def footer(c: Comparison) -> list[str]:
    """The lines under the table: significance, left-out metrics, one per rule result."""
    lines = []
    if c.too_few:
        lines.append(f"too few samples for the Mann-Whitney U test (base {len(c.base.samples)}, "
                     f"candidate {len(c.candidate.samples)}; {c.min_samples} a side needed)")
    else:
        lines.append(f"~: not significant (two-sided Mann-Whitney U, alpha {c.alpha:g})")
    if c.left_out:
        lines.append("left out, only one side has them: " + left_out_text(c.left_out))
    for r in c.rules:
        mark = "REGRESSION" if r.fired else "ok"
        lines.append(f"{mark}: {r.rule} -> {r.metric}: {r.detail}")
    return lines


def render_markdown(c: Comparison) -> str:
    """A GitHub-flavoured Markdown table with the same content as the terminal view."""
    ds = dataset_line(c)
    out = ["# migprof compare", "", *([f"- {ds}"] if ds else []), f"- {side_line(c, 'base')}",
           f"- {side_line(c, 'candidate')}", "",
           "| metric | base | candidate | delta | test |", "|---|---:|---:|---:|---|"]
    for m in c.metrics:
        out.append(f"| `{m.name}` | {_cell(m.base, m.unit)} | {_cell(m.candidate, m.unit)} | "
                   f"{delta_text(m)} | {p_text(m, c)} |")
    out.append("")
    out += [f"- {line}" for line in footer(c)]
    out.append("")
    out.append(f"**{'Regression' if c.regression else 'No regression'}**")
    return "\n".join(out) + "\n"


def _group_json(g: Group) -> dict[str, Any]:
    sel = g.selection
    return {"label": g.label, "inputs": list(g.inputs), "runs": len(g.inputs),
            "migrations": len(g.samples), "outcomes": dict(g.outcomes),
            "qemu_versions": list(g.qemu_versions), "schema_versions": list(g.schema_versions),
            "hosts": list(g.hosts), "note": g.note, "from_summary": g.from_summary,
            "kernel_view": g.kernel_view,
            "selection": None if sel is None else {"dataset": sel.dataset, "by": sel.by,
                                                   "key": sel.key, "where": sel.where}}


def _stats_json(s: Stats) -> dict[str, Any]:
    return {"n": s.n, "median": s.median, "mean": s.mean, "min": s.min, "max": s.max,
            "values": list(s.values)}


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


def to_json(c: Comparison) -> dict[str, Any]:
    """The one JSON form of a comparison (``schema: migprof.compare/1``)."""
    return {
        "schema": COMPARE_SCHEMA,
        "alpha": c.alpha,
        "min_samples": c.min_samples,
        "base": _group_json(c.base),
        "candidate": _group_json(c.candidate),
        "metrics": [{"name": m.name, "unit": m.unit, "lower_is_better": m.lower_is_better,
                     "base": _stats_json(m.base), "candidate": _stats_json(m.candidate),
                     "delta": m.delta, "delta_pct": _finite(m.delta_pct), "p_value": m.p_value,
                     "significant": m.significant, "note": m.note} for m in c.metrics],
        "left_out": [{"metric": d.metric, "only_in": d.only_in, "n": d.n, "reason": d.reason}
                     for d in c.left_out],
        "rules": [{"rule": r.rule, "metric": r.metric, "fired": r.fired, "detail": r.detail}
                  for r in c.rules],
        "regression": c.regression,
        "warnings": list(c.warnings),
    }


def render_json(c: Comparison) -> str:
    return json.dumps(to_json(c), indent=2, allow_nan=False, default=str)
