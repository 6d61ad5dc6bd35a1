"""Find QEMU binaries, build lab QEMU command lines, run and stop QEMU processes.

Nothing here assumes network namespaces: a ``VmSpec`` may name one (``netns``) and the
process is then started through ``ip netns exec``; without it QEMU runs in the caller's
namespace (the nested VFIO lab runs the same code inside its L1 guest).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from profiler import registry
from profiler.cache import SYSTEM_CACHE, cache_dir
from profiler.errors import SetupError
from profiler.sources.procfd import pid_alive

log = logging.getLogger(__name__)

SYSTEM_QEMU = Path("/usr/bin/qemu-system-x86_64")
# every lab QEMU is started with -name migprof-lab-<owner pid b36>-<side>; the owner pid
# lets a later run tell a leftover (owner dead) from a neighbour's live lab
NAME_PREFIX = "migprof-lab-"

@dataclass(frozen=True, slots=True)
class QemuBinary:
    """A QEMU system emulator and what it needs to run from where it lies."""

    path: Path
    version: tuple[int, int, int]
    version_text: str
    data_dirs: tuple[Path, ...] = ()  # passed as -L, first wins
    module_dir: Path | None = None  # QEMU_MODULE_DIR, so a private prefix loads its own modules

    @property
    def short(self) -> str:
        """``"7.2"``, ``"10.0"``: the name used for run directories."""
        return f"{self.version[0]}.{self.version[1]}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.module_dir is not None:
            env["QEMU_MODULE_DIR"] = str(self.module_dir)
        return env

    def base_args(self) -> list[str]:
        out: list[str] = []
        for d in self.data_dirs:
            out += ["-L", str(d)]
        return out


_VERSION_RE = re.compile(r"QEMU emulator version (\d+)\.(\d+)\.(\d+)")


@functools.lru_cache(maxsize=16)
def _probe_version(path: str, mtime: float) -> tuple[tuple[int, int, int], str]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    except OSError as e:
        raise SetupError(f"{path}: cannot run QEMU ({e.strerror or e})") from e
    m = _VERSION_RE.search(out.stdout)
    if out.returncode != 0 or not m:
        first = (out.stderr or out.stdout).strip().splitlines()[:1]
        raise SetupError(f"{path}: not a working QEMU ({first[0] if first else 'no version'})")
    return (int(m[1]), int(m[2]), int(m[3])), out.stdout.splitlines()[0].strip()


def private_prefix(short: str) -> Path:
    """Where ``scripts/setup.d/40-qemu10.sh`` unpacks a backports QEMU (``10.0``): in the
    cache, or for a user whose own cache lacks it, in the system's (setup runs as root)."""
    own = cache_dir() / f"qemu-{short}"
    system = SYSTEM_CACHE / f"qemu-{short}"
    if not own.exists() and "MIGPROF_CACHE" not in os.environ and system.exists():
        return system
    return own


def qemu_binary(path: str | Path) -> QemuBinary:
    """Describe the QEMU at ``path``; a binary inside a private prefix gets its -L and modules."""
    p = Path(path)
    if not p.exists():
        raise SetupError(
            f"{p}: QEMU not found; install it (bash scripts/run.sh setup) or pass --qemu PATH"
        )
    if not os.access(p, os.X_OK):
        raise SetupError(f"{p}: not executable")
    version, text = _probe_version(str(p), p.stat().st_mtime)
    data_dirs: tuple[Path, ...] = ()
    module_dir = None
    prefix = p.resolve().parent.parent  # .../usr/bin/qemu -> .../usr
    if prefix != Path("/usr") and (prefix / "share/qemu").is_dir():
        data_dirs = (prefix / "share/qemu",)
        mods = prefix / "lib/x86_64-linux-gnu/qemu"
        module_dir = mods if mods.is_dir() else None
    return QemuBinary(p, version, text, data_dirs, module_dir)


def find_qemu(spec: str | None = None) -> QemuBinary:
    """The QEMU to use: ``None``/``"7.2"`` Debian's, ``"10.0"`` the private backports
    prefix, anything with a ``/`` a path. Raises SetupError saying how to get it."""
    if spec is None or spec in ("7.2", "system", "debian"):
        b = qemu_binary(SYSTEM_QEMU)
        if spec == "7.2" and b.short != "7.2":
            raise SetupError(f"{SYSTEM_QEMU} is QEMU {b.short}, not 7.2")
        return b
    if "/" in spec:
        return qemu_binary(spec)
    if re.fullmatch(r"\d+\.\d+", spec):
        path = private_prefix(spec) / "usr/bin/qemu-system-x86_64"
        if not path.exists():
            raise SetupError(
                f"QEMU {spec} is not installed at {path}; run `bash scripts/run.sh setup` "
                f"(scripts/setup.d/40-qemu10.sh unpacks it) or pass --qemu PATH"
            )
        b = qemu_binary(path)
        if b.short != spec:
            raise SetupError(f"{path} is QEMU {b.short}, not {spec}")
        return b
    raise SetupError(f"--qemu {spec!r}: give a version (7.2, 10.0) or a path to qemu-system-x86_64")


