"""`migprof live` pieces that need no QEMU: target discovery, fallbacks, the --ebpf text."""

from __future__ import annotations

import json

import pytest
from unprivileged import run_as_nobody

from profiler.sources.target import qmp_socket_from_cmdline


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
    assert qmp_socket_from_cmdline(argv) == sock


# run as nobody with no capabilities: a real host where BPF cannot load (check_host is not
# replaced; this once caught it crashing on tracefs' mode 700 instead of falling back)
FALLBACK_PROBE = """
import io, json
from profiler.attach import live_sources
from profiler.sources.target import Target
target = Target(pid=4242, side="source", qmp="/run/x.qmp", log_file="/var/log/q.log", comm="qemu")
err = io.StringIO()
sources, info = live_sources(target, err=err)
print(json.dumps({"sources": [s.name for s in sources], "err": err.getvalue(), "info": info}))
"""


def test_no_bpf_falls_back_to_qmp_and_trace():
    """A host where BPF cannot load: one line naming the fix, QMP and trace go on."""
    r = run_as_nobody(FALLBACK_PROBE, imports=["bcc", "profiler.attach", "profiler.qmpctl",
                                               "profiler.sources.bpf", "profiler.sources.qemu_tail"])
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["sources"] == ["qmp", "trace-control", "qemu-trace"]
    problem = "loading BPF needs root or CAP_BPF+CAP_PERFMON (fix: run migprof live as root)"
    assert got["err"].strip().splitlines() == [
        f"migprof: bpf: {problem}; continuing with QMP and QEMU trace only"]
    assert got["info"]["trace_log"] == "/var/log/q.log"  # QEMU's own -D file is tailed, not moved


def test_ebpf_prints_the_program(capsys):
    from profiler.cli import main

    assert main(["live", "-p", "1", "--ebpf"]) == 0
    out = capsys.readouterr().out
    assert "TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)" in out
    assert main(["live", "-p", "1", "--ebpf", "--path", "kprobe"]) == 0
    assert "int ioctl_enter(struct pt_regs *ctx" in capsys.readouterr().out
