"""The terminal report (rich) and the JSON form of `migprof report`."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from profiler.model.results import Check, Migration, Report
from profiler.model.results import dumps as _dumps
from profiler.model.results import to_json as _to_json
from profiler.model.verdict import fmt_bytes
from profiler.views.console import PIPED_WIDTH, drawing_width
from profiler.views.curve import Y_LABEL_W, draw, x_range

HEAD_CHECKS = 5  # checks shown at the start of a long run
TAIL_CHECKS = 8  # ... and at its end
MAX_OTHER = 4  # "other" save-state entries listed by downtime before summing the rest
_OUTCOME_STYLE = {"completed": "bold green", "failed": "bold red", "cancelled": "bold yellow",
                  "incomplete": "bold magenta"}


def to_json(report: Report) -> dict[str, Any]:
    """The ``migprof.report/1`` object (see docs/report.md)."""
    return _to_json(report)


def json_text(report: Report, pretty: bool = False) -> str:
    """``to_json`` as text: indented for a person, compact (and much faster) otherwise."""
    return _dumps(report, indent=1 if pretty else None)


def _ms(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _b(v: int | float | None) -> str:
    return "-" if v is None else fmt_bytes(v)


def _mib(v: int | float | None) -> str:
    """Bytes as MiB with one decimal (table cells; the header carries the unit)."""
    return "-" if v is None else f"{v / (1 << 20):.1f}"


_KIND = {"estimate": "est", "exact": "exact", "pending": "pend", "precopy_info": "info"}
KERNEL = "kernel view only"
MAX_ROUNDS = 8  # rounds listed per device before the rest are summed


def header(m: Migration) -> Text:
    if m.view == "kernel":
        return kernel_header(m)
    t = Text()
    t.append(f"Migration {m.index + 1}", style="bold")
    t.append(f" ({m.side}" + (f", QEMU {m.qemu_version}" if m.qemu_version else "") + "): ")
    t.append(m.outcome, style=_OUTCOME_STYLE.get(m.outcome, "bold"))
    if m.dest_outcome:
        t.append(f" (destination {m.dest_outcome})")
    t.append(f"  total {_ms(m.total_ms)} ms  setup {_ms(m.setup_ms)} ms  downtime {_ms(m.downtime_ms)} ms")
    if m.guest_paused_ms is not None:
        # QEMU's downtime ends when the source completes; the guest runs again only when the
        # destination resumes it (model/pause.py)
        t.append(f" (QEMU's, source)  guest paused {_ms(m.guest_paused_ms)} ms (source STOP -> "
                 "destination RESUME)")
    t.append(f"  dirty syncs {m.dirty_syncs}  checks {len(m.checks)}")
    if m.transferred_bytes is not None:
        t.append(f"  sent {_b(m.transferred_bytes)}")
    if m.downtime_limit_ms is not None:
        t.append(f"  downtime-limit {m.downtime_limit_ms:.0f} ms")
    if m.error:
        t.append(f"\n  error: {m.error}", style="red")
    return t


def kernel_header(m: Migration) -> Text:
    """The header of a migration only the kernel saw: what BPF measured, and what it cannot."""
    t = Text()
    t.append(f"Migration {m.index + 1}", style="bold")
    t.append(f" ({m.side}, ")
    t.append(KERNEL, style="bold yellow")
    t.append(f": {m.sources.get('process', 'BPF')}): ")
    t.append(m.outcome, style=_OUTCOME_STYLE.get(m.outcome, "bold"))
    if m.dest_outcome:
        t.append(f" (destination {m.dest_outcome})")
    t.append(f"  total {_ms(m.total_ms)} ms  switch-over at {_ms(m.switchover_ms)} ms"
             f"  stop-copy {_ms(m.stopcopy_ms)} ms  devices {sum(1 for d in m.devices if d.kind == 'vfio')}")
    if m.downtime_limit_ms is not None:
        t.append(f"  downtime-limit {m.downtime_limit_ms:.0f} ms")
    t.append("\n  no RAM, dirty syncs, switch-over threshold or guest downtime: neither QEMU's trace nor QMP "
             "was there", style="dim")
    if m.error:
        t.append(f"\n  error: {m.error}", style="red")
    return t


def _pick_checks(m: Migration, all_checks: bool) -> list[int]:
    """Indices to show; a negative number -k marks k hidden checks. Keeps the start, the end, the closest and converged check."""
    n = len(m.checks)
    if all_checks or n <= HEAD_CHECKS + TAIL_CHECKS + 3:
        return list(range(n))
    keep = set(range(HEAD_CHECKS)) | set(range(n - TAIL_CHECKS, n))
    for k in (m.verdict.min_gap_check, m.verdict.converged_at_check):
        if k is not None:
            keep |= {k - 1, k, k + 1}
    out: list[int] = []
    prev = -1
    for i in sorted(x for x in keep if 0 <= x < n):
        if i != prev + 1:
            out.append(-(i - prev - 1))  # a gap of that many hidden checks
        out.append(i)
        prev = i
    return out


def checks_table(m: Migration, all_checks: bool = False) -> Table:
    devs: list[str] = []
    for c in m.checks:
        for d in c.devices:
            if d not in devs:
                devs.append(d)
    title = ("Pre-copy checks: pending vs switch-over threshold, MiB, per device at the right "
             "(✔ switched over, ▼ below threshold, ◆ closest)")
    if m.view == "kernel":
        title = ("Pending per VFIO device (VFIO_MIG_GET_PRECOPY_INFO: initial + dirty), MiB; "
                 "kernel view: no RAM, no threshold")
    tb = Table(title=title, box=box.SIMPLE_HEAD,
               title_justify="left", pad_edge=False)
    for col, just in (("#", "right"), ("T(ms)", "right"), ("KIND", "left"), ("PASS", "right"),
                      ("PENDING", "right"), ("THRESH", "right"), ("GAP", "right"), ("", "left")):
        tb.add_column(col, justify=just, no_wrap=True)
    for d in devs:
        tb.add_column("RAM" if d == "ram" else d, justify="right", overflow="fold")
    for i in _pick_checks(m, all_checks):
        if i < 0:
            tb.add_row("…", f"{-i} more", "", "", "", "", "", "", *[""] * len(devs), style="dim")
            continue
        c: Check = m.checks[i]
        mark = ""
        style = None
        if i == m.verdict.converged_at_check:
            mark, style = "✔", "green"
        elif c.below_threshold:
            mark = "▼"
        elif i == m.verdict.min_gap_check:
            mark, style = "◆", "yellow"
        kind = _KIND.get(c.kind, c.kind)
        if not c.decisive:
            style = style or "dim"  # re-queried exactly in the same pass
        tb.add_row(str(i + 1), _ms(c.t_ms), kind, "-" if c.pass_no is None else str(c.pass_no),
                   _mib(c.pending_bytes), _mib(c.threshold_bytes), _mib(c.gap_bytes), mark,
                   *[_mib(c.devices.get(d)) for d in devs], style=style)
    return tb


def devices_table(m: Migration) -> Table:
    tb = Table(title="Devices: bytes read in pre-copy / stop-copy, initial and dirty pending, "
               "stop-copy size (MiB); downtime on save / load (ms)", box=box.SIMPLE_HEAD,
               title_justify="left", pad_edge=False)
    tb.add_column("DEVICE", overflow="fold", min_width=12)
    tb.add_column("KIND", no_wrap=True)
    for col in ("PRE", "STOP", "INIT", "DIRTY", "SIZE", "DOWN", "LOAD"):
        tb.add_column(col, justify="right", no_wrap=True)
    others = sorted((d for d in m.devices if d.kind == "other"), key=lambda d: -(d.downtime_ms or 0))
    for d in [d for d in m.devices if d.kind != "other"] + others[:MAX_OTHER]:
        name = d.name + (f" [{d.idstr}]" if d.idstr and d.idstr not in (d.name, "ram") else "")
        if d.side in ("source", "destination") and d.kind == "vfio":
            name += " (dst)" if d.side == "destination" else " (src)"
        # sizes of a few bytes (mtty) would all print as 0.0 MiB
        small = d.kind == "vfio" and max(d.precopy_bytes or 0, d.stopcopy_bytes or 0,
                                         d.stopcopy_size_bytes or 0, d.initial_pending_bytes or 0) < (1 << 16)
        fmt = (lambda v: "-" if v is None else f"{v} B") if small else _mib
        stop = fmt(d.stopcopy_bytes)
        if d.stopcopy_bytes is None and d.stopcopy_thread_ms is not None:
            stop = "multifd"  # no blocks traced; the thread's time is in the JSON
        tb.add_row(escape(name), d.kind, fmt(d.precopy_bytes), stop, fmt(d.initial_pending_bytes),
                   fmt(d.dirty_pending_bytes), fmt(d.stopcopy_size_bytes), _ms(d.downtime_ms, 2),
                   _ms(d.load_ms, 2))
    rest = others[MAX_OTHER:]
    if rest:
        tb.add_row(f"+{len(rest)} more", "other", "", "", "", "", "",
                   _ms(sum(d.downtime_ms or 0 for d in rest), 2),
                   _ms(sum(d.load_ms or 0 for d in rest), 2))
    return tb


def data_fd_table(m: Migration) -> Table | None:
    """BPF on each VFIO device's migration data fd: reads on the source, writes on the
    destination, bytes per device state, latency; None when no BPF data was recorded."""
    devs = [d for d in m.devices if d.read_calls or d.write_calls]
    if not devs:
        return None
    tb = Table(title="VFIO data fd (BPF): calls, bytes per device state, time in the call (ms), "
               "latency p50 / max (µs)", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    tb.add_column("DEVICE", overflow="fold", min_width=12)
    for col, just in (("OP", "left"), ("CALLS", "right"), ("BYTES BY STATE", "left"), ("MS", "right"),
                      ("P50", "right"), ("MAX", "right")):
        tb.add_column(col, justify=just, no_wrap=col != "BYTES BY STATE")
    for d in devs:
        name = d.name + (" = " + ", ".join(d.aliases) if d.aliases else "")
        phases = " ".join(f"{k} {v}" for k, v in d.bytes_by_phase.items())
        for op, calls, ms, p50, mx in (("read", d.read_calls, d.read_ms, d.read_p50_us, d.read_max_us),
                                       ("write", d.write_calls, d.write_ms, d.write_p50_us, d.write_max_us)):
            if calls:
                tb.add_row(escape(name), op, str(calls), phases, _ms(ms, 2), _ms(p50), _ms(mx))
    return tb


def rounds_table(m: Migration) -> Table | None:
    """Each VFIO device's pre-copy rounds (kernel view); None when no device has any."""
    devs = [d for d in m.devices if d.rounds]
    if not devs:
        return None
    tb = Table(title="Pre-copy rounds: data-fd reads from fresh data to its end, bytes per round "
               "(pending PRECOPY_INFO reported before it)", box=box.SIMPLE_HEAD, title_justify="left",
               pad_edge=False)
    tb.add_column("DEVICE", overflow="fold", min_width=12)
    tb.add_column("ROUNDS", justify="right", no_wrap=True)
    tb.add_column("BYTES", justify="right", no_wrap=True)
    tb.add_column("PER ROUND", overflow="fold")
    for d in devs:
        shown = [f"{r.bytes}" + (f" ({r.pending_bytes})" if r.pending_bytes is not None else "")
                 for r in d.rounds[:MAX_ROUNDS]]
        rest = d.rounds[MAX_ROUNDS:]
        if rest:
            shown.append(f"+{len(rest)} more: {sum(r.bytes for r in rest)}")
        tb.add_row(escape(d.name), str(len(d.rounds)), str(sum(r.bytes for r in d.rounds)), ", ".join(shown))
    return tb


