"""`migprof demo`: run a lab migration and profile it live, ending with the report."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from profiler.commands.options import (
    LabRunConfig,
    add_lab_args,
    attach_hint,
    not_a_terminal,
    quiet_qmp_logs,
)

EXAMPLES = """examples:
  migprof demo                              # 'converges' on QEMU 7.2, TUI on a terminal
  migprof demo --no-tui                     # a line per second, then the report
  migprof demo --scenario never-converges   # watch pending stay above the threshold
  migprof demo --scenario bandwidth-change --qemu 10.0
  migprof demo --no-tui --record run.parquet  # also keep every event in a recording
  migprof demo --no-tui --libvirt           # the migration under two libvirt daemons
"""


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
    p.add_argument("--libvirt", action="store_true",
                   help="run it under libvirt (two daemons, virsh migrate --live --p2p, both "
                   "sides followed through libvirt; docs/libvirt.md)")
    return p


def run(args: argparse.Namespace) -> int:
    return run_config(LabRunConfig.from_args(args))


def run_config(cfg: LabRunConfig) -> int:
    from profiler.lab.follow import (
        finish_recording,
        lab_session,
        open_recording,
        recording_meta,
    )
    from profiler.lab.run import Lab, run_guarded
    from profiler.session import RecordingSink

    quiet_qmp_logs(cfg.debug)
    if cfg.dataset is not None:
        cfg.dataset.check()
    sc, out = cfg.lab.scenario, cfg.lab.out
    under = " under libvirt" if cfg.libvirt else ""
    print(f"migprof demo: scenario {sc.name} ({sc.description}){under}; run directory {out}",
          file=sys.stderr)
    tui = _tui() if not_a_terminal() is None and cfg.tui and not cfg.json else None
    if tui is None and not cfg.libvirt:
        print(attach_hint(out), file=sys.stderr)
    make_lab: Any = Lab
    if cfg.libvirt:
        from profiler.lab.libvirt import LibvirtLab

        make_lab = LibvirtLab
    writer = None
    try:
        with run_guarded(), make_lab(cfg.lab) as lab:
            if cfg.libvirt and tui is None:
                from profiler.lab.libvirt import follow_hint

                print(follow_hint(lab, "demo"), file=sys.stderr)
            sinks: list[Any] = []
            if cfg.record:
                writer = open_recording(cfg.record, recording_meta(lab, "demo"))
                sinks.append(RecordingSink(writer, close_writer=False))
            if tui is None and not cfg.json:
                from profiler.views.lines import StatusLines

                sinks.insert(0, StatusLines(sys.stdout, cfg.interval_s))
            session, driver = lab_session(lab, sinks)
            if tui is None:
                session.run()
                rc = 0
            else:
                rc = tui(session, title=f"migprof demo: {sc.name}")
                if driver.worker.is_alive():
                    print("migprof demo: the lab run goes on to its end (Ctrl-C stops it)...",
                          file=sys.stderr)
            driver.result()
    finally:
        if writer is not None:
            finish_recording(writer, out)  # run.json: also an interrupted run's
            path = writer.close()
            print(f"migprof demo: recording {path} ({writer.rows_written} events)", file=sys.stderr)
    rep_rc = _final_report(out, cfg)
    if writer is not None:
        from profiler.commands.recorded import finish

        rc = finish(writer, cfg.dataset, rc)
    return rc or rep_rc


def _tui():
    """The TUI entry point, or None (then the line view) when the TUI is not installed."""
    try:
        from tui.app import run_live
    except ImportError as e:
        print(f"migprof: no TUI ({e}); line view", file=sys.stderr)
        return None
    return run_live


def _final_report(run_dir: Any, cfg: LabRunConfig) -> int:
    """The report of the finished run, read back from its directory like `migprof report`."""
    from profiler.model.build import build_report
    from profiler.pipeline import load
    from profiler.views import report as view
    from profiler.views.console import output_console

    loaded = load([str(run_dir)])
    rep = build_report(loaded.events, inputs=loaded.meta.get("inputs", ()),
                       malformed=loaded.malformed, skipped=loaded.skipped,
                       warnings=loaded.warnings, meta=loaded.meta)
    if cfg.json:
        print(json.dumps(view.to_json(rep), indent=2))
    else:
        print(file=sys.stdout)
        view.render(rep, output_console(sys.stdout), all_checks=cfg.all_checks)
        if "libvirt_jobinfo" in loaded.meta:  # --libvirt: libvirt's own figures beside ours
            from profiler.views.libvirt import beside

            print(beside(rep, loaded.events, loaded.meta["libvirt_jobinfo"]))
        print(f"run directory: {run_dir}  (migprof report {run_dir})", file=sys.stderr)
    return 0
