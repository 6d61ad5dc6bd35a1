"""Load migprof's VFIO BPF programs on QEMU processes and turn their records into events.

The only module that imports bcc. Two attach paths share one event record (bpf/vfio.h):
``tracepoint`` (syscalls:sys_enter/exit_{ioctl,read,write,close}, works on any kernel
with syscall tracepoints) and ``kprobe`` (the VFIO core ioctl handler and the drivers'
data-file fops; preferred where kprobes and the VFIO symbols exist, since it costs
nothing on the target's other syscalls).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib.resources
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from profiler import events as ev
from profiler.errors import MigprofError, SetupError
from profiler.sources.base import Source
from profiler.sources.procfd import FdEntry, FdKind, pid_alive, scan

log = logging.getLogger(__name__)

# --- VFIO constants (vfio-uapi.md; mirrored in bpf/vfio.h) -----------------------------
VFIO_GROUP_GET_DEVICE_FD = 0x3B6A
VFIO_DEVICE_RESET = 0x3B6F
VFIO_DEVICE_FEATURE = 0x3B75
VFIO_MIG_GET_PRECOPY_INFO = 0x3B79
FEATURE_MASK, FEATURE_GET, FEATURE_SET, FEATURE_PROBE = 0xFFFF, 1 << 16, 1 << 17, 1 << 18
FEATURES = {0: "PCI_VF_TOKEN", 1: "MIGRATION", 2: "MIG_DEVICE_STATE", 3: "LOW_POWER_ENTRY",
            4: "LOW_POWER_ENTRY_WITH_WAKEUP", 5: "LOW_POWER_EXIT", 6: "DMA_LOGGING_START",
            7: "DMA_LOGGING_STOP", 8: "DMA_LOGGING_REPORT", 9: "MIG_DATA_SIZE",
            10: "BUS_MASTER", 11: "DMA_BUF", 12: "MIG_PRECOPY_INFOv2", 13: "ZPCI_ERROR"}
STATES = {0: "ERROR", 1: "STOP", 2: "RUNNING", 3: "STOP_COPY", 4: "RESUMING",
          5: "RUNNING_P2P", 6: "PRE_COPY", 7: "PRE_COPY_P2P"}
MIGRATION_FLAGS = {1: "STOP_COPY", 2: "P2P", 4: "PRE_COPY"}
DIRTY_PAGES_FLAGS = {1: "START", 2: "STOP", 4: "GET_BITMAP"}

# event types of struct vfio_event
EV_IOCTL, EV_PRECOPY, EV_READ, EV_WRITE, EV_CLOSE, EV_DEVNAME, EV_RESET, EV_DIRTY = range(1, 9)
NAME_LEN = 40
MAX_FDS, MAX_TARGETS = 8192, 64  # as in vfio_syscalls.bpf.c (MAX_TARGETS: the default)

# numpy mirror of struct vfio_event (bpf/vfio.h); decoding a batch is one frombuffer
EVENT_DTYPE = np.dtype(
    [
        ("ts_ns", "<u8"), ("dur_ns", "<u8"), ("a", "<u8"), ("b", "<u8"), ("ret", "<i8"),
        ("tgid", "<u4"), ("tid", "<u4"), ("fd", "<i4"), ("aux_fd", "<i4"), ("cmd", "<u4"),
        ("flags", "<u4"), ("state", "<u4"), ("type", "u1"), ("kind", "u1"), ("arg_ok", "u1"),
        ("state_known", "u1"), ("comm", "S16"), ("name", f"S{NAME_LEN}"),
    ],
    align=True,
)


class FdInfo(ctypes.Structure):
    """struct fd_info of bpf/vfio.h (seeded from the /proc scan at attach)."""

    _fields_ = [("kind", ctypes.c_uint8), ("state_known", ctypes.c_uint8),
                ("pad", ctypes.c_uint16), ("state", ctypes.c_uint32),
                ("owner", ctypes.c_int32), ("pad2", ctypes.c_uint32)]


class FdKey(ctypes.Structure):
    _fields_ = [("tgid", ctypes.c_uint32), ("fd", ctypes.c_int32)]


PATHS = ("tracepoint", "kprobe")
PROGRAMS = {"tracepoint": "vfio_syscalls.bpf.c", "kprobe": "vfio_kprobes.bpf.c", "usdt": "qemu_usdt.bpf.c"}
TRACEFS = Path("/sys/kernel/tracing")
# kprobe path: the VFIO core device ioctl, and each driver's data-file fops
KPROBE_IOCTL = "vfio_device_fops_unl_ioctl"
KPROBE_READ_RE = r"^(mlx5vf|hisi_acc_vf|pds_vfio|virtiovf|qat_vf|xe_vfio_pci|xe_vfio|mtty)_save_read$"
KPROBE_WRITE_RE = r"^(mlx5vf|hisi_acc_vf|pds_vfio|virtiovf|qat_vf|xe_vfio_pci|xe_vfio|mtty)_resume_write$"
KPROBE_PRECOPY_RE = r"^(mlx5vf|hisi_acc_vf|virtiovf|qat_vf|mtty)_precopy_ioctl$"


def bpf_source_text(path: str = "tracepoint") -> str:
    """The C text of the program for an attach path (package data, not a relative file)."""
    return importlib.resources.files("bpf").joinpath(PROGRAMS[path]).read_text()


def bpf_include_dir() -> str:
    return str(importlib.resources.files("bpf"))


# --- host checks ---------------------------------------------------------------------


def ensure_tracefs() -> str | None:
    """Mount tracefs at /sys/kernel/tracing if it is not; None when fine, else the problem."""
    if (TRACEFS / "events").is_dir():
        return None
    if os.geteuid() != 0:
        return "tracefs is not mounted (fix: mount -t tracefs tracefs /sys/kernel/tracing)"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tracefs", str(TRACEFS).encode(), b"tracefs", 0, None) != 0:
        e = ctypes.get_errno()
        return f"cannot mount tracefs at {TRACEFS}: {os.strerror(e)}"
    log.info("mounted tracefs at %s", TRACEFS)
    return None


def _has_cap_bpf() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                caps = int(line.split()[1], 16)
                # CAP_SYS_ADMIN (21), or CAP_BPF (39) with CAP_PERFMON (38)
                return bool(caps & (1 << 21)) or (bool(caps & (1 << 39)) and bool(caps & (1 << 38)))
    except OSError:
        pass
    return False


@dataclass(frozen=True, slots=True)
class HostSupport:
    """What this host offers the collector; ``problem`` is one line naming the fix."""

    bcc: bool
    privileged: bool
    tracefs: bool
    headers: bool
    kprobes: bool
    kfunc: bool
    vfio_symbols: tuple[str, ...]
    problem: str | None


def check_host() -> HostSupport:
    """Probe once: bcc, privileges, tracefs, kernel headers, kprobes/fentry, VFIO symbols."""
    try:
        import bcc  # noqa: F401
        have_bcc = hasattr(bcc, "BPF")
    except ImportError:
        have_bcc = False
    priv = _has_cap_bpf()
    tf_problem = ensure_tracefs() if priv else "needs root"
    rel = os.uname().release
    kdir = Path(f"/lib/modules/{rel}")
    headers = (any((kdir / d / "include/linux/kconfig.h").exists() for d in ("build", "source"))
               or Path("/sys/kernel/kheaders.tar.xz").exists())
    # os.path.exists, not Path.exists: tracefs is mode 700, so an unprivileged stat raises
    kprobes = os.path.exists(TRACEFS / "kprobe_events")
    kfunc = False
    symbols: tuple[str, ...] = ()
    if have_bcc and priv:
        from bcc import BPF

        try:
            kfunc = bool(BPF.support_kfunc())
        except Exception:  # older bcc or no BTF
            kfunc = False
        if kprobes:
            symbols = tuple(sorted(kernel_symbols([f"^{KPROBE_IOCTL}$", KPROBE_READ_RE, KPROBE_WRITE_RE,
                                                   KPROBE_PRECOPY_RE])))
    problem = None
    if not have_bcc:
        problem = "bcc is not installed (fix: apt install python3-bpfcc, then bash scripts/run.sh setup)"
    elif not priv:
        problem = "loading BPF needs root or CAP_BPF+CAP_PERFMON (fix: run migprof live as root)"
    elif tf_problem:
        problem = tf_problem
    elif not headers:
        problem = (f"no kernel headers for {rel} (fix: apt install linux-headers-amd64 and "
                   f"bash scripts/run.sh setup, which links /lib/modules/{rel}/build)")
    return HostSupport(have_bcc, priv, tf_problem is None, headers, kprobes, kfunc, symbols, problem)


def kernel_symbols(patterns: list[str], kallsyms: str = "/proc/kallsyms") -> set[str]:
    """Text symbols of the running kernel and its modules matching any of ``patterns``.

    Read from /proc/kallsyms directly: bcc's get_kprobe_functions also needs debugfs
    (its kprobe blacklist), which hosts often leave unmounted.
    """
    import re

    rx = [re.compile(p) for p in patterns]
    out: set[str] = set()
    try:
        with open(kallsyms) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in ("t", "T") and any(r.match(parts[2]) for r in rx):
                    out.add(parts[2])
    except OSError:
        pass
    return out


def choose_path(host: HostSupport, wanted: str = "auto") -> str:
    """kprobe when the kernel has kprobes and the VFIO ioctl symbol; else tracepoint."""
    have_kprobe = host.kprobes and KPROBE_IOCTL in host.vfio_symbols
    if wanted == "kprobe":
        if not have_kprobe:
            raise SetupError("--path kprobe: this kernel has no kprobes or no VFIO symbols "
                             f"({KPROBE_IOCTL} not found); use --path tracepoint")
        return "kprobe"
    if wanted == "tracepoint":
        return "tracepoint"
    return "kprobe" if have_kprobe else "tracepoint"


def measure_clock_offset(samples: int = 15) -> tuple[int, int]:
    """(CLOCK_REALTIME - CLOCK_MONOTONIC in ns, uncertainty in ns), best of ``samples``.

    BPF stamps with bpf_ktime_get_ns (monotonic); QEMU's log with the wall clock. The
    tightest realtime/monotonic/realtime sandwich gives the offset.
    """
    best = None
    for _ in range(samples):
        r0 = time.clock_gettime_ns(time.CLOCK_REALTIME)
        m = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        r1 = time.clock_gettime_ns(time.CLOCK_REALTIME)
        gap = r1 - r0
        if best is None or gap < best[1]:
            best = ((r0 + r1) // 2 - m, gap)
    assert best is not None
    return best


# --- decoding ------------------------------------------------------------------------


def _flag_names(value: int, names: dict[int, str]) -> str:
    return "|".join(n for bit, n in names.items() if value & bit) or "0"


def feature_text(flags: int) -> str:
    """'SET MIG_DEVICE_STATE' for 0x20002; 'PROBE+SET DMA_LOGGING_START' and so on."""
    ops = [n for bit, n in ((FEATURE_PROBE, "PROBE"), (FEATURE_GET, "GET"), (FEATURE_SET, "SET")) if flags & bit]
    feat = FEATURES.get(flags & FEATURE_MASK, f"feature{flags & FEATURE_MASK}")
    return f"{'+'.join(ops) or 'NONE'} {feat}"


def decode(records: np.ndarray, offset_ns: int, names: dict[tuple[int, int], str],
           sides: dict[int, str], seq0: int = 0) -> pd.DataFrame:
    """Records of EVENT_DTYPE -> a schema frame (``names``: (tgid, device fd) -> device name).

    ``names`` is updated from VFIO_GROUP_GET_DEVICE_FD records, which carry the name.
    """
    n = len(records)
    if n == 0:
        return ev.empty_frame()
    typ = records["type"].astype(np.int64)
    tgid = records["tgid"].astype(np.int64)
    fd = records["fd"].astype(np.int64)
    aux = records["aux_fd"].astype(np.int64)
    ret = records["ret"].astype(np.int64)
    flags = records["flags"].astype(np.int64)
    cmd = records["cmd"].astype(np.int64)
    state = records["state"].astype(np.int64)
    kind = records["kind"].astype(np.int64)
    # VFIO_GROUP_GET_DEVICE_FD names a device fd (rare: only at QEMU start)
    for i in np.flatnonzero((typ == EV_DEVNAME) & (ret >= 0)):
        names[(int(tgid[i]), int(ret[i]))] = records["name"][i].decode(errors="replace")

    is_data = np.isin(typ, (EV_READ, EV_WRITE, EV_PRECOPY)) | ((typ == EV_CLOSE) & np.isin(kind, (3, 4)))
    dev_fd = np.where(is_data, aux, np.where(typ == EV_DEVNAME, ret, fd))
    dev_key = pd.Series((tgid << 32) | (dev_fd & 0xFFFFFFFF))
    name_map = {(t << 32) | (f & 0xFFFFFFFF): nm for (t, f), nm in names.items()}
    device = dev_key.map(name_map).astype("string")
    fallback = pd.Series("fd" + pd.Series(dev_fd).astype(str), dtype="string")
    known_dev = (dev_fd >= 0) & (typ != EV_DIRTY)
    device = device.where(device.notna() | ~pd.Series(known_dev), fallback)

    event = np.select(
        [typ == EV_PRECOPY, typ == EV_READ, typ == EV_WRITE, typ == EV_CLOSE],
        [ev.BPF_PRECOPY_INFO, ev.BPF_DATA_READ, ev.BPF_DATA_WRITE, ev.BPF_FD_CLOSE],
        default=ev.BPF_IOCTL,
    )
    state_txt = pd.Series(state).map(STATES)
    known_state = (typ == EV_IOCTL) | ((np.isin(typ, (EV_READ, EV_WRITE))) & (records["state_known"] == 1))
    set_or_get = (flags & FEATURE_MASK == 2) & ((flags & (FEATURE_SET | FEATURE_GET)) != 0) & (typ == EV_IOCTL)
    known_state &= set_or_get | (typ != EV_IOCTL)
    state_col = state_txt.where(pd.Series(known_state)).astype("string")

    comm = pd.Series(records["comm"]).str.decode("utf-8", errors="replace")
    feat = pd.Series(flags).map(feature_text)
    detail = pd.Series([None] * n, dtype="string")
    detail = detail.mask(pd.Series(typ == EV_IOCTL), feat)
    mig = (typ == EV_IOCTL) & ((flags & FEATURE_MASK) == 1) & (flags & FEATURE_GET != 0) & (ret == 0)
    if mig.any():
        mig_txt = feat + " mig_flags=" + pd.Series(records["a"].astype(np.int64)).map(lambda v: _flag_names(v, MIGRATION_FLAGS))
        detail = detail.mask(pd.Series(mig), mig_txt)
    detail = detail.mask(pd.Series(typ == EV_DEVNAME), "VFIO_GROUP_GET_DEVICE_FD")
    detail = detail.mask(pd.Series(typ == EV_RESET), "VFIO_DEVICE_RESET")
    dirty = pd.Series(flags).map(lambda v: "VFIO_IOMMU_DIRTY_PAGES " + _flag_names(v, DIRTY_PAGES_FLAGS))
    detail = detail.mask(pd.Series(typ == EV_DIRTY), dirty)
    detail = detail.mask(pd.Series(np.isin(typ, (EV_READ, EV_WRITE, EV_PRECOPY))), comm)
    kind_txt = pd.Series(kind).map({k.value: k.name.lower() for k in FdKind})
    detail = detail.mask(pd.Series(typ == EV_CLOSE), kind_txt)

    is_ioctl = typ == EV_IOCTL
    data_size = is_ioctl & ((flags & FEATURE_MASK) == 9) & (ret == 0) & (flags & FEATURE_PROBE == 0)
    rw = np.isin(typ, (EV_READ, EV_WRITE))
    pre = typ == EV_PRECOPY
    bytes_col = np.where(rw, records["a"].astype(np.int64), np.where(data_size, records["a"].astype(np.int64), -1))
    requested = np.where(rw, records["b"].astype(np.int64), -1)
    data_fd = np.where(is_ioctl & (aux >= 0), aux, -1)

    def na(arr: np.ndarray, mask: np.ndarray) -> pd.Series:
        return pd.Series(pd.array(arr, dtype="Int64")).mask(pd.Series(~mask))

    t = records["ts_ns"].astype(np.int64)
    raw = (pd.Series(event).astype(str) + " pid=" + pd.Series(tgid).astype(str) + " tid="
           + pd.Series(records["tid"].astype(np.int64)).astype(str) + " fd=" + pd.Series(fd).astype(str)
           + " ret=" + pd.Series(ret).astype(str) + " [" + comm + "]")
    df = pd.DataFrame({
        "t_ns": pd.array(t + offset_ns, dtype="Int64"),
        "clock_ns": pd.array(t, dtype="Int64"),
        "clock": ev.Clock.MONOTONIC.value,
        "seq": pd.array(np.arange(seq0, seq0 + n), dtype="Int64"),
        "side": pd.Series(tgid).map(sides).fillna(ev.Side.UNKNOWN.value),
        "pid": pd.array(tgid, dtype="Int64"),
        "tid": pd.array(records["tid"].astype(np.int64), dtype="Int64"),
        "origin": ev.Origin.BPF.value,
        "event": event,
        "device": device,
        "bytes": na(bytes_col, bytes_col >= 0),
        "init_bytes": na(records["a"].astype(np.int64), pre & (ret == 0)),
        "dirty_bytes": na(records["b"].astype(np.int64), pre & (ret == 0)),
        "stopcopy_bytes": na(records["a"].astype(np.int64), data_size),
        "dur_ns": na(records["dur_ns"].astype(np.int64), typ != EV_CLOSE),
        "requested_bytes": na(requested, requested >= 0),
        "data_fd": na(data_fd, data_fd >= 0),
        "ret": na(ret, typ != EV_CLOSE),
        "fd": pd.array(fd, dtype="Int64"),
        "cmd": na(cmd, typ != EV_CLOSE),
        "flags": na(flags, np.isin(typ, (EV_IOCTL, EV_PRECOPY, EV_DIRTY))),
        "state": state_col,
        "detail": detail,
        "raw": raw,
    })
    return ev.conform(df)


# --- the source ----------------------------------------------------------------------


class BufferedBpfSource(Source):
    """What BpfSource and UsdtSource share: a bcc program's ring or perf buffer.

    Subclasses load ``self._b`` (with ``self.buffer`` "ring" or "perf"), call
    ``_open_buffer``, and define ``RECORD`` (one record as the program emits it),
    ``_frame`` (the records taken so far -> events) and ``_targets_alive``.
    """

    RECORD: np.dtype

    def __init__(self) -> None:
        self._b: Any = None
        self.buffer: str | None = None
        self._raw: list[bytes] = []
        self._perf_lost = 0
        self._drops_seen = 0
        self._lock = threading.Lock()
        self._closed = False

    def _open_buffer(self, perf_pages: int) -> None:
        b = self._b
        assert b is not None
        if self.buffer == "ring":
            b[b"events"].open_ring_buffer(self._on_event)
        else:
            b[b"events"].open_perf_buffer(self._on_event, page_cnt=perf_pages, lost_cb=self._on_lost)

    def _on_event(self, _cpu_or_ctx: Any, data: Any, size: int) -> int:
        self._raw.append(ctypes.string_at(data, self.RECORD.itemsize))
        return 0

    def _on_lost(self, lost: int) -> None:
        self._perf_lost += int(lost)

    def _poll(self, timeout_ms: int) -> None:
        b = self._b
        if b is None:
            return
        if self.buffer == "ring":
            b.ring_buffer_poll(timeout_ms)
        else:
            b.perf_buffer_poll(timeout_ms)

    def _take_records(self) -> np.ndarray | None:
        """The records received since the last call (None: none)."""
        raw, self._raw = self._raw, []
        return np.frombuffer(b"".join(raw), dtype=self.RECORD) if raw else None

    def _lost_now(self) -> int:
        """New losses since the last call: ring-buffer reserve failures plus perf losses."""
        b = self._b
        if b is None:  # detached: the per-CPU drop counters are gone, nothing new to count
            return 0
        # the program's "drops" map: a per-CPU array, one counter per CPU
        total = self._perf_lost + int(sum(int(v) for v in b[b"drops"][ctypes.c_int(0)]))
        new = total - self._drops_seen
        self._drops_seen = total
        return new

    def _frame(self) -> pd.DataFrame:
        raise NotImplementedError

    def _targets_alive(self) -> bool:
        raise NotImplementedError

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        while not stop.is_set() and not self._closed:
            self._poll(self.poll_ms)
            yield self._frame()
            if not self._targets_alive():
                log.info("%s: target process(es) exited", self.name)
                break
        if not self._closed:
            self._poll(0)
            yield self._frame()

    def drain(self) -> pd.DataFrame:
        """Everything buffered now (used by tests and at close)."""
        self._poll(0)
        return self._frame()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            b, self._b = self._b, None
        if b is not None:
            try:
                b.cleanup()
            except Exception as e:  # detaching must not raise out of __exit__
                log.warning("%s: cleanup: %s", self.name, e)


@dataclass
class _Counters:
    events: int = 0
    lost: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class BpfSource(BufferedBpfSource):
    """bcc programs on one or more QEMU processes; yields bpf_* events (``pid`` = the QEMU).

    ``sides`` maps pid -> source/destination. ``path`` is auto, tracepoint or kprobe.
    ``ringbuf`` None = ring buffer when the kernel has it, perf buffer otherwise.
    ``dynamic``: targets come and go while attached (``add_target``/``remove_target``: a
    map update and a /proc scan, no compile and no attach); it may start with no pid, and
    the stream goes on when every target has exited. Otherwise one pid is a compile-time
    constant (the cheapest filter) and the stream ends when the targets have exited.
    """

    name = "bpf"
    RECORD = EVENT_DTYPE

    def __init__(self, pids: list[int], sides: dict[int, str] | None = None, path: str = "auto",
                 ringbuf: bool | None = None, poll_ms: int = 100, follow_exit: bool = True,
                 ringbuf_pages: int = 256, dynamic: bool = False, max_targets: int = MAX_TARGETS):
        if not pids and not dynamic:
            raise MigprofError("bpf: no target pid")
        self.pids = [int(p) for p in pids]
        self.sides = {int(k): v for k, v in (sides or {}).items()}
        self.wanted_path = path
        self.ringbuf = ringbuf
        self.poll_ms = poll_ms
        self.follow_exit = follow_exit
        self.ringbuf_pages = ringbuf_pages  # 4 KiB pages of the ring buffer (a power of 2)
        self.dynamic = dynamic
        self.max_targets = max_targets
        super().__init__()
        self.path: str | None = None
        self.host: HostSupport | None = None
        self.offset_ns = 0
        self.offset_err_ns = 0
        self.attached_at_ns: int | None = None
        self.scanned: dict[int, list[FdEntry]] = {}
        self.names: dict[tuple[int, int], str] = {}
        self.programs: list[int] = []
        self.kprobes: list[str] = []  # kernel functions probed (kprobe path)
        self._slots: dict[int, int] = {}  # pid -> its slot in fdkind
        self._tlock = threading.Lock()  # targets change on the caller's thread, records decode on ours
        self._seq = 0
        self._c = _Counters()

    # attach ------------------------------------------------------------------------
    def cflags(self) -> list[str]:
        one = len(self.pids) == 1 and not self.dynamic
        return [
            f"-DTARGET_TGID={self.pids[0] if one else 0}",
            f"-DMAX_TARGETS={self.max_targets}",
            f"-DUSE_RINGBUF={1 if self.buffer == 'ring' else 0}",
            f"-DRINGBUF_PAGES={self.ringbuf_pages}",
            f"-I{bpf_include_dir()}",
        ]

    def __enter__(self) -> BpfSource:
        self.host = check_host()
        if self.host.problem:
            raise SetupError(f"bpf: {self.host.problem}")
        if len(self.pids) > self.max_targets:
            raise MigprofError(f"bpf: at most {self.max_targets} processes at once")
        pids, self.pids = self.pids, []
        scans = {pid: _scan(pid) for pid in pids}
        self.path = choose_path(self.host, self.wanted_path)
        self._load()
        try:
            for pid, entries in scans.items():
                self._put_target(pid, entries)
            self._open_buffer(self.ringbuf_pages)
        except BaseException:
            self.close()
            raise
        self.offset_ns, self.offset_err_ns = measure_clock_offset()
        self.attached_at_ns = time.time_ns()
        log.info("bpf: %s path, %s buffer, clock offset %d ns (+-%d)", self.path, self.buffer,
                 self.offset_ns, self.offset_err_ns)
        return self

    def _load(self) -> None:
        from bcc import BPF

        text = bpf_source_text(self.path or "tracepoint")
        tries = ["ring", "perf"] if self.ringbuf in (None, True) else ["perf"]
        last: Exception | None = None
        for buf in tries:
            self.buffer = buf
            try:
                self._b = BPF(text=text.encode(), cflags=self.cflags())
                break
            except Exception as e:  # a kernel without BPF_MAP_TYPE_RINGBUF (< 5.8)
                last = e
                if self.ringbuf is True:
                    break
                log.warning("bpf: ring buffer unavailable (%s); using the perf buffer", e)
        if self._b is None:
            raise SetupError(f"bpf: cannot load {PROGRAMS[self.path or 'tracepoint']}: {last}")
        if self.path == "kprobe":
            self._attach_kprobes()
        self.programs = self._prog_ids()

    def _attach_kprobes(self) -> None:
        b = self._b
        assert b is not None
        b.attach_kprobe(event=KPROBE_IOCTL, fn_name="ioctl_enter")
        b.attach_kretprobe(event=KPROBE_IOCTL, fn_name="ioctl_exit")
        self.kprobes = [KPROBE_IOCTL]
        for regex, enter, exit_ in ((KPROBE_READ_RE, "read_enter", "read_exit"),
                                    (KPROBE_WRITE_RE, "write_enter", "write_exit"),
                                    (KPROBE_PRECOPY_RE, "precopy_enter", "precopy_exit")):
            for sym in sorted(kernel_symbols([regex])):  # one per loaded migration driver
                b.attach_kprobe(event=sym, fn_name=enter)
                b.attach_kretprobe(event=sym, fn_name=exit_)
                self.kprobes.append(sym)
        log.info("bpf: kprobes on %s", ", ".join(self.kprobes))
        # close() of a data fd: its tracepoint is attached with the program (TRACEPOINT_PROBE)

    def _prog_ids(self) -> list[int]:
        """IDs of the programs we loaded (to check a clean detach)."""
        ids = []
        b = self._b
        for fn in getattr(b, "funcs", {}).values():
            try:
                info = _prog_info(fn.fd)
                if info:
                    ids.append(info)
            except OSError:
                continue
        return sorted(ids)

    # targets at run time -------------------------------------------------------------
    def add_target(self, pid: int, side: str | None = None) -> list[FdEntry]:
        """Trace one more process from now on: its fds from a /proc scan into the kernel's
        maps, then its tgid into ``targets``. Returns the fds found. MigprofError when the
        process has gone, the program was built for one pid, or every slot is taken."""
        pid = int(pid)
        if self._b is None:
            raise MigprofError("bpf: not attached")
        if not self.dynamic:
            raise MigprofError("bpf: loaded for fixed targets (dynamic=False)")
        entries = _scan(pid)
        if side is not None:
            self.sides = {**self.sides, pid: side}
        self._put_target(pid, entries)
        return entries

    def remove_target(self, pid: int) -> None:
        """Stop tracing ``pid``: out of ``targets`` first, then its fds and in-flight
        syscalls are forgotten, and its slot is free for the next target."""
        pid = int(pid)
        b = self._b
        with self._tlock:
            slot = self._slots.pop(pid, None)
            if slot is None or b is None:
                return
            self.pids = [p for p in self.pids if p != pid]
            with contextlib.suppress(KeyError):
                del b[b"targets"][ctypes.c_uint32(pid)]
            fdkind = b[b"fdkind"] if self.path == "tracepoint" else None
            for name in (b"fds", b"fd_files"):  # keyed by (tgid, fd)
                for k in _forget(_table(b, name), lambda k: k.tgid == pid):
                    if fdkind is not None and 0 <= k.fd < MAX_FDS:
                        fdkind[ctypes.c_int(slot * MAX_FDS + k.fd)] = ctypes.c_uint8(0)
            for name in (b"inflight", b"inflight_file", b"last_dev"):  # keyed by pid_tgid
                _forget(_table(b, name), lambda k: k.value >> 32 == pid)
            # its names stay: records still in the buffer are decoded after this
            self.scanned.pop(pid, None)

    def targets(self) -> list[int]:
        """The pids traced now."""
        with self._tlock:
            return list(self.pids)

    def _put_target(self, pid: int, entries: list[FdEntry]) -> None:
        """A slot for ``pid``, its scanned fds into ``fds``/``fdkind``, then ``targets``
        (last, so the kernel never sees a target without its fds)."""
        b = self._b
        assert b is not None
        with self._tlock:
            if pid in self._slots:
                return
            used = set(self._slots.values())
            slot = next((i for i in range(self.max_targets) if i not in used), None)
            if slot is None:
                raise MigprofError(f"bpf: at most {self.max_targets} processes at once")
            fds = b[b"fds"]
            fdkind = b[b"fdkind"] if self.path == "tracepoint" else None
            # a pid used before: the names of the earlier process are not this one's
            self.names = {k: v for k, v in self.names.items() if k[0] != pid}
            devices = [e for e in entries if e.kind is FdKind.DEVICE]
            for e in entries:
                owner = -1
                if e.kind in (FdKind.DATA_SAVE, FdKind.DATA_LOAD) and len(devices) == 1:
                    owner = devices[0].fd  # one device: the data fd can only be its
                if fdkind is not None:
                    # (the kprobe program keys data files by struct file and learns them itself)
                    fds[FdKey(pid, e.fd)] = FdInfo(kind=int(e.kind), owner=owner)
                    if e.fd < MAX_FDS:
                        fdkind[ctypes.c_int(slot * MAX_FDS + e.fd)] = ctypes.c_uint8(int(e.kind))
                if e.device:
                    self.names[(pid, e.fd)] = e.device
            b[b"targets"][ctypes.c_uint32(pid)] = ctypes.c_uint32(slot)
            self._slots[pid] = slot
            self.pids.append(pid)
            self.scanned[pid] = entries

    # stream ------------------------------------------------------------------------
    def _frame(self) -> pd.DataFrame:
        recs = self._take_records()
        frames = []
        if recs is not None:
            with self._tlock:
                df = decode(recs, self.offset_ns, self.names, self.sides, self._seq)
            self._seq += len(df)
            self._c.events += len(df)
            for name, cnt in df["event"].value_counts().items():
                self._c.by_type[str(name)] = self._c.by_type.get(str(name), 0) + int(cnt)
            frames.append(df)
        lost = self._lost_now()
        if lost:
            self._c.lost += lost
            log.warning("bpf: %d events lost (buffer full)", lost)
            now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            frames.append(ev.conform(pd.DataFrame({
                "t_ns": pd.array([now + self.offset_ns], dtype="Int64"),
                "clock_ns": pd.array([now], dtype="Int64"), "clock": ev.Clock.MONOTONIC.value,
                "seq": pd.array([self._seq], dtype="Int64"), "origin": ev.Origin.BPF.value,
                "side": ev.Side.UNKNOWN.value, "event": ev.BPF_LOST,
                "count": pd.array([lost], dtype="Int64"), "raw": f"bpf lost {lost} events",
            })))
            self._seq += 1
        # nothing new: a bare heartbeat (a copy of the typed empty frame costs ~0.1-1 ms,
        # ten times a second)
        return ev.concat(frames) if frames else pd.DataFrame()

    def _alive(self) -> list[int]:
        return [p for p in self.targets() if pid_alive(p)]

    def _targets_alive(self) -> bool:
        return self.dynamic or not self.follow_exit or bool(self._alive())

    def health(self) -> dict[str, Any]:
        h: dict[str, Any] = {
            "source": self.name,
            "path": self.path,
            "buffer": self.buffer,
            "pids": self.targets(),
            "dynamic": self.dynamic,
            "events": self._c.events,
            "lost": self._c.lost,
            "by_event": dict(self._c.by_type),
            "clock_offset_ns": self.offset_ns,
            "clock_offset_err_ns": self.offset_err_ns,
            "attached_at_ns": self.attached_at_ns,
            "scanned_fds": {p: [(e.fd, e.kind.name.lower(), e.link) for e in es]
                            for p, es in dict(self.scanned).items()},
            "programs": self.programs,
            "kprobes": self.kprobes,
        }
        if self.host:
            h["host"] = asdict(self.host)
        return h


def _scan(pid: int) -> list[FdEntry]:
    """The /proc scan of ``pid``'s fds, or one line saying why not."""
    try:
        return scan(pid)
    except ProcessLookupError:
        raise MigprofError(f"bpf: no process {pid} (gone, or not a pid)") from None
    except PermissionError:
        raise SetupError(f"bpf: cannot read /proc/{pid}/fd (fix: run as root)") from None


