"""The libvirt lab: two libvirt daemons, one per network namespace, migrating a domain with virsh.

Layout for owner tag T (``profiler.lab.qemu.owner_tag``)::

    netns migprof-T-src                               netns migprof-T-dst
      virtlogd + libvirtd (host_uuid ...-1)             virtlogd + libvirtd (host_uuid ...-2)
      listen tcp 198.18.0.1:16509, auth none            listen tcp 198.18.0.2:16509, auth none
      domain migprof-lab-T-lv (TCG, lab guest)  ==== virsh migrate --live --p2p ====>
      /etc/libvirt, /run/libvirt, /var/{lib,log,cache}/libvirt bound to $ROOT/<side>/...

Each daemon pair runs in its side's namespace (``profiler.lab.net.LabNet``) and in a mount
namespace of its own (``ip netns exec`` makes one; the bind mounts never reach the host),
so the two daemons keep apart their state, sockets, logs and the same-named domain. Their
distinct ``host_uuid`` lets libvirt take the other side for another host. ``$ROOT`` is a
short directory on a tmpfs, /dev/shm (``root_bases``: as /run on a host; UNIX socket
paths are limited to 107 bytes); migprof reaches each daemon at
``qemu+unix:///system?socket=$ROOT/<side>/run/libvirt-sock``. A QEMU from a private
prefix (``--qemu 10.0``) gets its data and module directories bound in too
(``prefix_binds``).

``run_libvirt_lab`` (or ``profiler.lab.follow`` for ``--record`` and ``demo --libvirt``,
through ``stream`` and ``trace_logs()``) plays a scenario: bandwidth and downtime limit through libvirt
(``virsh migrate --bandwidth``, ``migrate-setmaxdowntime``, ``migrate-setspeed``), cancel
with ``virsh domjobabort``, while both sides are followed as ``migprof live --domain``
follows a domain (``profiler.sources.libvirt.LibvirtSource``). The run directory is the
lab's (``events.jsonl``, ``source.log``/``destination.log`` = libvirt's logs of each QEMU's
stderr with the trace lines, ``run.json``) plus ``libvirt-jobinfo.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as _escape

from profiler import registry
from profiler.errors import MigprofError, SetupError
from profiler.lab import qemu as lq
from profiler.lab.run import LabStream
from profiler.lab.scenarios import MiB, Scenario
from profiler.sources.procfd import pid_alive
from profiler.sources.qmp import FINAL_STATUSES, mark_row

log = logging.getLogger(__name__)

SIDES = ("source", "destination")
ROOT_PREFIX = "migprof-lv-"
LIBVIRT_PORT = 16509
HOST_UUIDS = {"source": "6d696770-726f-4600-8000-000000000001",
              "destination": "6d696770-726f-4600-8000-000000000002"}
# mount points each daemon's private directories are bound over (inside its namespace)
BINDS = (("etc", "/etc/libvirt"), ("run", "/run/libvirt"), ("lib", "/var/lib/libvirt"),
         ("log", "/var/log/libvirt"), ("cache", "/var/cache/libvirt"))


def escape(text: str) -> str:
    """XML text and single-quoted attribute values."""
    return _escape(text, {"'": "&apos;"})


def _conf(values: dict[str, Any]) -> str:
    def v(x: Any) -> str:
        if isinstance(x, list):
            return "[ " + ", ".join(v(i) for i in x) + " ]"
        return str(x) if isinstance(x, int) else f'"{x}"'

    return "".join(f"{k} = {v(x)}\n" for k, x in values.items())


class Daemon:
    """virtlogd and libvirtd of one side, in the side's netns and their own mount namespace."""

    def __init__(self, side: str, root: Path, netns: str, addr: str,
                 binds: tuple[tuple[Path, str], ...] = ()):
        self.side = side
        self.root = root
        self.netns = netns
        self.addr = addr
        self.binds = binds  # (host directory, mount point) bound in the daemons' namespace too
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        """How migprof (in the host namespace) reaches this daemon."""
        return f"qemu+unix:///system?socket={self.root}/run/libvirt-sock"

    @property
    def tcp_uri(self) -> str:
        """How the other daemon reaches this one (peer-to-peer migration)."""
        return f"qemu+tcp://{self.addr}/system"

    def host_dir(self, sub: str) -> Path:
        """The host directory bound over BINDS' ``sub``. The cache persists across runs in
        $MIGPROF_CACHE: libvirt probes each QEMU binary once (seconds under TCG) and keeps
        the answer there, keyed by the binary and libvirt's version."""
        if sub == "cache":
            from profiler.lab.guest_build import cache_dir

            return cache_dir() / "libvirt" / self.side
        return self.root / sub

    def path(self, inside: str) -> Path:
        """The host path of a path inside the daemon's namespace (/var/log/libvirt/...)."""
        for sub, mnt in BINDS:
            if inside == mnt or inside.startswith(mnt + "/"):
                return self.host_dir(sub) / inside[len(mnt) + 1:]
        return Path(inside)

    def _write_config(self) -> None:
        for sub, _ in BINDS:
            self.host_dir(sub).mkdir(parents=True, exist_ok=True)
        (self.root / "log" / "qemu").mkdir(exist_ok=True)
        etc = self.root / "etc"
        (etc / "libvirtd.conf").write_text(_conf({
            "listen_tls": 0, "listen_tcp": 1, "listen_addr": self.addr,
            "tcp_port": str(LIBVIRT_PORT), "auth_tcp": "none", "auth_unix_rw": "none",
            "auth_unix_ro": "none", "unix_sock_rw_perms": "0700",
            "host_uuid": HOST_UUIDS[self.side],
            "log_outputs": "3:file:/var/log/libvirt/libvirtd.log",
        }))
        # root, no cgroups, no security driver, no per-domain /dev namespace: what runs
        # without systemd on this host (docs/libvirt.md)
        (etc / "qemu.conf").write_text(_conf({
            "user": "root", "group": "root", "cgroup_controllers": [],
            "security_driver": "none", "namespaces": [],
            "migration_address": self.addr,
        }))
        # no rotation during a run: the trace lines are read from this log
        (etc / "virtlogd.conf").write_text(_conf({
            "max_size": 1 << 30, "log_outputs": "3:file:/var/log/libvirt/virtlogd.log"}))

    def start(self, timeout: float = 30.0) -> Daemon:
        self._write_config()
        binds = "\n".join(
            [f"mount --bind {self.host_dir(sub)} {mnt}" for sub, mnt in BINDS]
            + [f"mount --bind {shlex.quote(str(src))} {shlex.quote(mnt)}" for src, mnt in self.binds])
        script = (f"set -e\nmkdir -p {' '.join(m for _, m in BINDS)}\n{binds}\n"
                  "virtlogd -d -f /etc/libvirt/virtlogd.conf -p /run/libvirt/virtlogd.pid\n"
                  "exec libvirtd --listen -f /etc/libvirt/libvirtd.conf "
                  "-p /run/libvirt/libvirtd.pid\n")
        # ip netns exec enters the namespace in a new mount namespace (slave to the host's):
        # the bind mounts below stay inside it
        cmd = ["ip", "netns", "exec", self.netns, "sh", "-c", script]
        out = (self.root / "daemon.log").open("wb")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        except OSError as e:
            raise SetupError(f"cannot start libvirtd ({e}); bash scripts/run.sh setup "
                             "installs it") from None
        finally:
            out.close()
        self._wait(timeout)
        return self

    def _wait(self, timeout: float) -> None:
        from profiler.sources.libvirt import LibvirtError, connect

        end = time.monotonic() + timeout
        sock = self.root / "run" / "libvirt-sock"
        while True:
            if self.proc.poll() is not None:
                raise SetupError(f"libvirtd ({self.side}) exited with {self.proc.returncode}: "
                                 f"{self.log_tail()}")
            if sock.exists():
                try:
                    connect(self.uri).close()
                    return
                except LibvirtError:
                    pass
            if time.monotonic() > end:
                raise SetupError(f"libvirtd ({self.side}) did not answer in {timeout} s: "
                                 f"{self.log_tail()}")
            time.sleep(0.05)

    def warm(self, binary: lq.QemuBinary) -> subprocess.Popen:
        """Have libvirt probe the QEMU binary now (not inside the first migration's
        Prepare, where it would take seconds); returns the running virsh."""
        return subprocess.Popen(
            ["virsh", "-q", "-c", self.uri, "domcapabilities", "--emulatorbin", str(binary.path),
             "--virttype", "qemu"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

    def log_tail(self, n: int = 3) -> str:
        lines: list[str] = []
        for f in (self.root / "daemon.log", self.root / "log" / "libvirtd.log"):
            with contextlib.suppress(OSError):
                lines += f.read_text(errors="replace").strip().splitlines()[-n:]
        return " | ".join(lines[-n:]) or "(no output)"

    def virsh(self, *args: str, timeout: float = 60.0, check: bool = True
              ) -> subprocess.CompletedProcess:
        """``virsh -c <this daemon> ARGS``; MigprofError with virsh's message on failure."""
        cmd = ["virsh", "-q", "-c", self.uri, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise MigprofError(f"virsh {' '.join(args)} ({self.side}): "
                               f"{r.stderr.strip() or r.returncode}")
        return r

    def stop(self, domain: str | None = None) -> None:
        """Destroy the domain, stop both daemons; never raises."""
        if domain and self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.virsh("destroy", domain, timeout=20, check=False)
        for pidfile in ("libvirtd.pid", "virtlogd.pid"):
            with contextlib.suppress(OSError, ValueError):
                _kill(int((self.root / "run" / pidfile).read_text().strip()))
        if self.proc is not None:
            with contextlib.suppress(Exception):
                if self.proc.poll() is None:
                    self.proc.kill()
                self.proc.wait(timeout=10)


def _kill(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.02)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def prefix_binds(binary: lq.QemuBinary) -> tuple[tuple[Path, str], ...]:
    """What a QEMU from a private prefix (``--qemu 10.0``) needs bound in the daemons'
    mount namespace: its data and module directories over the ones it was built to search
    (/usr/share/qemu, /usr/lib/x86_64-linux-gnu/qemu), which hold the installed QEMU's.

    libvirt starts QEMU with neither ``-L`` nor ``QEMU_MODULE_DIR``, and probes every
    binary with ``qom-list-types``, which loads every module QEMU can find. A private
    prefix lacking some module the installed QEMU has (bookworm-backports' 10.0 moved
    ui-opengl, the GL displays and spice to packages the lab does not unpack) then loads
    the installed 7.2's, which QEMU refuses ("Only modules from the same build can be
    loaded") and then aborts on (util/module.c: ``QTAILQ_EMPTY(&dso_init_list)``): the
    probe dies and no domain can use the binary. Setting QEMU_MODULE_DIR (a wrapper as
    ``<emulator>``) is not enough: QEMU still searches its built-in directory after it.
    Bound over it, the built-in directories hold the prefix's own files; a mount point
    that does not exist is not searched either and is left out. Only the lab's daemons
    (and the QEMUs they start) see the binds."""
    if not binary.data_dirs and binary.module_dir is None:
        return ()
    prefix = binary.path.resolve().parent.parent  # .../usr/bin/qemu -> .../usr
    out = []
    for d in (*binary.data_dirs, *([binary.module_dir] if binary.module_dir else [])):
        try:
            mnt = Path("/usr") / d.relative_to(prefix)
        except ValueError:
            continue
        if mnt.is_dir():
            out.append((d, str(mnt)))
    return tuple(out)


def domain_xml(name: str, binary: lq.QemuBinary, kernel: Path, append: str, mem_mb: int,
               trace_file: Path | None) -> str:
    """A TCG domain booting the lab guest; serial to a file in the daemon's log dir.

    ACPI is on, as in the plain lab's QEMU: without ``<acpi/>`` libvirt 9.0 passes
    ``-no-acpi``, which QEMU 9.0 removed (``--qemu 10.0`` would not start).
    Trace events are set on QEMU's command line (``qemu:commandline``) so the destination,
    which libvirt creates and keeps busy with the incoming migration (no passthrough
    then), logs them from its start; libvirt adds ``-msg timestamp=on`` itself. Guest RAM is
    allocated at start-up (``<allocation mode='immediate'/>``: QEMU's prealloc), as the plain
    lab's ``-mem-prealloc``, so neither side pays first-touch page faults mid-migration."""
    args = ["-trace", f"events={trace_file}"] if trace_file else []
    qemu_args = "".join(f"    <qemu:arg value='{escape(a)}'/>\n" for a in args)
    ns = "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"
    extra = f"  <qemu:commandline>\n{qemu_args}  </qemu:commandline>\n" if args else ""
    return f"""<domain type='qemu' {ns}>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{mem_mb}</memory>
  <memoryBacking><allocation mode='immediate'/></memoryBacking>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(kernel))}</kernel>
    <cmdline>{escape(append)}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{escape(str(binary.path))}</emulator>
    <serial type='file'>
      <source path='/var/log/libvirt/qemu/{escape(name)}-serial.log'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
{extra}</domain>
"""


def _tmpfs(path: str) -> bool:
    """True when ``path`` is a writable tmpfs mount point."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(f[1] == path and f[2] == "tmpfs" for f in (m.split() for m in mounts) if len(f) > 2) \
        and os.access(path, os.W_OK)


def root_bases() -> list[str]:
    """Where the daemons' private directories may go, first choice first: a tmpfs.

    On a real host /run (libvirt's status files, sockets) is a tmpfs. libvirt saves a
    domain's status XML with fsync while it holds the domain's lock, in the STOP and
    RESUME handlers too; on a disk that fsync delays the migration's own steps (the
    destination's Finish waits for that lock after ``cont``) and lengthens both the guest's
    pause and libvirt's downtime figure by the disk's latency. So the lab keeps that state
    on /dev/shm, as a host keeps it in memory, and only falls back to the temp directory."""
    tmp = tempfile.gettempdir()
    return [*(["/dev/shm"] if _tmpfs("/dev/shm") else []), tmp if len(tmp) <= 40 else "/tmp"]


def _short_root(tag: str) -> Path:
    """A short private directory for the daemons (socket paths must stay < 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{tag}-", dir=root_bases()[0]))


def cleanup_leftovers() -> list[str]:
    """Daemons, QEMUs and directories of libvirt labs whose owning migprof is gone."""
    removed = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        text = " ".join(argv)
        m = re.search(rf"/{ROOT_PREFIX}([0-9a-z]+)-", text) if argv[0].endswith(
            ("libvirtd", "virtlogd")) else re.search(r"guest=migprof-lab-([0-9a-z]+)-lv", text)
        if m and not pid_alive(int(m[1], 36)):
            _kill(int(d.name), grace=1.0)
            removed.append(f"process {d.name} ({Path(argv[0]).name})")
    for base in {Path(b) for b in (*root_bases(), tempfile.gettempdir(), "/tmp")}:
        for root in base.glob(f"{ROOT_PREFIX}*"):
            m = re.match(rf"{ROOT_PREFIX}([0-9a-z]+)-", root.name)
            if m and root.is_dir() and not pid_alive(int(m[1], 36)):
                shutil.rmtree(root, ignore_errors=True)
                removed.append(f"directory {root}")
    for r in removed:
        log.warning("removed leftover of a killed libvirt lab: %s", r)
    return removed


class LibvirtLab:
    """Two daemons, one domain, a scenario played with virsh, both sides followed."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.sc: Scenario = cfg.scenario
        self.tag = lq.owner_tag()
        self._owner = os.getpid()
        self.run_dir = Path(cfg.out)
        self.domain = f"{lq.NAME_PREFIX}{self.tag}-lv"
        self.root: Path | None = None
        self.net: Any = None
        self.daemons: dict[str, Daemon] = {}
        self.follow: dict[str, Any] = {}
        self.recorder: Any = None
        self.binary: lq.QemuBinary | None = None
        self.kernel: Path | None = None
        self.attempts: list[dict[str, Any]] = []
        self.virsh_cmds: list[list[str]] = []
        self.t_migrate_ns: int | None = None
        self.jobinfo: dict[str, Any] | None = None
        self.accel = "tcg"
        self.uri = ""  # the migration stream's URI, once the network is up
        # every row the run records, as a live Source (lab --record, demo): profiler.lab.follow
        self.stream = LabStream()
        self._stack = contextlib.ExitStack()

    # ---------------------------------------------------------------- set-up
    def __enter__(self) -> LibvirtLab:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and os.getpid() == self._owner and self.root is not None:
            with contextlib.suppress(Exception):
                self._write_run("interrupted" if issubclass(exc_type, KeyboardInterrupt)
                                else "error", error=f"{exc_type.__name__}: {exc}")
        self.close()

    def _setup(self) -> None:
        from profiler.lab.guest_build import build_guest
        from profiler.lab.run import Recorder
        from profiler.lab.run import cleanup_leftovers as lab_leftovers
        from profiler.sources.libvirt import libvirt_modules

        sc, cfg = self.sc, self.cfg
        libvirt_modules()
        for tool in ("libvirtd", "virtlogd", "virsh"):
            if shutil.which(tool) is None:
                raise SetupError(f"{tool} not found; bash scripts/run.sh setup installs libvirt")
        if sc.params.get("avail-switchover-bandwidth") is not None:
            raise MigprofError("avail-switchover-bandwidth cannot be set through libvirt 9.0; "
                               "drop it for --libvirt")
        if cfg.net != "netns":
            raise MigprofError("--libvirt needs --net netns (one libvirt daemon per namespace)")
        cleanup_leftovers()
        lab_leftovers()
        self.binary = lq.find_qemu(cfg.qemu)
        binds = prefix_binds(self.binary)
        self.kernel = build_guest()
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise MigprofError(f"{self.run_dir}: output directory exists and is not empty")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.recorder = Recorder(self.run_dir / "events.jsonl")
        self.recorder.listeners.append(self.stream.put)
        self.root = _short_root(self.tag)
        from profiler.lab.net import LabNet

        self.net = self._stack.enter_context(LabNet(self.tag, shaping=sc.shaping))
        addrs = {"source": self.net.src_addr, "destination": self.net.dst_addr}
        self.uri = f"tcp://{self.net.dst_addr}:{cfg.port or 4444}"
        for side in SIDES:
            self.daemons[side] = Daemon(side, self.root / side, self.net.ns[side],
                                        addrs[side], binds).start()
        for w in [d.warm(self.binary) for d in self.daemons.values()]:
            w.wait(timeout=120)
        trace = self.root / "trace-events.txt"
        # QEMU's monitor trace too: its stamps bound libvirt's downtime (model/libvirt.py)
        trace.write_text("\n".join(lq.select_trace_events(
            self.binary, transferred_bytes=sc.transferred_bytes, extra=registry.QMP_TRACE)) + "\n")
        xml = self.root / "domain.xml"
        xml.write_text(domain_xml(self.domain, self.binary, self.kernel, sc.guest_append(),
                                  sc.mem_mb, trace))
        src = self.daemons["source"]
        try:
            src.virsh("define", str(xml))
            src.virsh("start", self.domain)
        except MigprofError as e:
            raise MigprofError(f"{e}; libvirtd says: {src.log_tail(2)}") from None
        self._follow_sides()

    def _follow_sides(self) -> None:
        from profiler.sources.libvirt import LibvirtSource

        for side in SIDES:
            s = LibvirtSource(self.daemons[side].uri, self.domain, side,
                              wait_s=3600 if side == "destination" else 0.0,
                              note=lambda m: log.info("%s", m))
            s.tap(self.recorder.add)
            s.__enter__()
            self.follow[side] = s

    def trace_logs(self) -> dict[str, Path]:
        """libvirt's log of each side's QEMU stderr (the trace lines), while it is written.
        The destination's appears when libvirt creates that QEMU; a retry's is appended."""
        return {side: self.daemons[side].path(f"/var/log/libvirt/qemu/{self.domain}.log")
                for side in SIDES}

    def libvirt_info(self) -> dict[str, Any]:
        """What a recording's metadata says of the daemons and the domain."""
        return {"domain": self.domain, "uris": {s: d.uri for s, d in self.daemons.items()},
                "peer_uris": {s: d.tcp_uri for s, d in self.daemons.items()},
                "host_uuids": dict(HOST_UUIDS)}

    def mark(self, action: str, side: str = "source", **detail: Any) -> None:
        self.recorder.add(mark_row(action, side, **detail))

    def virsh(self, side: str, *args: str, check: bool = True, timeout: float = 60.0
              ) -> subprocess.CompletedProcess:
        self.virsh_cmds.append(["virsh", "-c", self.daemons[side].uri, *args])
        return self.daemons[side].virsh(*args, check=check, timeout=timeout)

    # ---------------------------------------------------------------- the run
    def wait_guest(self, timeout: float = 30.0) -> None:
        serial = self.daemons["source"].path(f"/var/log/libvirt/qemu/{self.domain}-serial.log")
        t0 = time.monotonic()
        while b"migprof-guest: ready" not in (serial.read_bytes() if serial.exists() else b""):
            if time.monotonic() - t0 > timeout:
                raise SetupError(f"the lab guest printed no ready line in {timeout} s "
                                 f"(see {serial})")
            time.sleep(0.05)
        sc = self.sc
        if sc.dirty_mb and sc.rate_mbps:
            time.sleep(min(3.0, sc.dirty_mb / sc.rate_mbps + 0.2))

    def _set_params(self, params: dict[str, Any], during: bool) -> int | None:
        """Downtime limit now; bandwidth now when a job runs, else returned for --bandwidth."""
        bw = params.get("max-bandwidth")
        if params.get("downtime-limit") is not None:
            self.virsh("source", "migrate-setmaxdowntime", self.domain,
                       str(int(params["downtime-limit"])))
        if bw is None:
            return None
        mib = max(1, round(bw / MiB))
        if during:
            self.virsh("source", "migrate-setspeed", self.domain, str(mib))
        return mib

    def _migrate(self, params: dict[str, Any]) -> subprocess.Popen:
        mib = self._set_params(params, during=False)
        dst = self.daemons["destination"]
        argv = ["virsh", "-c", self.daemons["source"].uri, "migrate", "--live", "--p2p",
                *(["--bandwidth", str(mib)] if mib else []), self.domain, dst.tcp_uri, self.uri]
        self.virsh_cmds.append(argv)
        self.mark("migrate", "source", uri=dst.tcp_uri, params=params, argv=argv)
        self.t_migrate_ns = time.time_ns()
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def _act(self, a: Any) -> None:
        if a.kind == "set-parameters":
            self.mark("set-parameters", "source", **a.args)
            self._set_params(dict(a.args), during=True)
        elif a.kind == "shape":
            self.mark("shape", "source", **a.args)
            self.net.shape(**a.args)
        elif a.kind == "kill-destination":
            from profiler.sources.libvirt import pids_by_uuid

            uuid = self.follow["source"].uuid
            pids = [p for p, incoming in pids_by_uuid(uuid) if incoming]
            self.mark("kill-destination", "destination", pid=pids[-1] if pids else None)
            if pids:
                os.kill(pids[-1], signal.SIGKILL)
        elif a.kind == "cancel":
            self.mark("cancel", "source")
            self.virsh("source", "domjobabort", self.domain, check=False)
        else:
            raise MigprofError(f"unknown lab action {a.kind!r}")

    def _attempt(self, params: dict[str, Any], actions: tuple, timeout_s: float,
                 setup_s: float = 60.0) -> str:
        """One ``virsh migrate``; the scenario's clock starts when QEMU's migration does
        (libvirt's Begin/Prepare before it take from 0.1 s to seconds on a loaded host)."""
        src = self.follow["source"]
        src.status = "none"
        proc = self._migrate(params)
        pending = sorted(actions, key=lambda a: a.at_s)
        t_virsh = time.monotonic()
        t0: float | None = None
        cancelled = False
        while proc.poll() is None:
            if t0 is None:
                if src.status == "none":
                    if time.monotonic() - t_virsh > setup_s:
                        self.virsh("source", "domjobabort", self.domain, check=False)
                        proc.kill()
                        raise MigprofError(f"libvirt did not start the migration in {setup_s} s")
                    time.sleep(0.02)
                    continue
                t0 = time.monotonic()
            el = time.monotonic() - t0
            while pending and pending[0].at_s <= el:
                self._act(pending.pop(0))
            if not cancelled and el >= timeout_s:
                self.mark("cancel", "source", reason=f"timeout {timeout_s} s")
                self.virsh("source", "domjobabort", self.domain, check=False)
                cancelled = True
            if el >= timeout_s + 30:
                proc.kill()
                raise MigprofError("virsh migrate still running 30 s after domjobabort")
            time.sleep(0.05)
        _out, err = proc.communicate()
        # QEMU's own last word on the source (its MIGRATION event), else virsh's
        status = src.status if src.status in FINAL_STATUSES else (
            "completed" if proc.returncode == 0 else
            "cancelled" if "cancel" in err or "abort" in err else "failed")
        self.attempts.append({"status": status, "virsh_rc": proc.returncode,
                              "virsh_error": err.strip() or None,
                              "last_counters": {"source": src.last_reply}})
        return status

    def run(self) -> dict[str, Any]:
        sc = self.sc
        self.wait_guest()
        status = self._attempt(dict(sc.params), sc.actions, sc.timeout_s)
        if status == "cancelled" and sc.retry_params is not None:
            self.mark("retry", "source", params=sc.retry_params)
            status = self._attempt(dict(sc.retry_params), (), sc.timeout_s + 20)
        self._wait_destination(status)
        self.jobinfo = self._jobinfo(status)
        self._write_run(status)
        return {"status": status, "run_dir": self.run_dir, "attempts": self.attempts}

    def _wait_destination(self, status: str, timeout: float = 10.0) -> None:
        """After a completed migration, until the destination runs and has polled once."""
        dst = self.follow["destination"]
        end = time.monotonic() + timeout
        while status == "completed" and time.monotonic() < end and (
                dst.incoming or dst.dom is None or dst.last_reply is None):
            time.sleep(0.05)

    def _jobinfo(self, status: str) -> dict[str, Any]:
        """libvirt's completed job statistics, as ``virDomainGetJobStats(COMPLETED)`` gives
        them: on the destination for a completed migration (the source domain is gone),
        on the source otherwise (libvirt keeps none for a cancelled job: ``type`` 0)."""
        from profiler.sources.libvirt import LibvirtError

        side = "destination" if status == "completed" else "source"
        s = self.follow[side]
        try:
            return s.job_stats(completed=True) if s.dom is not None else {}
        except LibvirtError as e:
            log.warning("libvirt job statistics (%s): %s", side, e)
            return {}

    def _write_run(self, status: str, error: str | None = None) -> None:
        self._collect_files()
        (self.run_dir / "libvirt-jobinfo.json").write_text(
            json.dumps(self.jobinfo or {}, indent=2, sort_keys=True) + "\n")
        for side in SIDES:
            f = self.follow.get(side)
            (self.run_dir / f"query-migrate-{side}.json").write_text(
                json.dumps(f.last_reply if f else None, indent=2, sort_keys=True) + "\n")
        sc = self.sc
        from profiler.sources.libvirt import libvirt_modules

        lv, _ = libvirt_modules()
        info = {
            "schema": "migprof.lab-run/1",
            "scenario": sc.name,
            "description": sc.description,
            "status": status,
            "expected": sc.expect,
            "attempts": self.attempts,
            "qemu": {"path": str(self.binary.path) if self.binary else None,
                     "version": self.binary.short if self.binary else None,
                     "version_text": self.binary.version_text if self.binary else None},
            "accel": "tcg",
            "net": self.cfg.net,
            "guest": {"kernel": str(self.kernel), "append": sc.guest_append(),
                      "dirty_mb": sc.dirty_mb, "rate_mbps": sc.rate_mbps, "mem_mb": sc.mem_mb},
            "parameters": sc.params,
            "retry_parameters": sc.retry_params,
            "actions": [{"at_s": a.at_s, "kind": a.kind, "args": a.args} for a in sc.actions],
            "shaping": sc.shaping,
            "migrate_t_ns": self.t_migrate_ns,
            "host": os.uname().nodename,
            "libvirt": {
                "version": ".".join(str(lv.getVersion() // d % 1000) for d in (10**6, 10**3, 1)),
                "domain": self.domain,
                "uris": {s: d.uri for s, d in self.daemons.items()},
                "peer_uris": {s: d.tcp_uri for s, d in self.daemons.items()},
                "host_uuids": dict(HOST_UUIDS),
                "virsh": self.virsh_cmds,
            },
        }
        if error:
            info["error"] = error
        (self.run_dir / "run.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    def _collect_files(self) -> None:
        """libvirt's logs of each QEMU's stderr (with the trace lines) and the serial
        consoles into the run directory, under the lab's names."""
        for side, d in self.daemons.items():
            for inside, name in ((f"/var/log/libvirt/qemu/{self.domain}.log", f"{side}.log"),
                                 (f"/var/log/libvirt/qemu/{self.domain}-serial.log",
                                  f"serial-{side}.log"),
                                 ("/var/log/libvirt/libvirtd.log", f"libvirtd-{side}.log")):
                p = d.path(inside)
                if p.exists():
                    shutil.copyfile(p, self.run_dir / name)

    # ---------------------------------------------------------------- tear-down
    def close(self) -> None:
        """Stop everything this lab started; safe to call twice, never raises."""
        if os.getpid() != self._owner:
            return
        for s in self.follow.values():
            with contextlib.suppress(Exception):
                s.close()
        self.follow = {}
        for d in self.daemons.values():
            d.stop(self.domain)
        if self.recorder is not None and self.root is not None:
            # the logs again, whole: the QEMUs' last lines came as the daemons stopped them
            with contextlib.suppress(OSError):
                self._collect_files()
        self.daemons = {}
        with contextlib.suppress(Exception):
            self._stack.close()
        if self.recorder is not None:
            self.recorder.close()
        self.stream.finished.set()
        # QEMUs libvirt started outlive a killed daemon: none of this lab's may stay
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError):
                    if f"guest={self.domain},".encode() in (d / "cmdline").read_bytes():
                        _kill(int(d.name), grace=2.0)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def agreement(run_dir: Path) -> dict[str, Any]:
    """What `migprof report RUN` says beside libvirt's completed job statistics
    (``profiler.model.libvirt.LibvirtComparison`` as a dict)."""
    from dataclasses import asdict

    from profiler.model.build import build_report
    from profiler.pipeline import load
    from profiler.views.libvirt import comparison

    loaded = load([str(run_dir)])
    rep = build_report(loaded.events, inputs=[str(run_dir)], meta=loaded.meta)
    return asdict(comparison(rep, loaded.events, loaded.meta.get("libvirt_jobinfo") or {}))


def follow_hint(lab: LibvirtLab, command: str = "lab") -> str:
    """How to follow the lab's domain from another terminal."""
    return (f"migprof {command}: libvirt domain {lab.domain}; follow it with: migprof live "
            f"--domain {lab.domain} -c '{lab.daemons['source'].uri}'")


def run_libvirt_lab(cfg: Any) -> dict[str, Any]:
    """Play ``cfg.scenario`` under libvirt and leave its run directory."""
    from profiler.lab.run import run_guarded

    with run_guarded(), LibvirtLab(cfg) as lab:
        print(follow_hint(lab), file=sys.stderr)
        return lab.run()


def print_summary(res: dict[str, Any], as_json: bool = False) -> int:
    """The lab's one-line summary, with libvirt's completed job statistics beside ours."""
    run_dir = Path(res["run_dir"])
    summary: dict[str, Any] = {"run_dir": str(run_dir), "status": res["status"],
                               "attempts": [a["status"] for a in res["attempts"]]}
    if res["status"] == "completed":
        summary.update(agreement(run_dir))
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0
