"""`migprof live` pieces that need no QEMU: target discovery, fallbacks, the --ebpf text."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from profiler.sources.target import qmp_socket_from_cmdline

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
    assert qmp_socket_from_cmdline(argv) == sock


# run as nobody with no capabilities: a real host where BPF cannot load (check_host is not
# replaced; this once caught it crashing on tracefs' mode 700 instead of falling back)
UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
FALLBACK_PROBE = """
import io, json
from profiler.attach import live_sources
from profiler.sources.target import Target
target = Target(pid=4242, side="source", qmp="/run/x.qmp", log_file="/var/log/q.log", comm="qemu")
err = io.StringIO()
sources, info = live_sources(target, err=err)
print(json.dumps({"sources": [s.name for s in sources], "err": err.getvalue(), "info": info}))
"""


FALLBACK_IMPORTS = """
import sys
from pathlib import Path
import bcc, profiler.attach, profiler.qmpctl, profiler.sources.bpf, profiler.sources.qemu_tail
site = Path(sys.argv[1])
names = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if f and Path(f).is_relative_to(site):
        names.add(Path(f).relative_to(site).parts[0])
names |= {p.name for p in site.glob("*.libs") if p.name[:-5] in names}
print(" ".join(sorted(n for n in names if not n.startswith("__editable__"))))
"""


@pytest.fixture
def nobody_env():
    """An interpreter and import path user nobody can reach: the checkout (and the venv in
    it) may sit in a directory only root can enter, as a fresh clone in a 0700 mktemp dir
    does. The project's site-packages are hard-linked (copied across filesystems) and
    the profiler package copied into a readable temporary directory."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    # the site-packages entries the probe imports (and the shared libraries beside them)
    used = subprocess.run([sys.executable, "-c", FALLBACK_IMPORTS, str(site)], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.split()
    d = Path(tempfile.mkdtemp(prefix="migprof-nobody-"))
    try:
        (d / "site").mkdir()
        for name in used:
            r = subprocess.run(["cp", "-al", str(site / name), str(d / "site" / name)],
                               capture_output=True)
            if r.returncode:  # another filesystem: copy
                shutil.rmtree(d / "site" / name, ignore_errors=True)
                shutil.copytree(site / name, d / "site" / name, symlinks=True)
        shutil.copytree(ROOT / "profiler", d / "profiler", ignore=shutil.ignore_patterns("__pycache__"))
        for p in [d, *d.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        env = {**os.environ, "PYTHONPATH": f"{d}:{d / 'site'}", "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("VIRTUAL_ENV", None)
        yield {"python": os.path.realpath(sys.executable), "cwd": d, "env": env}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_no_bpf_falls_back_to_qmp_and_trace(nobody_env):
    """A host where BPF cannot load: one line naming the fix, QMP and trace go on."""
    r = subprocess.run([*UNPRIVILEGED, nobody_env["python"], "-c", FALLBACK_PROBE],
                       cwd=nobody_env["cwd"], env=nobody_env["env"], capture_output=True,
                       text=True, timeout=60)
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
