"""migprof model: the event table -> migrations, checks, passes, devices, verdict (pure pandas)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from profiler.model.build import build_report

__all__ = ["build_report"]


def __getattr__(name: str):
    # the event-name groups (model.names) load without the model and pandas: `report` reads
    # them before parsing, while pandas is still importing (profiler.deferred)
    if name == "build_report":
        from profiler.model.build import build_report

        return build_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
