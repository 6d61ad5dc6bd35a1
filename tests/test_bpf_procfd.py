"""Telling VFIO fds apart from /proc/PID/fd link names and fdinfo flags (vfio-uapi.md §6.4).

The /proc tree here is real files in a tmp dir shaped like /proc/PID/{fd,fdinfo} (symlinks
whose text is what the kernel prints), because no process on this host has VFIO fds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from profiler.sources.procfd import FdKind, classify, pid_alive, scan

O_RDONLY_CLOEXEC = 0o2000000
O_WRONLY_CLOEXEC = 0o2000001


@pytest.mark.parametrize("link,flags,kind", [
    ("/dev/vfio/vfio", None, FdKind.CONTAINER),
    ("/dev/iommu", None, FdKind.IOMMUFD),
    ("/dev/vfio/42", None, FdKind.GROUP),
    ("/dev/vfio/noiommu-3", None, FdKind.GROUP),
    ("/dev/vfio/devices/vfio0", None, FdKind.DEVICE),
    ("anon_inode:[vfio-device]", None, FdKind.DEVICE),
    ("anon_inode:mlx5vf_mig", O_RDONLY_CLOEXEC, FdKind.DATA_SAVE),
    ("anon_inode:mlx5vf_mig", O_WRONLY_CLOEXEC, FdKind.DATA_LOAD),
    ("anon_inode:mtty_mig", O_RDONLY_CLOEXEC, FdKind.DATA_SAVE),
    ("anon_inode:pds_vfio_lm", O_WRONLY_CLOEXEC, FdKind.DATA_LOAD),
    ("anon_inode:hisi_acc_vf_mig", O_RDONLY_CLOEXEC, FdKind.DATA_SAVE),
    ("anon_inode:virtiovf_mig", O_RDONLY_CLOEXEC, FdKind.DATA_SAVE),
    ("anon_inode:qat_vf_mig", O_WRONLY_CLOEXEC, FdKind.DATA_LOAD),
    ("anon_inode:xe_vfio_mig", O_RDONLY_CLOEXEC, FdKind.DATA_SAVE),
    ("anon_inode:ice_vfio_pci_mig", O_RDONLY_CLOEXEC, FdKind.DATA_SAVE),  # out of tree: *mig*
    ("anon_inode:[eventfd]", O_RDONLY_CLOEXEC, FdKind.UNKNOWN),
    ("anon_inode:kvm-vcpu:0", None, FdKind.UNKNOWN),
    ("/dev/kvm", None, FdKind.UNKNOWN),
    ("socket:[1234]", None, FdKind.UNKNOWN),
])
def test_classify(link, flags, kind):
    assert classify(link, flags) is kind


def _proc(tmp: Path, pid: int, fds: dict[int, tuple[str, int, str]]) -> Path:
    """A /proc-shaped tree: fd/N -> link text, fdinfo/N with flags (octal) and extra lines."""
    (tmp / str(pid) / "fd").mkdir(parents=True)
    (tmp / str(pid) / "fdinfo").mkdir()
    for fd, (link, flags, extra) in fds.items():
        os.symlink(link, tmp / str(pid) / "fd" / str(fd))
        (tmp / str(pid) / "fdinfo" / str(fd)).write_text(f"pos:\t0\nflags:\t{flags:07o}\nmnt_id:\t15\n{extra}")
    return tmp


def test_scan_qemu_like_process(tmp_path):
    """A source QEMU mid-migration: container, group, two devices, a save data fd."""
    proc = _proc(tmp_path, 4242, {
        0: ("/dev/null", 0o100002, ""),
        11: ("/dev/vfio/vfio", 0o2000002, ""),
        12: ("/dev/vfio/7", 0o2000002, ""),
        13: ("anon_inode:[vfio-device]", 0o2000002,
             "vfio-device-syspath: /sys/devices/pci0000:00/0000:00:03.0/0000:3b:00.1\n"),
        14: ("anon_inode:[vfio-device]", 0o2000002, ""),
        20: ("anon_inode:[eventfd]", 0o2004002, "eventfd-count: 0\n"),
        31: ("anon_inode:mlx5vf_mig", O_RDONLY_CLOEXEC, ""),
    })
    got = {e.fd: (e.kind, e.device) for e in scan(4242, proc)}
    assert got == {
        11: (FdKind.CONTAINER, None),
        12: (FdKind.GROUP, None),
        13: (FdKind.DEVICE, "0000:3b:00.1"),
        14: (FdKind.DEVICE, None),
        31: (FdKind.DATA_SAVE, None),
    }


def test_scan_gone_process(tmp_path):
    with pytest.raises(ProcessLookupError):
        scan(999999, tmp_path)


def test_scan_real_process():
    """This very process: nothing of VFIO's, and no error."""
    assert scan(os.getpid()) == []


def test_pid_alive_running_zombie_and_reaped():
    """A real child: alive while it runs, not alive as a zombie (kill(0) still succeeds
    then, but it has no fds left to trace), not alive once reaped."""
    import subprocess
    import time

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        stat = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + 10
        while stat.read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z":  # not reaped: a zombie
            assert time.monotonic() < deadline, "the child did not die"
            time.sleep(0.01)
        os.kill(child.pid, 0)  # a zombie still answers kill(0)...
        assert not pid_alive(child.pid)  # ...yet it is gone for tracing
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
