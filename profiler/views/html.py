"""An HTML page of a comparison: both sides' convergence curves overlaid, the spread of
the main metrics, and the table. plotly.js is inlined (the page opens offline on its own)
or, for many pages in one directory, one plotly.min.js beside them."""

from __future__ import annotations

import contextlib
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

from profiler.errors import MigprofError
from profiler.model.compare import Comparison, Group
from profiler.views.compare import (
    dataset_line,
    delta_text,
    fmt_value,
    footer,
    p_text,
    side_line,
    to_json,
)

PLOTLY_MODES = ("inline", "directory")
PLOTLY_JS = "plotly.min.js"  # the name plotly's own include_plotlyjs="directory" refers to

_COLORS = {"base": "#1f77b4", "candidate": "#ff7f0e"}
_BOX_METRICS = ("total_ms", "downtime_ms", "setup_ms", "dirty_syncs", "checks_to_converge",
                "bandwidth_bytes_per_s")
_MIB = float(1 << 20)


@dataclass(frozen=True, slots=True)
class Curve:
    """One migration's convergence: pending and threshold bytes at each check, against its
    time (ms since the migration's start) or, when a check has no time, its number."""

    input: str
    run: int
    migration: int
    x_is_time: bool
    t_ms: list[float]
    pending_bytes: list[int]
    threshold_bytes: list[int | None]


def curves(group: Group) -> list[Curve]:
    """The convergence curve of every migration the group took that made checks."""
    out = []
    for s in group.samples:
        checks = s.checks
        if not checks:
            continue
        xs = [c.t_ms if c.t_ms is not None else float(i) for i, c in enumerate(checks)]
        out.append(Curve(group.inputs[s.input], s.input, s.index,
                         all(c.t_ms is not None for c in checks), xs,
                         [c.pending_bytes or 0 for c in checks], [c.threshold_bytes for c in checks]))
    return out


def _curve_figure(c: Comparison):
    import plotly.graph_objects as go

    fig = go.Figure()
    x_time = True
    for label, side in (("base", c.base), ("candidate", c.candidate)):
        color = _COLORS[label]
        first = True
        for cv in curves(side):
            x_time &= cv.x_is_time
            name = f"{label}: {cv.input} #{cv.migration}"
            fig.add_trace(go.Scatter(
                x=cv.t_ms, y=[p / _MIB for p in cv.pending_bytes], mode="lines+markers",
                line={"color": color, "width": 1.5}, marker={"size": 4}, opacity=0.75,
                name=label, legendgroup=label, showlegend=first, hovertext=name,
                hovertemplate="%{hovertext}<br>t=%{x:.1f}<br>pending %{y:.2f} MiB<extra></extra>"))
            thr = [(x, t / _MIB) for x, t in zip(cv.t_ms, cv.threshold_bytes, strict=True) if t is not None]
            if thr:
                fig.add_trace(go.Scatter(
                    x=[a for a, _ in thr], y=[b for _, b in thr], mode="lines",
                    line={"color": color, "width": 1, "dash": "dash"}, opacity=0.6,
                    name=f"{label} threshold", legendgroup=f"{label}-thr", showlegend=first,
                    hovertext=name, hovertemplate="%{hovertext}<br>threshold %{y:.2f} MiB<extra></extra>"))
            first = False
    fig.update_layout(
        title="Convergence: pending bytes at each check (dashed: switch-over threshold)",
        xaxis_title="time since migration start (ms)" if x_time else "check number",
        yaxis_title="pending (MiB)", template="plotly_white", height=520,
        legend={"orientation": "h", "y": -0.15})
    return fig


def _box_figure(c: Comparison):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ms = [m for m in c.metrics if m.name in _BOX_METRICS]
    if not ms:
        return None
    fig = make_subplots(rows=1, cols=len(ms), subplot_titles=[m.name for m in ms])
    for i, m in enumerate(ms, start=1):
        scale = _MIB if m.unit in ("bytes", "bytes/s") else 1.0
        for label, st in (("base", m.base), ("candidate", m.candidate)):
            fig.add_trace(go.Box(y=[v / scale for v in st.values], name=label, boxpoints="all",
                                 marker_color=_COLORS[label], legendgroup=label,
                                 showlegend=i == 1), row=1, col=i)
    fig.update_layout(title="Spread per run (MiB and MiB/s for sizes and rates)",
                      template="plotly_white", height=380)
    return fig


def render_html(c: Comparison, plotly: str = "inline") -> str:
    """One HTML document. ``inline``: plotly.js inside it (no network needed to view it);
    ``directory``: it loads plotly.min.js from its own directory (see ``write_html``)."""
    import plotly.io as pio

    figs = [f for f in (_curve_figure(c), _box_figure(c)) if f is not None]
    parts = []
    for i, f in enumerate(figs):
        include = (True if plotly == "inline" else "directory") if i == 0 else False
        parts.append(pio.to_html(f, include_plotlyjs=include, full_html=False,
                                 config={"displaylogo": False}))
    rows = "\n".join(
        f"<tr><td><code>{html.escape(m.name)}</code></td><td>{html.escape(fmt_value(m.base.median, m.unit))}</td>"
        f"<td>{html.escape(fmt_value(m.candidate.median, m.unit))}</td><td>{html.escape(delta_text(m))}</td>"
        f"<td>{html.escape(p_text(m, c))}</td></tr>" for m in c.metrics)
    notes = "\n".join(f"<li>{html.escape(line)}</li>" for line in footer(c))
    verdict = "Regression" if c.regression else "No regression"
    data = html.escape(json.dumps(to_json(c), default=str))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>migprof compare</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse}}td,th{{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>migprof compare: {verdict}</h1>
<p>{"<br>".join(html.escape(x) for x in (dataset_line(c), side_line(c, "base"), side_line(c, "candidate")) if x)}</p>
{''.join(parts)}
<h2>Metrics (medians)</h2>
<table><tr><th>metric</th><th>base</th><th>candidate</th><th>delta</th><th>test</th></tr>
{rows}</table>
<ul>{notes}</ul>
<script type="application/json" id="migprof-compare">{data}</script>
</body></html>
"""


def _write(path: Path, text: str, what: str, *, replace: bool = False) -> None:
    """Write ``text``; ``replace``: through a temporary file renamed over ``path``, so a page
    being opened meanwhile never loads half a shared script."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp") if replace else path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # pages/c1.html: pages/ made here
        tmp.write_text(text, encoding="utf-8")
        if replace:
            os.replace(tmp, path)
    except OSError as e:
        if replace:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise MigprofError(f"{path}: cannot write {what}: {e.strerror or e}") from None


def write_html(c: Comparison, path: str, plotly: str = "inline") -> list[str]:
    """Write the page (and, for ``directory``, plotly.min.js beside it unless the same
    script is there already, so many pages share one copy); the paths written."""
    page, text = Path(path), render_html(c, plotly)
    written = []
    if plotly == "directory":
        from plotly.offline import get_plotlyjs

        js, script = page.parent / PLOTLY_JS, get_plotlyjs()
        try:
            same = js.read_text(encoding="utf-8") == script
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            _write(js, script, "the shared plotly.js", replace=True)
            written.append(str(js))
    _write(page, text, "the HTML page")
    return [str(page), *written]