@functools.lru_cache(maxsize=16)
def _trace_names(path: str, mtime: float, env_key: str) -> frozenset[str]:
    out = subprocess.run(
        [path, "-trace", "help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "QEMU_MODULE_DIR": env_key} if env_key else None,
    )
    return frozenset(
        ln.strip() for ln in out.stdout.splitlines() if re.fullmatch(r"[a-z0-9_]+", ln.strip())
    )


def available_trace_events(binary: QemuBinary) -> frozenset[str]:
    """Every trace event the binary knows (its own ``-trace help``)."""
    return _trace_names(str(binary.path), binary.path.stat().st_mtime, str(binary.module_dir or ""))


def select_trace_events(
    binary: QemuBinary, transferred_bytes: bool = False, extra: tuple[str, ...] = ()
) -> list[str]:
    """Trace events to enable: those ``live`` switches on (``registry.events_to_enable``)
    that this binary has, with the ``migration_transferred_bytes`` flood when
    ``transferred_bytes``, plus ``extra`` (e.g. ``registry.QMP_TRACE``)."""
    names = available_trace_events(binary)
    floods = {registry.TRANSFERRED_BYTES} if transferred_bytes else set()
    chosen = set(registry.events_to_enable(names)) | ((floods | set(extra)) & names)
    return sorted(chosen)


def kvm_usable(binary: QemuBinary, kernel: Path, timeout: float = 4.0) -> bool:
    """Probe whether a guest actually runs under KVM here (``/dev/kvm`` may exist while
    guests fail): boot the lab guest with -accel kvm and wait for its ready line.

    The answer is cached per boot, binary and kernel in ``$MIGPROF_CACHE/kvm-probe.json``
    (a failing probe costs its whole timeout)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    key = f"{boot}:{binary.path}:{binary.path.stat().st_mtime_ns}:{kernel}"
    cache = cache_dir() / "kvm-probe.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), bool):
        return known[key]
    ok = _probe_kvm(binary, kernel, timeout)
    if boot:
        with contextlib.suppress(OSError):
            known = known if isinstance(known, dict) else {}
            known = {k: v for k, v in known.items() if k.startswith(boot)}  # this boot only
            known[key] = ok
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known))
            tmp.replace(cache)
    return ok


def cpu_model(accel: str) -> str:
    """The -cpu the lab runs with: the host's CPU under KVM, a fixed model under TCG."""
    return "host" if accel == "kvm" else "qemu64"


def _probe_kvm(binary: QemuBinary, kernel: Path, timeout: float) -> bool:
    # the same machine and CPU the lab would run: on some hosts KVM boots a default CPU
    # but aborts on -cpu host (an MSR the host KVM refuses)
    cmd = [
        str(binary.path),
        *binary.base_args(),
        "-machine",
        "pc",
        "-accel",
        "kvm",
        "-cpu",
        cpu_model("kvm"),
        "-m",
        "32",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel),
        "-append",
        "dirty_mb=0",
        "-no-reboot",
    ]
    try:
        p = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=binary.env(),
        )
    except OSError:
        return False
    try:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        buf = b""
        end = time.monotonic() + timeout
        while time.monotonic() < end and p.poll() is None:
            if sel.select(timeout=0.1):
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                if b"migprof-guest: ready" in buf:
                    return True
        return False
    finally:
        p.kill()
        p.wait()


@dataclass(slots=True)
class VmSpec:
    """One lab QEMU: what to boot and where its files go."""

    side: str  # "source" or "destination"
    name: str  # the -name, starts with NAME_PREFIX
    kernel: Path
    append: str  # guest command line, e.g. "dirty_mb=32 rate_mbps=200"
    run_dir: Path
    mem_mb: int = 64
    accel: str = "tcg"
    timestamps: bool = True  # -msg timestamp=on
    trace_events: list[str] = field(default_factory=list)
    incoming: bool = False  # -incoming defer (then migrate-incoming over QMP)
    netns: str | None = None
    extra_args: list[str] = field(default_factory=list)
    log_name: str | None = None  # trace log file name in run_dir; default <side>.log
    # a second QMP monitor left free for other clients (`migprof live --qmp`): QEMU
    # serves one client per monitor, and the lab holds the first one
    attach_qmp: bool = False

    @property
    def log_file(self) -> Path:
        return self.run_dir / (self.log_name or f"{self.side}.log")

    @property
    def qmp_socket(self) -> Path:
        return self.run_dir / f"qmp-{self.side}.sock"

    @property
    def attach_socket(self) -> Path:
        """The spare QMP monitor (``attach_qmp``) for other clients to attach to."""
        return self.run_dir / f"qmp-{self.side}-attach.sock"

    @property
    def serial_file(self) -> Path:
        return self.run_dir / f"serial-{self.side}.log"

    @property
    def stderr_file(self) -> Path:
        return self.run_dir / f"stderr-{self.log_file.stem}.log"

    @property
    def events_file(self) -> Path:
        return self.run_dir / f"trace-events-{self.side}.txt"


