"""Find every QEMU on this host and notice the ones that start and end (a /proc scan; libvirt's
domain names where libvirt answers).

A QEMU is a process whose ``comm`` or executable is ``qemu-system-*`` or ``qemu-kvm``; it is
told apart from a later process with the same pid by its start time. Each scan reads the
``comm`` of every process (a few ms for hundreds of processes) and the command line of new
QEMUs only. libvirt's domains are matched to their QEMU by ``-uuid``: listing domains uses
no monitor passthrough, so it marks no domain as tainted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from profiler.errors import MigprofError
from profiler.sources.libvirt import libvirt_log
from profiler.sources.target import Target, at_cwd, opt_values, qmp_socket_from_cmdline

# what a QEMU's comm or executable looks like (the comm is cut at 15 characters)
_QEMU_PREFIXES = ("qemu-system-", "qemu-kvm")


@dataclass(frozen=True, slots=True)
class Qemu:
    """One QEMU process and how to reach it (``start``: its start time in clock ticks after
    boot, so a reused pid is another QEMU)."""

    pid: int
    start: int
    name: str | None  # the guest name of -name
    uuid: str | None  # -uuid
    side: str  # destination when started with -incoming, else source
    qmp: str | None  # its QMP UNIX socket (the first on its command line)
    log_file: str | None  # its -D trace log
    domain: str | None = None  # the libvirt domain it runs, when libvirt told us
    uri: str | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start)

    @property
    def label(self) -> str:
        return self.domain or self.name or f"pid {self.pid}"

    @classmethod
    def of(cls, target: Target) -> Qemu:
        """The QEMU a resolved target names (MigprofError: it has gone); a process that is
        not a QEMU (``live --any-process``) by its pid."""
        q = describe(target.pid)
        start = q.start if q is not None else start_ticks(Path("/proc"), target.pid)
        if start is None:
            raise MigprofError(f"QEMU pid {target.pid} has gone")
        return Qemu(pid=target.pid, start=start, name=q.name if q else None,
                    uuid=q.uuid if q else None, side=target.side, qmp=target.qmp,
                    log_file=target.log_file, domain=target.domain, uri=target.uri)

    def target(self) -> Target:
        """What ``live`` attaches to for this QEMU."""
        return Target(self.pid, self.side, None if self.domain else self.qmp, self.log_file,
                      "qemu", domain=self.domain, uri=self.uri)


def is_qemu(comm: str, exe: str = "") -> bool:
    return comm.startswith(_QEMU_PREFIXES) or os.path.basename(exe).startswith(_QEMU_PREFIXES)


def guest_name(argv: list[str]) -> str | None:
    """The guest's name from ``-name NAME[,opts]`` or ``-name guest=NAME,...`` (libvirt)."""
    for v in opt_values(argv, "-name", "--name")[-1:]:
        parts = v.split(",")
        for p in parts:
            if p.startswith("guest="):
                return p[len("guest="):]
        if parts and "=" not in parts[0]:
            return parts[0]
    return None


def start_ticks(proc: Path, pid: int) -> int | None:
    """A process's start time in clock ticks after boot (None: gone)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime


def describe(pid: int, proc: Path = Path("/proc")) -> Qemu | None:
    """The QEMU at ``pid`` (None: not a QEMU, or gone)."""
    d = proc / str(pid)
    try:
        comm = (d / "comm").read_text().strip()
        argv = [a.decode(errors="replace") for a in (d / "cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return None
    if not argv or not is_qemu(comm, argv[0]):
        return None
    start = start_ticks(proc, pid)
    if start is None:
        return None
    logs = opt_values(argv, "-D")
    uuid = opt_values(argv, "-uuid", "--uuid")
    return Qemu(pid=pid, start=start, name=guest_name(argv), uuid=uuid[-1].lower() if uuid else None,
                side="destination" if opt_values(argv, "-incoming", "--incoming") else "source",
                qmp=at_cwd(pid, qmp_socket_from_cmdline(argv)),
                log_file=at_cwd(pid, logs[-1]) if logs else None)


class Discovery:
    """The QEMUs on this host now, and which came and went since the last ``scan()``.

    ``domains()`` gives libvirt's running domains by UUID (``sources.libvirt.DomainWatch``;
    None: no libvirt), ``uri`` the connection they come from; ``keep`` filters QEMUs (a
    test keeps its own).
    """

    def __init__(self, *, proc: Path = Path("/proc"),
                 domains: Callable[[], Mapping[str, str]] | None = None, uri: str | None = None,
                 keep: Callable[[Qemu], bool] | None = None):
        self.proc = proc
        self.domains = domains
        self.uri = uri
        self.keep = keep
        self.current: dict[tuple[int, int], Qemu] = {}
        self._not_qemu: dict[int, str] = {}  # pid -> the comm it had when it was not a QEMU
        self.scans = 0

    def scan(self) -> tuple[list[Qemu], list[Qemu]]:
        """(QEMUs that appeared, QEMUs that went) since the last scan."""
        self.scans += 1
        names = dict(self.domains()) if self.domains is not None else {}
        seen: dict[tuple[int, int], Qemu] = {}
        by_pid = {q.pid: q for q in self.current.values()}
        not_qemu: dict[int, str] = {}
        for entry in os.scandir(self.proc):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                comm = (self.proc / entry.name / "comm").read_text().strip()
            except OSError:
                continue
            old = by_pid.get(pid)
            if old is None and self._not_qemu.get(pid) == comm:
                not_qemu[pid] = comm  # unchanged since it was not a QEMU (an exec changes comm)
                continue
            same = old is not None and start_ticks(self.proc, pid) == old.start
            q = old if same else describe(pid, self.proc)
            if q is None:
                not_qemu[pid] = comm
                continue
            if q.uuid and q.uuid in names and q.domain is None:
                # the log libvirt writes the domain's QEMU's stderr to (its trace lines)
                q = replace(q, domain=names[q.uuid], uri=self.uri,
                            log_file=q.log_file or libvirt_log(q.pid, names[q.uuid]))
            if self.keep is None or self.keep(q):
                seen[q.key] = q
        self._not_qemu = not_qemu
        # a QEMU libvirt names only now (its domain listed after its start) is another target:
        # it goes as a bare QEMU and comes back as the domain
        appeared = [q for k, q in seen.items() if self.current.get(k) != q]
        gone = [q for k, q in self.current.items() if seen.get(k) != q]
        self.current = seen
        return appeared, gone