def _norm_state(s: str) -> str:
    return s.upper().replace("-", "_")


def timeline(m: Migration) -> Table:
    rows: list[tuple[float | None, str, str]] = []
    for s in m.states:
        rows.append((s.t_ms, s.side, f"migration {s.state}"))
    for d in m.devices:
        confirmed = [s for s in d.states if s.confirmed] or list(d.states)
        # the same change seen by the trace, BPF and QMP is one line naming its witnesses
        merged: list[tuple[Any, list[str]]] = []
        for s in confirmed:
            prev = merged[-1][0] if merged else None
            if (prev is not None and _norm_state(prev.state) == _norm_state(s.state) and prev.side == s.side
                    and s.origin not in merged[-1][1]):
                merged[-1][1].append(s.origin)
            else:
                merged.append((s, [s.origin]))
        for s, origins in merged:
            tag = "" if s.confirmed else " (requested)"
            seen = "" if origins == ["qemu-log"] else " [" + ", ".join(origins) + "]"
            rows.append((s.t_ms, s.side, f"{d.name} -> {s.state}{tag}{seen}"))
    for mk in m.markers:
        rows.append((mk.get("t_ms"), "lab", str(mk.get("label"))))
    if m.switchover_ms is not None:
        rows.append((m.switchover_ms, "source", "switch-over: the devices leave PRE_COPY" if m.view == "kernel"
                     else "switch-over decided (pending below threshold)"))
    if m.switchover_approved_ms is not None:
        rows.append((m.switchover_approved_ms, "destination", "switch-over approved (switchover-ack)"))
    if m.switchover_ack_ms is not None:
        rows.append((m.switchover_ack_ms, "source", "switchover ACK received"))
    if all(r[0] is not None for r in rows):
        rows.sort(key=lambda r: r[0])
    tb = Table(title="Timeline", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    tb.add_column("T(ms)", justify="right")
    tb.add_column("SIDE")
    tb.add_column("EVENT")
    for t, side, what in rows:
        tb.add_row(_ms(t), side, escape(what))  # "[bpf, qmp]" is text, not rich markup
    return tb


CURVE_ROWS = 10  # plot rows of the convergence curve


def curve(m: Migration, width: int = PIPED_WIDTH) -> Group | None:
    """The convergence curve over ``width`` columns, as the TUI draws it but for any
    terminal or none: pending (solid) against the threshold (dashed) per check, log scale.
    None under two checks, or with no room."""
    if len(m.checks) < 2 or width < Y_LABEL_W + 20:
        return None
    c = draw(m, width, CURVE_ROWS, x_max=x_range(m), devices=False)
    if m.view == "kernel":
        what = "VFIO pending (PRECOPY_INFO), no threshold"
    else:
        what = "pending solid, threshold dashed"
    marks = "S switch-over, P setting changed, ╵ pass" if m.checks[0].t_ms is not None \
        else "x: check number (no timestamps)"
    return Group(Text(f"Convergence, log scale: {what}; {marks}", style="bold"), *c.rows)


def render_migration(m: Migration, all_checks: bool = False, width: int = PIPED_WIDTH) -> Group:
    parts: list[Any] = [header(m)]
    cv = curve(m, width)
    if cv is not None:
        parts.append(cv)
    if m.checks:
        parts.append(checks_table(m, all_checks))
    parts.append(devices_table(m))
    rt = rounds_table(m)
    if rt is not None:
        parts.append(rt)
    io = data_fd_table(m)
    if io is not None:
        parts.append(io)
    parts.append(timeline(m))
    v = Text("Verdict: ", style="bold")
    v.append(m.verdict.summary)
    parts.append(v)
    if m.findings:
        parts.append(health(m))
    return Group(*parts)


def health(m: Migration) -> Text:
    """Device health beside the verdict: each finding and the lines it rests on."""
    t = Text("Device health:", style="bold")
    for f in m.findings:
        t.append("\n  ")
        t.append(f.severity, style="yellow" if f.severity == "warning" else "cyan")
        t.append(f" {f.kind}: {f.message}")
        for e in f.evidence:
            t.append(f"\n      {e}", style="dim")
    return t


def render(report: Report, console: Console, *, all_checks: bool = False) -> None:
    """Print the whole report: one section per migration, then the input summary."""
    if not report.migrations:
        console.print("No migration found.")
    for i, m in enumerate(report.migrations):
        if i:
            console.print(Rule(), width=drawing_width(console))
        console.print(render_migration(m, all_checks, drawing_width(console)))
    console.print(Text(f"{report.events} events from {', '.join(report.inputs) or 'input'}; "
                       f"{report.malformed_lines} malformed, {report.skipped_lines} skipped lines",
                       style="dim"))
