"""Find the QEMU to attach to: its pid, QMP socket, ``-D`` trace log and side, from a pid, a QMP socket or a libvirt domain."""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from profiler.errors import MigprofError, SetupError


@dataclass(frozen=True, slots=True)
class Target:
    """The QEMU process and how to reach it."""

    pid: int
    side: str
    qmp: str | None  # QMP UNIX socket path
    log_file: str | None  # QEMU's -D file, when it has one
    comm: str
    domain: str | None = None  # a libvirt domain: QMP through libvirt (sources/libvirt.py)
    uri: str | None = None


def cmdline(pid: int) -> list[str]:
    """A process's argv (MigprofError when it has gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        raise MigprofError(f"no process {pid} (it has gone, or never was)") from None
    except PermissionError:
        raise SetupError(f"cannot read /proc/{pid}/cmdline (fix: run as root)") from None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def opt_values(argv: list[str], *names: str) -> list[str]:
    """Every value given to the options ``names`` (``-opt value`` or ``-opt=value``)."""
    out = []
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                out.append(argv[i + 1])
            elif a.startswith(n + "="):
                out.append(a[len(n) + 1:])
    return out


def qmp_socket_from_cmdline(argv: list[str]) -> str | None:
    """The QMP UNIX socket of a QEMU command line (-qmp unix:..., or -chardev + -mon mode=control)."""
    for v in opt_values(argv, "-qmp", "--qmp"):
        if v.startswith("unix:"):
            return v[5:].split(",")[0]
    chardevs = {}
    for v in opt_values(argv, "-chardev", "--chardev"):
        parts = v.split(",")
        kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if parts[0] == "socket" and "path" in kv and "id" in kv:
            chardevs[kv["id"]] = kv["path"]
    for v in opt_values(argv, "-mon", "--mon"):
        kv = dict(p.split("=", 1) for p in v.split(",") if "=" in p)
        if kv.get("mode") == "control" and kv.get("chardev") in chardevs:
            return chardevs[kv["chardev"]]
    return None


def pid_of_socket(path: str) -> int:
    """The pid of the process serving a UNIX socket (SO_PEERCRED; works on a held monitor too)."""
    if not os.path.exists(path):
        raise MigprofError(f"{path}: no such QMP socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(path)
        cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError as e:
        raise MigprofError(f"{path}: QMP socket refuses connections: {e.strerror or e}") from None
    finally:
        s.close()
    pid, _uid, _gid = struct.unpack("3i", cred)
    return pid


def resolve_target(pid: int | None, qmp: str | None, side: str | None,
                   any_process: bool = False, domain: str | None = None,
                   uri: str | None = None) -> Target:
    """Find the pid, QMP socket (or libvirt domain), trace log and side of the QEMU to attach to."""
    if domain is not None:
        from profiler.sources.libvirt import resolve_domain

        d = resolve_domain(uri, domain, side)
        return Target(d.pid, d.side, None, d.log_file, "qemu", domain=d.name, uri=d.uri)
    if pid is None:
        assert qmp is not None
        pid = pid_of_socket(qmp)
    argv = cmdline(pid)
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        comm = "?"
    exe = os.path.basename(argv[0]) if argv else ""
    if not any_process and "qemu" not in comm and "qemu" not in exe:
        raise MigprofError(f"pid {pid} is not QEMU ({comm or exe!r})")
    if qmp is None:
        qmp = at_cwd(pid, qmp_socket_from_cmdline(argv))
    logs = opt_values(argv, "-D")
    if side is None:
        side = "destination" if opt_values(argv, "-incoming", "--incoming") else "source"
    return Target(pid, side, qmp, at_cwd(pid, logs[-1]) if logs else None, comm)


def at_cwd(pid: int, path: str | None) -> str | None:
    """A path from QEMU's command line as seen from here (relative ones are to its cwd)."""
    if path is None or os.path.isabs(path):
        return path
    try:
        return os.path.join(os.readlink(f"/proc/{pid}/cwd"), path)
    except OSError:
        return path


def resolve_targets(pids: tuple[int, ...], qmps: tuple[str, ...], domains: tuple[str, ...], *,
                    side: str | None = None, any_process: bool = False, uri: str | None = None,
                    trace_log: str | None = None) -> list[Target]:
    """Every QEMU given (-p, --qmp, --domain), each once."""
    if not (pids or qmps or domains):
        raise MigprofError("which QEMU? give -p PID, --qmp SOCKET or --domain NAME")
    targets = [resolve_target(p, None, side, any_process) for p in pids]
    targets += [resolve_target(None, q, side, any_process) for q in qmps]
    targets += [resolve_target(None, None, side, domain=d, uri=uri) for d in domains]
    pids = [t.pid for t in targets]
    twice = sorted({p for p in pids if pids.count(p) > 1})
    if twice:
        raise MigprofError(f"QEMU pid {twice[0]} is given twice")
    if len(targets) > 1 and trace_log:
        raise MigprofError("--trace-log names one QEMU's log: give one QEMU with it")
    return targets


def vm_name(target: Target) -> str:
    """The VM's name for metrics: its libvirt domain, QEMU's -name (guest=), else "pid N"."""
    if target.domain:
        return target.domain
    try:
        names = opt_values(cmdline(target.pid), "-name", "--name")
    except MigprofError:
        names = []
    for v in names[-1:]:
        parts = [p for p in v.split(",") if p]
        kv = dict(p.split("=", 1) for p in parts if "=" in p)
        name = kv.get("guest") or (parts[0] if parts and "=" not in parts[0] else None)
        if name:
            return name
    return f"pid {target.pid}"
