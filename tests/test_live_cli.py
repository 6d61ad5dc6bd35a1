"""`migprof live` pieces that need no QEMU: target discovery, fallbacks, the --ebpf text."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.commands import live

ROOT = Path(__file__).resolve().parent.parent


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


# run as nobody with no capabilities: a real host where BPF cannot load (check_host is not
# replaced; this once caught it crashing on tracefs' mode 700 instead of falling back)
UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
FALLBACK_PROBE = """
import argparse, io, json
from profiler.commands import live
args = argparse.Namespace(no_trace=False, trace_log=None, no_bpf=False, path="auto")
target = live.Target(pid=4242, side="source", qmp="/run/x.qmp", log_file="/var/log/q.log", comm="qemu")
err = io.StringIO()
sources, info = live._sources(args, target, err)
print(json.dumps({"sources": [s.name for s in sources], "err": err.getvalue(), "info": info}))
"""


def test_no_bpf_falls_back_to_qmp_and_trace():
    """A host where BPF cannot load: one line naming the fix, QMP and trace go on."""
    r = subprocess.run([*UNPRIVILEGED, sys.executable, "-c", FALLBACK_PROBE], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["sources"] == ["qmp", "trace-control", "qemu-trace"]
    problem = "loading BPF needs root or CAP_BPF+CAP_PERFMON (fix: run migprof live as root)"
    assert got["err"].strip().splitlines() == [
        f"migprof: bpf: {problem}; continuing with QMP and QEMU trace only"]
    assert got["info"]["trace_log"] == "/var/log/q.log"  # QEMU's own -D file is tailed, not moved


def test_ebpf_prints_the_program(capsys):
    assert live.run(argparse.Namespace(ebpf=True, path="auto")) == 0
    out = capsys.readouterr().out
    assert "TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)" in out
    assert live.run(argparse.Namespace(ebpf=True, path="kprobe")) == 0
    assert "int ioctl_enter(struct pt_regs *ctx" in capsys.readouterr().out
