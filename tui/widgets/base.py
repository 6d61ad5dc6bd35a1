"""What every panel receives from the screen (``Shown``) and the panel base class."""

from __future__ import annotations

from dataclasses import dataclass

from textual.reactive import reactive
from textual.widget import Widget

from profiler.model.results import Migration
from tui.view import View


@dataclass(frozen=True, slots=True)
class Shown:
    """One view plus the migration the user selected (and its whole-input twin in replay)."""

    view: View
    mig: Migration | None
    full_mig: Migration | None
    log_scale: bool = True
    selected: int | None = None  # None: follow the latest migration


class Panel(Widget):
    """A panel redrawn from ``shown``; the screen assigns it on every model update."""

    shown: reactive[Shown | None] = reactive(None, always_update=True)


class AutoHeightPanel(Panel):
    """A panel whose height follows its content: a new ``shown`` also redoes the layout."""

    def watch_shown(self, old: Shown | None, new: Shown | None) -> None:
        self.refresh(layout=True)
