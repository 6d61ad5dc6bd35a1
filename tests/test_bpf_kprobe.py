"""The kprobe attach path: host probing, path choice, and the kernel verifier on this host.

This host has no kprobes and no VFIO, so the kprobe programs are loaded (checked by the
kernel's verifier) but not attached here; the nested VFIO lab (issue 4) runs
``migprof live --path kprobe`` inside its L1 guest, whose kernel has both.
"""

from __future__ import annotations

import os

import pytest

from profiler.errors import SetupError
from profiler.sources import bpf as B

pytestmark = [pytest.mark.bpf]


def test_host_probe_here():
    host = B.check_host()
    assert host.problem is None, host.problem
    assert host.bcc and host.privileged and host.tracefs and host.headers
    # this kernel: tracepoints, no kprobes, so no VFIO symbols found through them
    assert B.choose_path(host, "auto") == ("kprobe" if host.kprobes and host.vfio_symbols else "tracepoint")


def _host(**kw) -> B.HostSupport:
    base = dict(bcc=True, privileged=True, tracefs=True, headers=True, kprobes=False, kfunc=False,
                vfio_symbols=(), problem=None)
    base.update(kw)
    return B.HostSupport(**base)


def test_choose_path():
    vfio = (B.KPROBE_IOCTL, "mtty_save_read")
    assert B.choose_path(_host(kprobes=True, vfio_symbols=vfio)) == "kprobe"
    assert B.choose_path(_host(kprobes=True, vfio_symbols=vfio), "tracepoint") == "tracepoint"
    assert B.choose_path(_host(kprobes=True, vfio_symbols=())) == "tracepoint"  # no vfio.ko loaded
    assert B.choose_path(_host()) == "tracepoint"
    with pytest.raises(SetupError, match="no kprobes or no VFIO symbols"):
        B.choose_path(_host(), "kprobe")


@pytest.mark.parametrize("fn", ["ioctl_enter", "ioctl_exit", "read_enter", "read_exit", "write_enter",
                                "write_exit", "precopy_enter", "precopy_exit"])
def test_kprobe_program_verifies(fn):
    """Each kprobe function compiles and passes this kernel's verifier."""
    from bcc import BPF

    b = BPF(text=B.bpf_source_text("kprobe").encode(),
            cflags=[f"-DTARGET_TGID={os.getpid()}", "-DUSE_RINGBUF=1", f"-I{B.bpf_include_dir()}"])
    try:
        f = b.load_func(fn.encode(), BPF.KPROBE)
        assert f.fd >= 0
    finally:
        b.cleanup()


def test_every_program_compiles_as_it_stands():
    """The .bpf.c files compile with their #ifndef defaults (no -D at all)."""
    from bcc import BPF

    for path in ("tracepoint", "kprobe", "usdt"):
        b = BPF(text=B.bpf_source_text(path).encode(), cflags=[f"-I{B.bpf_include_dir()}"])
        b.cleanup()


def test_kprobe_regexes_match_driver_symbols():
    import re

    reads = ["mlx5vf_save_read", "hisi_acc_vf_save_read", "pds_vfio_save_read", "virtiovf_save_read",
             "qat_vf_save_read", "mtty_save_read"]
    assert all(re.match(B.KPROBE_READ_RE, r) for r in reads)
    assert re.match(B.KPROBE_WRITE_RE, "mtty_resume_write")
    assert re.match(B.KPROBE_PRECOPY_RE, "mlx5vf_precopy_ioctl")
    assert not re.match(B.KPROBE_READ_RE, "vfs_read")
