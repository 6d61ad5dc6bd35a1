"""`migprof live` pieces that need no QEMU: target discovery, fallbacks, the --ebpf text."""

from __future__ import annotations

import argparse
import io

import pytest

from profiler.commands import live
from profiler.sources import bpf as B


@pytest.mark.parametrize("argv,sock", [
    (["qemu", "-qmp", "unix:/run/a.qmp,server=on,wait=off"], "/run/a.qmp"),
    (["qemu", "-qmp=unix:/run/b.qmp,server"], "/run/b.qmp"),
    (["qemu", "-chardev", "socket,id=mon0,path=/run/c.qmp,server=on,wait=off",
      "-mon", "chardev=mon0,mode=control"], "/run/c.qmp"),
    (["qemu", "-chardev", "socket,id=mon0,path=/run/hmp.sock,server=on",
      "-mon", "chardev=mon0,mode=readline"], None),  # an HMP monitor is not QMP
    (["qemu", "-qmp", "tcp:127.0.0.1:4444,server"], None),
    (["qemu"], None),
])
def test_qmp_socket_from_cmdline(argv, sock):
    assert live.qmp_socket_from_cmdline(argv) == sock


def _args(**kw) -> argparse.Namespace:
    base = dict(no_trace=False, trace_log=None, no_bpf=False, path="auto")
    base.update(kw)
    return argparse.Namespace(**base)


def test_no_bpf_falls_back_to_qmp_and_trace(monkeypatch):
    """A host without bcc/root/headers: one line naming the fix, QMP and trace go on."""
    problem = "bcc is not installed (fix: apt install python3-bpfcc, then bash scripts/run.sh setup)"
    host = B.HostSupport(False, True, True, True, False, False, (), problem)
    monkeypatch.setattr(B, "check_host", lambda: host)
    target = live.Target(pid=4242, side="source", qmp="/run/x.qmp", log_file="/var/log/q.log", comm="qemu")
    err = io.StringIO()
    sources, info = live._sources(_args(), target, err)
    assert [s.name for s in sources] == ["qmp", "trace-control", "qemu-trace"]
    assert err.getvalue().strip().splitlines() == [
        f"migprof: bpf: {problem}; continuing with QMP and QEMU trace only"]
    assert info["trace_log"] == "/var/log/q.log"  # QEMU's own -D file is tailed, not moved


def test_ebpf_prints_the_program(capsys):
    assert live.run(argparse.Namespace(ebpf=True, path="auto")) == 0
    out = capsys.readouterr().out
    assert "TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)" in out
    assert live.run(argparse.Namespace(ebpf=True, path="kprobe")) == 0
    assert "int ioctl_enter(struct pt_regs *ctx" in capsys.readouterr().out
