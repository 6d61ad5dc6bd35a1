"""Follow a lab run live: its QMP/sock_diag/mark rows and both trace logs, as one session.

``follow_run`` plays the lab's scenario in a worker thread while a ``profiler.session``
feeds every batch (lab rows and the parsed lines of both QEMU trace logs) to sinks; once
QEMU has exited the logs are read to their end, so nothing the run logged is missed.
`migprof demo` uses it for its live view, and `--record` on `lab` and `demo` for the
recording. ``open_recording`` / ``recording_meta`` / ``finish_recording`` make that
recording.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from profiler.session import BaseSink, Session, Signals, Sink
from profiler.sources.qemu_tail import QemuLogSource

# The trace logs are tailed in big, infrequent batches: a parse costs ~1 ms however few
# lines it gets (building the frame dominates), a second of lab log is a few hundred
# lines, and the live views refresh once a second.
TAIL_S = 1.0
# the merged stream's heartbeat when no events come (the line view's clock)
HEARTBEAT_S = 0.2
# after QEMU exits, how long the stream may still deliver before it is stopped
DRAIN_S = 0.5


def lab_sources(lab: Any, tail_s: float = TAIL_S) -> list:
    """The lab's own row stream and both trace logs, tailed to their ends (QEMU exits first).

    ``lab``: a ``profiler.lab.run.Lab`` or a ``profiler.lab.libvirt.LibvirtLab`` (its rows:
    what both sides' libvirt sources saw; its logs: libvirt's logs of each QEMU's stderr)."""
    logs = lab.trace_logs()
    return [lab.stream, *(QemuLogSource(logs[side], side, poll_s=tail_s, drain=True)
                          for side in ("source", "destination"))]


class LabDriver(BaseSink):
    """Runs ``lab.run()`` in a worker thread from the moment the session is attached.

    ``done()`` is true once the run is over and QEMU has gone (the logs are complete);
    ``result()`` joins the worker and returns the RunResult or raises what the run raised.
    """

    def __init__(self, lab: Any):
        self.lab = lab
        self._result: dict[str, Any] = {}
        self.worker = threading.Thread(target=self._drive, name="lab-run", daemon=True)

    def _drive(self) -> None:
        try:
            self._result["run"] = self.lab.run()
        except BaseException as e:  # raised again on the caller's thread by result()
            self._result["error"] = e
        finally:
            self.lab.close()  # stops QEMU; the stream ends once drained

    def start(self, health: Mapping[str, Any]) -> None:
        self.worker.start()

    def done(self) -> bool:
        return (self.worker.ident is not None and not self.worker.is_alive()
                and self.lab.stream.finished.is_set())

    def result(self) -> Any:
        if self.worker.ident is not None:
            self.worker.join()
        if "error" in self._result:
            raise self._result["error"]
        return self._result.get("run")


def lab_session(lab: Any, sinks: Sequence[Sink], tail_s: float = TAIL_S) -> tuple[Session, LabDriver]:
    """A session that runs ``lab``'s scenario and feeds its events to ``sinks``.

    Ctrl-C / SIGTERM unwind as KeyboardInterrupt (after the sinks are flushed), so the
    lab's own exit path stops QEMU and writes what was captured.
    """
    driver = LabDriver(lab)
    session = Session(lab_sources(lab, tail_s), [driver, *sinks], done=driver.done,
                      drain_s=DRAIN_S, poll_s=HEARTBEAT_S, signals=Signals.RAISE)
    return session, driver


def follow_run(lab: Any, sinks: Sequence[Sink], tail_s: float = TAIL_S) -> Any:
    """Run ``lab``'s scenario while its events stream to ``sinks``; returns its RunResult.

    The lab is closed (QEMU stopped) before this returns.
    """
    session, driver = lab_session(lab, sinks, tail_s)
    session.run()
    return driver.result()


# ---------------------------------------------------------------- recordings


def open_recording(path: Any, meta: dict[str, Any]) -> Any:
    """A ``RecordingWriter`` for ``--record`` (`lab` and `demo`).

    Flushed every 0.9 s rather than the writer's default 0.5 s: the lab's streams
    deliver about once a second (``TAIL_S``), a flush costs a few ms of pandas/Arrow
    work, and a killed run still leaves a file at most ~1 s behind.
    """
    from profiler.errors import MigprofError
    from profiler.store import RecordingWriter

    try:
        return RecordingWriter(path, meta=meta, flush_interval_s=0.9)
    except OSError as e:
        raise MigprofError(f"{path}: cannot write the recording: {e.strerror or e}") from None


def clock_offsets() -> dict[str, Any]:
    """Every lab clock is the host's CLOCK_REALTIME: QEMU's ``-msg timestamp=on`` log
    prefix, QMP event timestamps, and the stamps migprof puts on polls, marks and
    sock_diag samples. Both QEMUs run on this host, so every offset is zero."""
    return {
        "source_log_to_realtime_ns": 0,
        "destination_log_to_realtime_ns": 0,
        "qmp_to_realtime_ns": 0,
        "uncertainty_ns": 0,
        "basis": "one host, one CLOCK_REALTIME (migprof lab)",
    }


def recording_meta(lab: Any, command: str) -> dict[str, Any]:
    """Metadata a lab recording starts with (the rest arrives via ``finish_recording``)."""
    sc = lab.sc
    libvirt = getattr(lab, "libvirt_info", None)
    sources = (["libvirt:source", "libvirt:destination", "lab"] if libvirt else
               ["qmp", "lab", "sockdiag"]) + ["qemu-log:source", "qemu-log:destination"]
    return {
        "lab": {
            "command": command,
            "scenario": sc.name,
            "description": sc.description,
            "expected": sc.expect,
            "net": lab.cfg.net,
            "accel": lab.accel,
            "uri": lab.uri,
            "run_dir": str(lab.run_dir),
            "guest": sc.guest_append(),
        },
        "scenario": sc.name,
        "qemu_version": lab.binary.short if lab.binary else None,
        "qemu_path": str(lab.binary.path) if lab.binary else None,
        "migration_params_requested": dict(sc.params),
        "clock_offsets": clock_offsets(),
        "sources": sources,
        **({"libvirt": libvirt()} if libvirt else {}),
    }


def finish_recording(writer: Any, run_dir: Path) -> None:
    """Add what is known only once the run ended (run.json: status, final parameters,
    QEMU's own version string) to a recording's metadata."""
    try:
        run = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return
    q = run.get("qemu") or {}
    kv: dict[str, Any] = {"run": run}
    with contextlib.suppress(OSError, ValueError):  # a libvirt lab run: libvirt's own figures
        kv["libvirt_jobinfo"] = json.loads((run_dir / "libvirt-jobinfo.json").read_text())
    if q.get("qmp_version"):
        kv["qemu_version"] = q["qmp_version"]
    if run.get("final_parameters"):
        kv["migration_params_final"] = {"source": run["final_parameters"]}
    writer.update_meta(**kv)