def _table(b: Any, name: bytes) -> Any:
    """A map of the loaded program, None when this program has no map of that name."""
    try:
        return b[name]
    except KeyError:
        return None


def _forget(table: Any, match: Any) -> list[Any]:
    """Delete the keys of ``table`` (None: no such map) that ``match``; returns them."""
    if table is None:
        return []
    keys = [k for k in table if match(k)]
    for k in keys:
        with contextlib.suppress(KeyError):
            del table[k]
    return keys


class _BpfProgInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("pad", ctypes.c_uint8 * 200)]


def _prog_info(prog_fd: int) -> int | None:
    """The kernel's id of a loaded program (bpf(BPF_OBJ_GET_INFO_BY_FD))."""

    class Attr(ctypes.Structure):
        _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]

    info = _BpfProgInfo()
    attr = Attr(prog_fd, ctypes.sizeof(info), ctypes.addressof(info))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    SYS_bpf, BPF_OBJ_GET_INFO_BY_FD = 321, 15
    if libc.syscall(SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return int(info.id)


def loaded_prog_ids() -> set[int]:
    """IDs of every BPF program loaded in the kernel now (BPF_PROG_GET_NEXT_ID)."""

    class Attr(ctypes.Structure):
        _fields_ = [("start_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    SYS_bpf, BPF_PROG_GET_NEXT_ID = 321, 11
    ids, cur = set(), 0
    while True:
        attr = Attr(cur, 0, 0)
        if libc.syscall(SYS_bpf, BPF_PROG_GET_NEXT_ID, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
            if ctypes.get_errno() == errno.ENOENT:
                return ids
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        cur = attr.next_id
        ids.add(cur)
