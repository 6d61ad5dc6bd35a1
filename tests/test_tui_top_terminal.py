"""`migprof top` in a real terminal (tmux) with real QEMUs: the table, Enter into the full
live TUI of one QEMU and back, q restoring the terminal."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_tui_terminal import Tmux

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
MIGPROF = ROOT / ".venv" / "bin" / "migprof"
QEMU = "/usr/bin/qemu-system-x86_64"
TAG = f"tt{os.getpid()}"


@pytest.fixture
def tmux(request):
    t = Tmux(request.node.name[:20])
    yield t
    t.kill()


@pytest.fixture
def two_qemus(tmp_path):
    procs = [subprocess.Popen([QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S",
                               "-name", f"{TAG}-{n}", *extra], cwd=tmp_path,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
             for n, extra in (("one", ["-qmp", "unix:one.qmp,server=on,wait=off"]), ("two", []))]
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def test_top_table_enter_and_back(tmux, two_qemus):
    one, two = two_qemus
    tmux.start(f"cd {ROOT} && {MIGPROF} top -n {TAG} 0.5; echo MIGPROF_EXIT=$?; "
               "stty -a | grep -o -- '-\\?icanon' | sed 's/^/TTY=/'; sleep 60")
    screen = tmux.wait_for(rf"2 QEMUs, 0 migrating(.*\n)*.*{TAG}-(one|two)(.*\n)*.*{TAG}-(one|two)")
    for p, name in ((one, "one"), (two, "two")):
        line = next(ln for ln in screen.splitlines() if f"{TAG}-{name}" in ln)
        assert str(p.pid) in line and "idle" in line and "none" in line, line
    assert "Traceback" not in screen
    # the cursor is on the first row (sorted by name): Enter shows that QEMU in the full TUI
    tmux("send-keys", "-t", "t", "Enter")
    full = tmux.wait_for(r"LIVE +no migration yet")
    assert "waiting for a migration" in full and "0 migrating" not in full, full
    tmux("send-keys", "-t", "t", "q")
    back = tmux.wait_for(r"2 QEMUs, 0 migrating")
    assert "LIVE" not in back
    tmux("send-keys", "-t", "t", "q")
    after = tmux.wait_for(r"TTY=")
    assert "MIGPROF_EXIT=0" in after and "TTY=icanon" in after
    assert "Traceback" not in after and "0 migrating" not in after  # the alternate screen is gone
