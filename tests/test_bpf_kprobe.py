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


KPROBE_FUNCTIONS = ["ioctl_enter", "ioctl_exit", "read_enter", "read_exit", "write_enter",
                    "write_exit", "precopy_enter", "precopy_exit"]


def test_kprobe_program_verifies():
    """Each kprobe function compiles and passes this kernel's verifier (one compile)."""
    from bcc import BPF

    b = BPF(text=B.bpf_source_text("kprobe").encode(),
            cflags=[f"-DTARGET_TGID={os.getpid()}", "-DUSE_RINGBUF=1", f"-I{B.bpf_include_dir()}"])
    try:
        fds = {fn: b.load_func(fn.encode(), BPF.KPROBE).fd for fn in KPROBE_FUNCTIONS}
        assert all(fd >= 0 for fd in fds.values()), fds
    finally:
        b.cleanup()


TRACEPOINT_FUNCTIONS = [f"tracepoint__syscalls__sys_{d}_{c}" for c in ("ioctl", "read", "write")
                        for d in ("enter", "exit")] + ["tracepoint__syscalls__sys_enter_close"]


def test_every_program_compiles_as_it_stands():
    """The .bpf.c files compile with their #ifndef defaults (no -D at all), with all their hooks."""
    from bcc import BPF, lib

    want = {"tracepoint": TRACEPOINT_FUNCTIONS,
            "kprobe": [*KPROBE_FUNCTIONS, "tracepoint__syscalls__sys_enter_close"],
            "usdt": []}  # the loader appends one function per probe (qemu_usdt.bpf.c)
    for path, funcs in want.items():
        b = BPF(text=B.bpf_source_text(path).encode(), cflags=[f"-I{B.bpf_include_dir()}"])
        try:
            got = {lib.bpf_function_name(b.module, i).decode() for i in range(lib.bpf_num_functions(b.module))}
            assert got == set(funcs), path
            assert b.get_table("events") is not None, path
        finally:
            b.cleanup()


def test_kprobe_regexes_match_driver_symbols():
    import re

    reads = ["mlx5vf_save_read", "hisi_acc_vf_save_read", "pds_vfio_save_read", "virtiovf_save_read",
             "qat_vf_save_read", "mtty_save_read"]
    assert all(re.match(B.KPROBE_READ_RE, r) for r in reads)
    assert re.match(B.KPROBE_WRITE_RE, "mtty_resume_write")
    assert re.match(B.KPROBE_PRECOPY_RE, "mlx5vf_precopy_ioctl")
    assert not re.match(B.KPROBE_READ_RE, "vfs_read")


def test_kernel_symbols_from_kallsyms(tmp_path):
    """Symbols come from /proc/kallsyms (module functions included), no debugfs needed."""
    ks = tmp_path / "kallsyms"
    ks.write_text("ffffffffc0a01000 t vfio_device_fops_unl_ioctl\t[vfio]\n"
                  "ffffffffc0b02000 t mtty_save_read\t[mtty]\n"
                  "ffffffffc0b02100 t mtty_resume_write\t[mtty]\n"
                  "ffffffffc0b02200 t mtty_precopy_ioctl\t[mtty]\n"
                  "ffffffffc0b02300 d mtty_save_fops\t[mtty]\n"
                  "ffffffff81234560 T vfs_read\n")
    pats = [f"^{B.KPROBE_IOCTL}$", B.KPROBE_READ_RE, B.KPROBE_WRITE_RE, B.KPROBE_PRECOPY_RE]
    assert B.kernel_symbols(pats, str(ks)) == {
        "vfio_device_fops_unl_ioctl", "mtty_save_read", "mtty_resume_write", "mtty_precopy_ioctl"}
    # this host: no VFIO module loaded
    assert B.kernel_symbols([f"^{B.KPROBE_IOCTL}$"]) == set()
