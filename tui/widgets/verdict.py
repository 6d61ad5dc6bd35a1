"""The verdict panel: converging or not, the gap, rates, and what would close the gap."""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from tui.fmt import fmt_bytes, fmt_ms, fmt_rate
from tui.widgets.base import AutoHeightPanel, Shown
from tui.widgets.header import verdict_line

LABEL_W = 16  # a fixed label column (with its gap): long values wrap, never squeeze it


def render_verdict(shown: Shown) -> RenderableType:
    mig = shown.mig
    if mig is None:
        return Text("no migration yet", "dim")
    v = mig.verdict
    t = Table.grid(expand=True)
    t.add_column(style="dim", no_wrap=True, width=LABEL_W, overflow="ellipsis")
    t.add_column(ratio=1, overflow="fold")
    in_flight = mig.outcome == "incomplete" and shown.view.status == "running"
    line = verdict_line(mig, in_flight)
    line.no_wrap = False
    t.add_row("verdict", line)
    if v.converged_at_check is not None:
        t.add_row("converged at", f"check {v.converged_at_check + 1} of {len(mig.checks)}")
    if v.min_gap_bytes is not None:
        at = f" (check {v.min_gap_check + 1})" if v.min_gap_check is not None else ""
        t.add_row("smallest gap", fmt_bytes(v.min_gap_bytes) + at)
    t.add_row("dirty rate", fmt_rate(v.dirty_rate_bytes_per_s))
    t.add_row("bandwidth", fmt_rate(v.bandwidth_bytes_per_s))
    t.add_row("downtime limit", fmt_ms(mig.downtime_limit_ms))
    unresolved = v.converged is not True  # once it converged there is no gap left to close
    if unresolved and v.needed_downtime_limit_ms is not None:
        t.add_row(
            "would close", Text(f"downtime-limit ≥ {fmt_ms(v.needed_downtime_limit_ms)}", "yellow")
        )
    if unresolved and v.needed_bandwidth_bytes_per_s is not None:
        t.add_row(
            "or" if unresolved and v.needed_downtime_limit_ms is not None else "would close",
            Text(f"bandwidth ≥ {fmt_rate(v.needed_bandwidth_bytes_per_s)}", "yellow"),
        )
    if v.dominant_device:
        t.add_row("holds it up", Text(v.dominant_device, "bold"))
    if mig.view == "kernel":
        t.add_row("view", Text("kernel only: BPF on the VFIO uAPI, no RAM, no threshold", "bold yellow"))
        t.add_row("rounds", ", ".join(f"{d.name} {len(d.rounds)}" for d in mig.devices if d.rounds) or "-")
    else:
        t.add_row("checks/passes", f"{len(mig.checks)} / {mig.dirty_syncs}")
    if mig.transferred_bytes is not None:
        t.add_row("transferred", fmt_bytes(mig.transferred_bytes))
    if mig.qemu_version:
        t.add_row("QEMU", mig.qemu_version)
    if mig.error:
        t.add_row("error", Text(mig.error, "bold red"))
    return t


class VerdictPanel(AutoHeightPanel):
    DEFAULT_CSS = """
    VerdictPanel { height: auto; }
    """

    def render(self) -> RenderableType:
        if self.shown is None:
            return Text("")
        return render_verdict(self.shown)
