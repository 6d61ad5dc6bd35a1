"""Tell a process's VFIO fds apart from /proc/PID/fd (device, container, group, data fds)."""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from pathlib import Path


class FdKind(enum.IntEnum):
    """fd kinds; the numbers are the FD_* values of bpf/vfio.h."""

    UNKNOWN = 0
    DEVICE = 1
    CONTAINER = 2
    DATA_SAVE = 3
    DATA_LOAD = 4
    GROUP = 5
    IOMMUFD = 6


# Anon-inode names of migration data files in mainline drivers (vfio-uapi.md §4); the
# naming is a convention only, so anything with "mig" in it is taken too.
MIG_ANON_NAMES = frozenset(
    {"mlx5vf_mig", "hisi_acc_vf_mig", "pds_vfio_lm", "virtiovf_mig", "qat_vf_mig",
     "xe_vfio_mig", "mtty_mig"}
)
_GROUP_RE = re.compile(r"^/dev/vfio/(noiommu-)?\d+$")
_CDEV_RE = re.compile(r"^/dev/vfio/devices/vfio\d+$")
_O_ACCMODE = 0o3


@dataclass(frozen=True, slots=True)
class FdEntry:
    """One classified fd of the target process."""

    fd: int
    kind: FdKind
    link: str  # readlink of /proc/PID/fd/N
    flags: int | None = None  # fdinfo flags (octal in /proc), None when unreadable
    device: str | None = None  # device name for device fds, when the kernel tells it


def classify(link: str, flags: int | None = None) -> FdKind:
    """The kind of an fd from its /proc link text and, for data files, its open flags.

    Save and resume data files share a name; O_RDONLY is the save side, O_WRONLY resume.
    """
    if link == "/dev/vfio/vfio":
        return FdKind.CONTAINER
    if link == "/dev/iommu":
        return FdKind.IOMMUFD
    if _CDEV_RE.match(link) or link == "anon_inode:[vfio-device]":
        return FdKind.DEVICE
    if _GROUP_RE.match(link):
        return FdKind.GROUP
    if link.startswith("anon_inode:"):
        name = link[len("anon_inode:"):]
        if name in MIG_ANON_NAMES or "mig" in name:
            if flags is not None and flags & _O_ACCMODE == os.O_WRONLY:
                return FdKind.DATA_LOAD
            return FdKind.DATA_SAVE
    return FdKind.UNKNOWN


def read_fdinfo(pid: int, fd: int, proc: Path = Path("/proc")) -> dict[str, str]:
    """The key: value lines of /proc/PID/fdinfo/FD ({} when it is gone)."""
    try:
        text = (proc / str(pid) / "fdinfo" / str(fd)).read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _device_name(info: dict[str, str], link: str) -> str | None:
    # kernels >= 6.8 print the device's sysfs path in a VFIO device fd's fdinfo
    syspath = info.get("vfio-device-syspath")
    if syspath:
        return os.path.basename(syspath.rstrip("/"))
    m = _CDEV_RE.match(link)
    if m:
        try:
            dev = os.path.realpath(f"/sys/class/vfio-dev/{os.path.basename(link)}/device")
            return os.path.basename(dev)
        except OSError:
            return None
    return None


def scan(pid: int, proc: Path = Path("/proc")) -> list[FdEntry]:
    """Every VFIO-related fd of ``pid`` (fds of other kinds are left out).

    Raises ProcessLookupError when the process is gone, PermissionError without rights.
    """
    fd_dir = proc / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except FileNotFoundError as e:
        raise ProcessLookupError(pid) from e
    out = []
    for name in names:
        try:
            fd = int(name)
            link = os.readlink(fd_dir / name)
        except (ValueError, OSError):
            continue  # closed between listdir and readlink
        if not (link.startswith("/dev/vfio") or link.startswith("anon_inode:") or link == "/dev/iommu"):
            continue
        info = read_fdinfo(pid, fd, proc)
        flags = int(info["flags"], 8) if "flags" in info else None
        kind = classify(link, flags)
        if kind is FdKind.UNKNOWN:
            continue
        device = _device_name(info, link) if kind is FdKind.DEVICE else None
        out.append(FdEntry(fd, kind, link, flags, device))
    return sorted(out, key=lambda e: e.fd)


def threads(pid: int, proc: Path = Path("/proc")) -> dict[int, str]:
    """tid -> thread name (comm) of every thread of ``pid``."""
    out = {}
    try:
        tids = os.listdir(proc / str(pid) / "task")
    except OSError:
        return out
    for t in tids:
        try:
            out[int(t)] = (proc / str(pid) / "task" / t / "comm").read_text().strip()
        except (OSError, ValueError):
            continue
    return out


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie has no fds left to trace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0)
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
