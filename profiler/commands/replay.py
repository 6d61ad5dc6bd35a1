"""`migprof replay`: replay a recording, QEMU trace logs or lab run directories in the TUI."""

from __future__ import annotations

import argparse
from pathlib import Path

from profiler.commands.options import ReplayConfig
from profiler.errors import InputError

EXAMPLES = """examples:
  migprof replay run.mpr                 # a recording, played from the start at 1x
  migprof replay src.log dst.log -s 10   # QEMU trace logs of both sides, 10x
  migprof replay tests/data/real/precopy-128m --at end   # a lab run dir, show its end
  migprof replay run.mpr --at 2.5s --paused              # open paused at 2.5 s

keys: space play/pause, +/- speed, . , step by check, > < step by pass,
      g jump to a time, l log scale, / filter events, ? help, q quit
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "replay",
        help="Replay a recording or traces in the TUI",
        description="Replay a recording, QEMU trace logs or lab run directories in the TUI: "
        "the same panels as 'migprof live', with play/pause, speed, step by check or pass "
        "and a seek bar.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="recording, QEMU trace log, or lab run directory"
    )
    p.add_argument(
        "-s",
        "--speed",
        type=float,
        default=1.0,
        help="replay speed factor (default 1; 0.1 to 1000)",
    )
    p.add_argument(
        "--at",
        default="start",
        metavar="TIME",
        help="open at 'start' (default), 'end', or a time from the first event "
        "(1.5, 250ms); opening elsewhere than the start pauses",
    )
    p.add_argument("--paused", action="store_true", help="open paused")
    return p


def run(args: argparse.Namespace) -> int:
    return run_config(ReplayConfig.from_args(args))


def run_config(cfg: ReplayConfig) -> int:
    from profiler import pipeline
    from tui.app import run_replay
    from tui.feed import ReplayFeed, default_build
    from tui.view import HealthItem

    loaded = pipeline.load(list(cfg.inputs))
    if not len(loaded.events):
        raise InputError(cfg.inputs[0], "no events found in the input")
    paths = [str(i.get("path", i)) if isinstance(i, dict) else str(i) for i in loaded.inputs]
    build = default_build(
        inputs=tuple(paths),
        malformed=loaded.malformed,
        skipped=loaded.skipped,
        warnings=tuple(loaded.warnings),
        meta=loaded.meta,
    )
    health = [HealthItem("inputs", ", ".join(Path(p).name for p in paths))]
    if loaded.malformed or loaded.skipped:
        health.append(
            HealthItem(
                "input lines",
                f"{loaded.malformed} malformed, {loaded.skipped} skipped",
                "warn" if loaded.malformed else "ok",
            )
        )
    names = " ".join(Path(str(i)).name for i in cfg.inputs)
    feed = ReplayFeed(
        loaded.events,
        title=f"migprof replay {names}",
        build=build,
        speed=cfg.speed,
        playing=not cfg.paused and cfg.at == "start",
        at=cfg.at,
        health=health,
        notices=list(loaded.warnings)[:3],
    )
    return run_replay(feed, debug=cfg.debug)
