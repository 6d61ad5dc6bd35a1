"""Follow a lab run live: its QMP/sock_diag/mark rows and both trace logs, as one stream.

``follow_run`` plays the lab's scenario in a worker thread and hands every batch of
events (lab rows and the parsed lines of both QEMU trace logs) to a callback, then
reads the logs to their end once QEMU has exited, so nothing the run logged is missed.
`migprof demo` uses it for its live view, and `--record` on `lab` and `demo` for the
recording. ``recording_meta`` / ``finish_recording`` give a recording its metadata.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from profiler.sources.qemu_log import QemuLogSource

# The trace logs are tailed in big, infrequent batches: a parse costs ~1 ms however few
# lines it gets (building the frame dominates), a second of lab log is a few hundred
# lines, and the live views refresh once a second.
TAIL_S = 1.0
# the merged stream's heartbeat when no events come (the line view's clock)
HEARTBEAT_S = 0.2
# after QEMU exits, how long the stream may still deliver before it is stopped
DRAIN_S = 0.5

WARM_LINES = (  # both prefix forms the lab writes, and the events the line view reads
    b"12@1700000000.000001:migrate_set_state new state setup\n"
    b"12@1700000000.000002:migrate_pending_estimate estimate pending size 1 (pre = 1 post=0)\n"
    b"12@1700000000.000003:migrate_transferred transferred 1 time_spent 100 bandwidth 1 "
    b"switchover_bw 0 max_size 1\n",
    b"migrate_pending pending size 1 max 1 (pre = 1 compat=0 post=0)\n"
    b"migrate_transferred transferred 1 time_spent 100 bandwidth 1 max_size 1\n",
)


class LogTail(QemuLogSource):
    """A trace-log tail that polls every ``TAIL_S`` and, once stopped, reads to the end.

    The plain tail returns as soon as it is stopped; a recording must also hold the
    last lines QEMU wrote (and a retry's log that the lab appends at its close).
    """

    def __init__(self, path: str | os.PathLike[str], side: str, poll_s: float = TAIL_S):
        super().__init__(path, side, follow=True, poll_s=poll_s)

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        yield from super().batches(stop)
        self.follow = False  # the rest of the file, then the end
        yield from super().batches(threading.Event())


def warm_parser(path: Path) -> None:
    """Build the log parser's tables and load its compiled scanners now (a second or
    more of CPU on first use), not while the migration is being profiled."""
    from profiler.sources.qemu_log import parse_bytes

    warm = QemuLogSource(path, "source")
    for sample in WARM_LINES:
        parse_bytes(sample, side="source")
        warm._parse(sample)


def lab_sources(lab: Any, tail_s: float = TAIL_S) -> list:
    """The lab's own row stream and both trace logs, tailed (what `demo` profiles)."""
    warm_parser(lab.procs["source"].spec.log_file)
    return [
        lab.stream,
        LogTail(lab.procs["source"].spec.log_file, "source", tail_s),
        LogTail(lab.procs["destination"].spec.log_file, "destination", tail_s),
    ]


def follow_run(
    lab: Any,
    on_batch: Callable[[pd.DataFrame], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    tail_s: float = TAIL_S,
) -> dict[str, Any]:
    """Run ``lab``'s scenario in a worker thread while its events stream to ``on_batch``.

    ``on_tick`` is called after every batch and heartbeat (``HEARTBEAT_S``).
    Returns ``{"run": RunResult}`` or ``{"error": exception}`` (the caller raises it).
    The lab is closed (QEMU stopped) before this returns.
    """
    from profiler.stream import MergedSource

    result: dict[str, Any] = {}

    def drive() -> None:
        try:
            result["run"] = lab.run()
        except BaseException as e:  # reported by the caller's thread
            result["error"] = e
        finally:
            lab.close()  # stops QEMU; the stream ends once drained

    merged = MergedSource(lab_sources(lab, tail_s), poll_s=HEARTBEAT_S)
    worker = threading.Thread(target=drive, name="lab-run", daemon=True)
    stop = threading.Event()
    done_at = 0.0
    with merged:
        worker.start()
        for batch in merged.batches(stop):
            if on_batch is not None and len(batch):
                on_batch(batch)
            if on_tick is not None:
                on_tick()
            if not stop.is_set() and not worker.is_alive() and lab.stream.finished.is_set():
                # QEMU has exited, so the logs are complete: the tails read their ends
                # once stopped (LogTail); the lab rows are all queued by now
                done_at = done_at or time.monotonic()
                if time.monotonic() - done_at > DRAIN_S:
                    stop.set()
    worker.join()
    return result


# ---------------------------------------------------------------- recordings


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
        "sources": ["qmp", "lab", "sockdiag", "qemu-log:source", "qemu-log:destination"],
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
    if q.get("qmp_version"):
        kv["qemu_version"] = q["qmp_version"]
    if run.get("final_parameters"):
        kv["migration_params_final"] = {"source": run["final_parameters"]}
    writer.update_meta(**kv)