def build_command(binary: QemuBinary, spec: VmSpec) -> list[str]:
    """The QEMU command line for ``spec`` (without any netns wrapper)."""
    cmd = [
        str(binary.path),
        *binary.base_args(),
        "-name",
        f"{spec.name},debug-threads=on",
        "-machine",
        "pc",
        "-accel",
        spec.accel,
        "-cpu",
        cpu_model(spec.accel),
        "-m",
        str(spec.mem_mb),
        # guest RAM faulted in at start-up, so the migration does not pay first-touch page
        # faults (huge-page zeroing; on a nested host the outer hypervisor's): without it the
        # destination's first pass ran at half speed in 2 of 6 runs of one scenario, and a
        # stop-copy into untouched RAM went at 300-400 MiB/s instead of ~1.5 GiB/s
        "-mem-prealloc",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        f"file:{spec.serial_file}",
        "-kernel",
        str(spec.kernel),
        "-append",
        spec.append,
        *(  # first, so tools that take the first -qmp of a command line find the free one
            ["-qmp", f"unix:{spec.attach_socket},server=on,wait=off"] if spec.attach_qmp else []
        ),
        "-qmp",
        f"unix:{spec.qmp_socket},server=on,wait=off",
        "-D",
        str(spec.log_file),
    ]
    if spec.timestamps:
        cmd += ["-msg", "timestamp=on"]
    if spec.trace_events:
        cmd += ["-trace", f"events={spec.events_file}"]
    if spec.incoming:
        cmd += ["-incoming", "defer"]
    return cmd + spec.extra_args


class QemuProcess:
    """A running lab QEMU. ``stop()`` is idempotent and always reaps the process."""

    def __init__(self, binary: QemuBinary, spec: VmSpec):
        self.binary = binary
        self.spec = spec
        self.proc: subprocess.Popen | None = None
        self.killed_at_ns: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> QemuProcess:
        s = self.spec
        s.run_dir.mkdir(parents=True, exist_ok=True)
        for f in (s.log_file, s.qmp_socket, s.attach_socket, s.serial_file):
            f.unlink(missing_ok=True)
        if s.trace_events:
            s.events_file.write_text("\n".join(s.trace_events) + "\n")
        cmd = build_command(self.binary, s)
        if s.netns:
            cmd = ["ip", "netns", "exec", s.netns, *cmd]
        log.debug("start %s: %s", s.side, " ".join(cmd))
        with s.stderr_file.open("wb") as err:
            # own session: a Ctrl-C on the terminal reaches migprof, which then stops
            # QEMU in order, rather than killing both QEMUs mid-write
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=self.binary.env(),
                start_new_session=True,
            )
        return self

    def wait_socket(self, timeout: float = 15.0) -> None:
        """Wait for the QMP socket; SetupError with QEMU's own stderr if it exits first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.spec.qmp_socket.exists():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise SetupError(
                    f"QEMU ({self.spec.side}) exited with {self.proc.returncode}: {self.stderr_tail()}"
                )
            time.sleep(0.02)
        raise SetupError(
            f"QEMU ({self.spec.side}) did not open {self.spec.qmp_socket} in {timeout} s"
        )

    def stderr_tail(self, n: int = 3) -> str:
        try:
            lines = self.spec.stderr_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL now (the "destination dies" scenario)."""
        if self.alive():
            self.killed_at_ns = time.time_ns()
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        # the sockets stay while QEMU runs (others may attach); gone with it
        self.spec.qmp_socket.unlink(missing_ok=True)
        self.spec.attach_socket.unlink(missing_ok=True)
        return self.proc.returncode


def find_stray_qemus(alive_owner: callable | None = None) -> list[tuple[int, str]]:
    """Lab QEMUs (``-name migprof-lab-<owner>-...``) whose owning migprof is gone.

    Returns (pid, name). A lab still owned by a running process is never listed, so two
    labs can run side by side.
    """
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"-name" and argv[i + 1].startswith(NAME_PREFIX.encode()):
                name = argv[i + 1].split(b",")[0].decode(errors="replace")
                owner = owner_pid(name)
                if owner is not None and not pid_alive(owner):
                    out.append((int(d.name), name))
    return out


def owner_tag(pid: int | None = None) -> str:
    """Short base-36 id of the owning process, used in every lab object name."""
    n = os.getpid() if pid is None else pid
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    s = ""
    while True:
        n, r = divmod(n, 36)
        s = digits[r] + s
        if not n:
            return s


def owner_pid(name: str) -> int | None:
    """The owner pid encoded in a lab name ``migprof-...-<tag>-...`` (see ``owner_tag``)."""
    m = re.match(r"migprof-(?:lab-)?([0-9a-z]+)", name)
    if not m:
        return None
    try:
        return int(m[1], 36)
    except ValueError:
        return None


    return True
