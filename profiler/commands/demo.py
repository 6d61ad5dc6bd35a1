"""`migprof demo`: run a lab migration and profile it live, ending with the report."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import numpy as np
import pandas as pd

from profiler import events as ev
from profiler.commands.lab import add_lab_args, attach_hint, config_from_args, quiet_qmp_logs

EXAMPLES = """examples:
  migprof demo                              # 'converges' on QEMU 7.2, TUI on a terminal
  migprof demo --no-tui                     # a line per second, then the report
  migprof demo --scenario never-converges   # watch pending stay above the threshold
  migprof demo --scenario bandwidth-change --qemu 10.0
  migprof demo --no-tui --record run.parquet  # also keep every event in a recording
"""

MiB = 1024 * 1024


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="Run a lab migration and profile it live",
        description="Run a real migration in the lab (see `migprof lab`) and profile it live "
        "from its trace logs, QMP and sock_diag; the final report follows.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_lab_args(p)
    p.add_argument("--no-tui", action="store_true", help="line view even on a terminal")
    p.add_argument("-i", "--interval", type=float, default=1.0, help="line view period, s")
    p.add_argument("--all-checks", action="store_true", help="list every pre-copy check")
    p.add_argument("-j", "--json", action="store_true", help="final report as JSON")
    return p


class LineView:
    """bcc-style live lines: one per interval, from the events seen so far (source side)."""

    HEADER = f"{'TIME(s)':>7} {'STATE':<10} {'PASS':>4} {'PEND(MiB)':>9} {'THRESH(MiB)':>11} {'XFER(MiB)':>9} {'MiB/s':>7}"

    def __init__(self, out=sys.stdout, interval: float = 1.0):
        self.out = out
        self.interval = interval
        self.state = "none"
        self.passes: int | None = None
        self.pending: int | None = None
        self.threshold: int | None = None
        self.xfer: int | None = None
        self.mibps: float | None = None
        self.t0: float | None = None
        self.next = time.monotonic()
        self.last = 0.0
        self.printed = False

    def feed(self, df: pd.DataFrame) -> None:
        """Take a batch and print a line when one is due."""
        self.feed_events(df)
        self.tick()

    def feed_events(self, df: pd.DataFrame) -> None:
        if len(df):
            self._update(df)

    def tick(self) -> None:
        """Print a line if one is due (called on every heartbeat)."""
        now = time.monotonic()
        if now >= self.next and self.t0 is not None:
            self.print_line(now)
            self.next = now + self.interval

    WANTED = (
        ev.QMP_QUERY_MIGRATE,
        ev.QMP_MIGRATION,
        "migrate_pending",
        "migrate_pending_estimate",
        "migrate_pending_exact",
        "migrate_transferred",
    )

    PENDING = ("migrate_pending", "migrate_pending_estimate", "migrate_pending_exact")

    def _update(self, df: pd.DataFrame) -> None:
        # the view shows only the latest values: find, on the category codes, the last
        # source row of each kind it reads, and read those few cells (no column copies)
        evc, side = df["event"], df["side"]
        if not isinstance(evc.dtype, pd.CategoricalDtype) or not isinstance(
            side.dtype, pd.CategoricalDtype
        ):
            df = ev.conform(df)
            evc, side = df["event"], df["side"]
        scats = side.cat.categories
        if ev.Side.SOURCE not in scats:
            return
        src = side.cat.codes.to_numpy() == scats.get_loc(ev.Side.SOURCE)
        cats, codes = evc.cat.categories, evc.cat.codes.to_numpy()

        def rows(names: tuple[str, ...]) -> np.ndarray:
            want = [cats.get_loc(n) for n in names if n in cats]
            if not want:
                return np.empty(0, np.intp)
            return np.flatnonzero(np.isin(codes, want) & src)

        qm, mig = rows((ev.QMP_QUERY_MIGRATE,)), rows((ev.QMP_MIGRATION,))
        with_ram = qm[df["bytes"].notna().to_numpy()[qm]] if len(qm) else qm
        if len(with_ram):  # the last reply with counters (a cancelled one has none)
            i = with_ram[-1]
            syncs, nbytes, detail = (df[c].iat[i] for c in ("dirty_syncs", "bytes", "detail"))
            if syncs is not pd.NA:
                self.passes = int(syncs)
            if nbytes is not pd.NA:
                self.xfer = int(nbytes)
            if isinstance(detail, str):
                ram = json.loads(detail).get("ram") or {}
                if "mbps" in ram:
                    self.mibps = ram["mbps"] * 1e6 / 8 / MiB
        last_state = max((a[-1] for a in (qm, mig) if len(a)), default=None)
        if last_state is not None:
            state = df["state"].iat[last_state]
            self.state = state if isinstance(state, str) else self.state
        pend = rows(self.PENDING)
        if len(pend):
            have = pend[df["bytes"].notna().to_numpy()[pend]]
            if len(have):
                self.pending = int(df["bytes"].iat[have[-1]])
            trace = rows((*self.PENDING, "migrate_transferred"))
            have = trace[df["threshold_bytes"].notna().to_numpy()[trace]]
            if len(have):
                self.threshold = int(df["threshold_bytes"].iat[have[-1]])
        elif len(tr := rows(("migrate_transferred",))):
            have = tr[df["threshold_bytes"].notna().to_numpy()[tr]]
            if len(have):
                self.threshold = int(df["threshold_bytes"].iat[have[-1]])
        if self.t0 is None and self.state != "none":
            self.t0 = time.monotonic()

    def print_line(self, now: float | None = None) -> None:
        now = now or time.monotonic()
        self.last = now
        if not self.printed:
            print(self.HEADER, file=self.out)
            self.printed = True

        def mib(v: int | None) -> str:
            return f"{v / MiB:.1f}" if v is not None else "-"

        t = now - self.t0 if self.t0 is not None else 0.0
        rate = f"{self.mibps:.1f}" if self.mibps is not None else "-"
        print(
            f"{t:7.1f} {self.state:<10} {self.passes if self.passes is not None else '-':>4} "
            f"{mib(self.pending):>9} {mib(self.threshold):>11} {mib(self.xfer):>9} {rate:>7}",
            file=self.out,
            flush=True,
        )


def run(args: argparse.Namespace) -> int:
    from profiler.lab.follow import finish_recording, follow_run, recording_meta
    from profiler.lab.run import Lab, run_guarded

    quiet_qmp_logs(args)
    cfg = config_from_args(args)
    use_tui = sys.stdout.isatty() and not args.no_tui and not args.json
    print(
        f"migprof demo: scenario {cfg.scenario.name} ({cfg.scenario.description}); "
        f"run directory {cfg.out}",
        file=sys.stderr,
    )
    if not use_tui:
        print(attach_hint(cfg.out), file=sys.stderr)
    writer = None
    try:
        with run_guarded(), Lab(cfg) as lab:
            if args.record:
                writer = open_recording(args.record, recording_meta(lab, "demo"))
            tui = _try_tui() if use_tui else None
            if tui is not None:
                rc = _run_tui(lab, tui, writer, f"migprof demo: {cfg.scenario.name}")
            else:
                view = LineView(sys.stdout, args.interval) if not args.json else None
                sinks = [f for f in (view and view.feed_events, writer and writer.write) if f]

                def on_batch(batch: pd.DataFrame) -> None:
                    for sink in sinks:
                        sink(batch)

                result = follow_run(lab, on_batch, view.tick if view is not None else None)
                if view is not None and view.t0 is not None and time.monotonic() - view.last > 0.3:
                    view.print_line()
                if "error" in result:
                    raise result["error"]
                rc = 0
    finally:
        if writer is not None:
            finish_recording(writer, cfg.out)  # run.json: also an interrupted run's
            path = writer.close()
            print(f"migprof demo: recording {path} ({writer.rows_written} events)", file=sys.stderr)
    rep_rc = _final_report(cfg.out, args)
    return rc or rep_rc


def _run_tui(lab: Any, tui: Any, writer: Any, title: str) -> int:
    """The TUI on the live stream while the lab runs in a worker thread."""
    from profiler.lab.follow import HEARTBEAT_S, lab_sources
    from profiler.stream import MergedSource

    result: dict[str, Any] = {}

    def drive() -> None:
        try:
            result["run"] = lab.run()
        except BaseException as e:  # reported by the main thread
            result["error"] = e
        finally:
            lab.close()  # stops QEMU; the stream ends once drained

    merged = MergedSource(lab_sources(lab), poll_s=HEARTBEAT_S)
    worker = threading.Thread(target=drive, name="lab-run", daemon=True)
    worker.start()
    rc = tui(merged, title=title, record=writer)
    if worker.is_alive():
        print("migprof demo: the lab run goes on to its end (Ctrl-C stops it)...", file=sys.stderr)
    worker.join()
    if "error" in result:
        raise result["error"]
    return rc


def open_recording(path: Any, meta: dict[str, Any]) -> Any:
    """A ``RecordingWriter`` for ``--record`` (shared by `lab` and `demo`).

    Flushed every 0.9 s rather than the writer's default 0.5 s: the lab's streams
    deliver about once a second (``profiler.lab.follow``), a flush costs a few ms of
    pandas/Arrow work, and a killed run still leaves a file at most ~1 s behind.
    """
    from profiler.store import RecordingWriter

    return RecordingWriter(path, meta=meta, flush_interval_s=0.9)


def _try_tui():
    """The TUI entry point, or None (then the line view) when the TUI is not installed."""
    try:
        from tui.app import run_live
    except ImportError as e:
        print(f"migprof: no TUI ({e}); line view", file=sys.stderr)
        return None
    return run_live


def _final_report(run_dir: Any, args: argparse.Namespace) -> int:
    """The report of the finished run, read back from its directory like `migprof report`."""
    from rich.console import Console

    from profiler.model.build import build_report
    from profiler.pipeline import load
    from profiler.views import report as view

    loaded = load([str(run_dir)])
    rep = build_report(
        loaded.events,
        inputs=loaded.meta.get("inputs", ()),
        malformed=loaded.malformed,
        skipped=loaded.skipped,
        warnings=loaded.warnings,
        meta=loaded.meta,
    )
    if args.json:
        print(json.dumps(view.to_json(rep), indent=2))
    else:
        print(file=sys.stdout)
        view.render(rep, Console(), all_checks=args.all_checks)
        print(f"run directory: {run_dir}  (migprof report {run_dir})", file=sys.stderr)
    return 0
