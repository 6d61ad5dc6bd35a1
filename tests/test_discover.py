"""Finding the QEMUs on the host: real QEMU 7.2 processes start, exec and end between scans.

Other QEMUs may run on this machine (other jobs' tests): every check keeps to the QEMUs this
test starts (``keep`` on their names).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from profiler.sources.discover import Discovery, describe, guest_name, is_qemu

QEMU = "/usr/bin/qemu-system-x86_64"
TAG = f"migprof-test-disc-{os.getpid()}"


def _qemu(tmp: Path, name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S",
                             *extra], cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _until(disc: Discovery, cond, what: str):
    """Scan until ``cond(appeared, gone)`` holds (a state, waited for; 30 s at most)."""
    deadline = time.monotonic() + 30
    seen_a, seen_g = [], []
    while time.monotonic() < deadline:
        a, g = disc.scan()
        seen_a += a
        seen_g += g
        if cond(seen_a, seen_g):
            return seen_a, seen_g
        time.sleep(0.05)
    raise AssertionError(f"never: {what}; appeared {seen_a}, gone {seen_g}")


@pytest.fixture
def procs():
    ps: list[subprocess.Popen] = []
    yield ps
    for p in ps:
        p.kill()
        p.wait()


def test_qemus_come_and_go(tmp_path, procs):
    disc = Discovery(keep=lambda q: (q.name or "").startswith(TAG))
    assert disc.scan() == ([], [])
    src = _qemu(tmp_path, "src", "-name", f"{TAG}-src,debug-threads=on",
                "-uuid", "6D696770-726F-6600-0000-000000000001",
                "-qmp", "unix:src.qmp,server=on,wait=off", "-D", "src.log")
    dst = _qemu(tmp_path, "dst", "-name", f"guest={TAG}-dst", "-incoming", "defer")
    procs += [src, dst]
    appeared, _ = _until(disc, lambda a, g: len(a) == 2, "both QEMUs appear")
    by_pid = {q.pid: q for q in appeared}
    s, d = by_pid[src.pid], by_pid[dst.pid]
    assert (s.name, s.side, s.uuid) == (f"{TAG}-src", "source", "6d696770-726f-6600-0000-000000000001")
    # relative paths on its command line are QEMU's cwd's
    assert (s.qmp, s.log_file) == (str(tmp_path / "src.qmp"), str(tmp_path / "src.log"))
    assert (d.name, d.side, d.qmp, d.log_file, d.label) == (f"{TAG}-dst", "destination", None, None,
                                                           f"{TAG}-dst")
    assert disc.scan() == ([], [])  # nothing new
    dst.kill()
    dst.wait()
    _, gone = _until(disc, lambda a, g: g, "the destination goes")
    assert [q.pid for q in gone] == [dst.pid]
    assert [q.pid for q in disc.current.values()] == [src.pid]


def test_a_process_that_becomes_qemu(tmp_path, procs):
    """A process seen before it exec'd QEMU (libvirt forks, then execs) is found after."""
    r, w = os.pipe()
    sh = subprocess.Popen(["sh", "-c", f"read x; exec {QEMU} -machine none -nodefaults "
                           f"-display none -S -name {TAG}-late"], stdin=r, cwd=tmp_path)
    os.close(r)
    procs.append(sh)
    disc = Discovery(keep=lambda q: (q.name or "").startswith(TAG))
    assert disc.scan() == ([], []) and sh.pid in disc._not_qemu
    os.write(w, b"go\n")
    os.close(w)
    appeared, _ = _until(disc, lambda a, g: a, "the exec'd QEMU appears")
    assert [(q.pid, q.name) for q in appeared] == [(sh.pid, f"{TAG}-late")]


def test_libvirt_names_a_known_qemu_later(tmp_path, procs):
    """A QEMU whose domain libvirt lists only after it was first seen goes as a bare QEMU
    and comes back under its domain's name."""
    uuid = "6d696770-726f-6600-0000-0000000000aa"
    q = _qemu(tmp_path, "vm", "-name", f"guest={TAG}-lv", "-uuid", uuid)
    procs.append(q)
    names: dict[str, str] = {}
    disc = Discovery(domains=lambda: names, uri="qemu:///system",
                     keep=lambda x: (x.name or "").startswith(TAG))
    (bare,), _ = _until(disc, lambda a, g: a, "the QEMU appears")
    assert bare.domain is None and bare.label == f"{TAG}-lv"
    names[uuid] = "vm-domain"
    appeared, gone = disc.scan()
    assert gone == [bare]
    assert [(x.pid, x.domain, x.uri, x.label) for x in appeared] == [
        (q.pid, "vm-domain", "qemu:///system", "vm-domain")]
    t = appeared[0].target()
    assert (t.domain, t.qmp) == ("vm-domain", None)  # reached through libvirt, not its socket


@pytest.mark.parametrize("argv,name", [
    (["qemu", "-name", "vm1"], "vm1"), (["qemu", "-name", "vm1,debug-threads=on"], "vm1"),
    (["qemu", "-name", "guest=dom,debug-threads=on"], "dom"), (["qemu"], None),
    (["qemu", "-name", "process=x"], None)])
def test_guest_name(argv, name):
    assert guest_name(argv) == name


def test_what_counts_as_qemu():
    assert is_qemu("qemu-system-x86") and is_qemu("qemu-kvm")
    assert is_qemu("worker", "/usr/libexec/qemu-kvm")
    assert not is_qemu("qemu-img") and not is_qemu("qemu-nbd", "/usr/bin/qemu-nbd")
    assert describe(os.getpid()) is None  # pytest is not a QEMU
    assert describe(2**22 + 7) is None  # no such process
