"""migprof model: the event table -> migrations, checks, passes, devices, verdict (pure pandas)."""

from profiler.model.build import build_report

__all__ = ["build_report"]
