"""The collector's own health: events, lost events, sources active, model update time, notices."""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from tui.widgets.base import AutoHeightPanel

LEVEL_STYLE = {"ok": "", "warn": "yellow", "error": "bold red"}

LABEL_W = 16  # a fixed label column (with its gap): long values wrap, never squeeze it


class HealthPanel(AutoHeightPanel):
    DEFAULT_CSS = """
    HealthPanel { height: auto; }
    """

    def render(self) -> RenderableType:
        s = self.shown
        if s is None:
            return Text("")
        v = s.view
        t = Table.grid(expand=True)
        t.add_column(style="dim", no_wrap=True, width=LABEL_W, overflow="ellipsis")
        t.add_column(ratio=1, overflow="fold")
        t.add_row("mode", f"{v.mode} ({v.status})")
        for item in v.health:
            t.add_row(item.label, Text(item.value, LEVEL_STYLE.get(item.level, "")))
        if v.report is not None:
            r = v.report
            if r.malformed_lines or r.skipped_lines:
                t.add_row(
                    "input lines",
                    Text(
                        f"{r.malformed_lines} malformed, {r.skipped_lines} skipped",
                        "yellow" if r.malformed_lines else "",
                    ),
                )
            for w in r.warnings[-5:]:
                t.add_row("warning", Text(w, "yellow"))
        for n in v.notices:
            t.add_row("notice", Text(n, "yellow"))
        if v.error:
            t.add_row("error", Text(v.error, "bold red"))
        return t
