"""Attach to one running QEMU: the sources that watch it (QMP, its trace events and log, BPF, USDT).

``live_sources`` picks what this host and this QEMU allow and says once on ``err`` what
it goes without: no QMP socket, a monitor another client holds (then BPF and the
``-D`` trace log go on, and QMP is picked up if it frees), BPF that cannot load. A
libvirt domain is reached through libvirt (``profiler.sources.libvirt``), never through
its monitor socket.
The banner and the recording metadata of a live run are made here from the sources'
health.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from typing import IO, Any

from profiler.session import jsonable
from profiler.sources.base import Source
from profiler.sources.target import Target


def live_sources(target: Target, *, trace: bool = True, trace_log: str | None = None,
                 bpf: bool = True, path: str = "auto", err: IO[str],
                 notify: Callable[[str], None] | None = None, qmp_hz: float = 10.0,
                 say_no_qmp: bool = True, log_from_start: bool = False
                 ) -> tuple[list[Source], dict[str, Any]]:
    """The sources for ``target`` and what they read (``info``, kept in the recording).

    ``trace``: switch QEMU's migration trace events on over QMP and tail its log (QEMU's
    ``-D`` file from its current end, ``trace_log``, or a temporary file QEMU's log is
    pointed at); ``trace_log`` alone is tailed when there is no QMP to switch anything.
    ``qmp_hz``: query-migrate polls a second; ``say_no_qmp``: say that a QEMU has no QMP
    socket (``top`` follows many that have none, and says nothing of it);
    ``log_from_start``: read QEMU's ``-D`` log from its first line (a QEMU that started
    after migprof did: its whole log is this run's, and a migration may have begun before
    migprof attached).
    """
    sources: list[Source] = []
    info: dict[str, Any] = {"pid": target.pid, "side": target.side, "qmp": target.qmp}
    say = notify or (lambda msg: print(f"migprof: {msg}", file=err, flush=True))
    ctl: Any = None  # QMP commands (trace control): over QMP, or through libvirt
    if target.domain:  # libvirt owns the monitor: commands and events through libvirt
        from profiler.sources.libvirt import LibvirtSource

        ctl = LibvirtSource(target.uri, target.domain, target.side, poll_hz=qmp_hz,
                            params_hz=min(1.0, qmp_hz / 2), note=say)
        sources.append(ctl)
        info.update(domain=target.domain, uri=target.uri)
    elif target.qmp:
        from profiler.qmpctl import QmpControl
        from profiler.sources.qmp import QmpSource

        qmp = QmpSource({target.side: target.qmp}, poll_hz=qmp_hz, params_hz=min(1.0, qmp_hz / 2),
                        wait_if_held=True, notify=say)
        ctl = QmpControl(qmp)
        sources.append(qmp)
    elif say_no_qmp:
        say(f"no QMP socket found for pid {target.pid}: no QMP events (fix: pass --qmp SOCKET)")
    if trace:
        from profiler.sources.qemu_tail import QemuLogSource

        log_path = trace_log or target.log_file
        temporary = False
        if ctl is not None:
            from profiler.qmpctl import TraceControl

            if log_path is None:
                fd, log_path = tempfile.mkstemp(prefix=f"migprof-live-{target.pid}-", suffix=".log")
                os.close(fd)
                temporary = True
            sources.append(TraceControl(ctl, target.side, target.pid, log_path,
                                        qemu_log=target.log_file, temporary=temporary))
        if log_path is not None:
            # a temporary file is ours from its first line; any other is read from its end
            sources.append(QemuLogSource(log_path, target.side, pid=target.pid,
                                         from_start=temporary or log_from_start,
                                         stamp_untimed=True,
                                         name="qemu-trace"))
            info["trace_log"] = log_path
    elif trace_log:
        from profiler.sources.qemu_tail import QemuLogSource

        sources.append(QemuLogSource(trace_log, target.side, pid=target.pid,
                                     from_start=log_from_start,
                                     stamp_untimed=True, name="qemu-trace"))
        info["trace_log"] = trace_log
    if bpf:
        from profiler.sources.bpf import BpfSource, check_host

        host = check_host()
        if host.problem:
            say(f"bpf: {host.problem}; continuing with QMP and QEMU trace only")
        else:
            sources.append(BpfSource([target.pid], sides={target.pid: target.side}, path=path))
            from profiler.sources.usdt import UsdtSource, has_usdt_probes

            exe = f"/proc/{target.pid}/exe"
            if has_usdt_probes(exe):  # a dtrace build (Fedora/RHEL): its probes, no log needed
                sources.append(UsdtSource(target.pid, side=target.side))
                info["usdt"] = os.path.realpath(exe)
    return sources, info


def banner(target: Target, health: Mapping[str, Any]) -> str:
    """What is being traced, once attached (bcc style)."""
    bpf = health.get("bpf") or {}
    qmp = health.get("qmp") or {}
    held = qmp.get(f"{target.side}_held_by")
    what = ", ".join(filter(None, [
        f"BPF {bpf.get('path')} ({bpf.get('buffer')} buffer)" if bpf else None,
        (f"QMP {target.qmp}" + (" (held: waiting)" if held else "")) if target.qmp else None,
        f"libvirt domain {target.domain} ({target.uri})" if target.domain else None,
        f"trace {health.get('qemu-trace', {}).get('file')}" if "qemu-trace" in health else None]))
    return f"Tracing QEMU pid {target.pid} ({target.side}): {what}... Hit Ctrl-C to end."


def meta_at_start(health: Mapping[str, Any]) -> dict[str, Any]:
    """Recording metadata known once attached: the BPF path and the clock offset."""
    bpf = health.get("bpf") or {}
    return {"attach": bpf.get("path"), "clock_offsets": {
        "bpf_monotonic_to_realtime_ns": bpf.get("clock_offset_ns"),
        "uncertainty_ns": bpf.get("clock_offset_err_ns")}}


def meta_at_close(health: Mapping[str, Any]) -> dict[str, Any]:
    """Recording metadata at the end: every source's health."""
    return {"health": jsonable(health)}
