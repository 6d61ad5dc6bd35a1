"""One loaded BPF program set for many processes: targets added and removed while it runs.

The collector is loaded once with no target (``dynamic=True``); processes join through a
map update and a /proc scan (no compile, no attach) and leave the same way. Checked on the
real kernel: the events of each process carry its pid and equal that process's own log
(the fake VFIO client of test_bpf_fake_vfio, which performs QEMU's VFIO syscalls because
this host has no VFIO); a removed process is no longer traced and a freed slot serves the
next one cleanly; real idle QEMUs join and leave without a trace in the kernel's maps.
"""

from __future__ import annotations

import ctypes
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest
from test_bpf_fake_vfio import TOTAL, FakeVfioClient, FakeVfioHost, fake_vfio_bins  # noqa: F401

from profiler import events as ev
from profiler.errors import MigprofError

pytestmark = [pytest.mark.bpf]

QEMU = "/usr/bin/qemu-system-x86_64"


class Collector:
    """A dynamic BpfSource drained by a thread into a list of frames."""

    def __init__(self, **kw):
        from profiler.sources.bpf import BpfSource

        self.src = BpfSource([], dynamic=True, **kw)
        self.frames: list[pd.DataFrame] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        for batch in self.src.batches(self.stop):
            if len(batch):
                self.frames.append(batch)

    def __enter__(self) -> Collector:
        self.src.__enter__()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.src.close()

    def frame(self) -> pd.DataFrame:
        """Every event taken (after leaving: the thread has drained the buffer)."""
        return ev.concat(self.frames)


def _reads(df: pd.DataFrame, pid: int) -> pd.DataFrame:
    return df[((df["pid"] == pid) & (df["event"] == ev.BPF_DATA_READ)).fillna(False)]


def _keys_of(table, pid: int) -> list:
    return [k for k in table if getattr(k, "tgid", None) == pid or getattr(k, "value", 0) >> 32 == pid]


def test_targets_join_and_leave_at_run_time(fake_vfio_bins, tmp_path):  # noqa: F811
    """Attached with no target; a source client joins, migrates, leaves; a second client
    joins the freed slot later and is traced exactly; a client removed before it runs
    leaves no event."""
    hosts = [FakeVfioHost(fake_vfio_bins["server"], tmp_path / f"mnt{i}") for i in range(3)]
    try:
        with Collector() as c:
            programs = list(c.src.programs)
            a = FakeVfioClient(fake_vfio_bins["client"], "source", hosts[0].mnt, tmp_path / "a.log")
            c.src.add_target(a.pid, "source")
            assert c.src.targets() == [a.pid]
            a.go()
            a_log = a.wait()
            # it exited holding its device fds (no close() ran): the maps still have them
            maps = c.src._b
            slot = {k.value: v.value for k, v in maps[b"targets"].items()}[a.pid]
            assert _keys_of(maps[b"fds"], a.pid)
            fdkind = maps[b"fdkind"]
            assert any(fdkind[ctypes.c_int(slot * 8192 + fd)].value for fd in range(256))
            c.src.remove_target(a.pid)
            assert c.src.targets() == []
            assert _keys_of(maps[b"fds"], a.pid) == []
            assert not any(fdkind[ctypes.c_int(slot * 8192 + fd)].value for fd in range(256))
            # a process removed before it does anything is not traced
            gone = FakeVfioClient(fake_vfio_bins["client"], "source", hosts[1].mnt, tmp_path / "g.log")
            c.src.add_target(gone.pid, "source")
            c.src.remove_target(gone.pid)
            gone.go()
            gone.wait()
            # the next one takes the freed slot and starts from a clean fd table
            b = FakeVfioClient(fake_vfio_bins["client"], "source", hosts[2].mnt, tmp_path / "b.log")
            c.src.add_target(b.pid, "source")
            b.go()
            b_log = b.wait()
            assert c.src.programs == programs  # nothing was loaded again
        df = c.frame()
        assert c.src.health()["lost"] == 0
        for client, log in ((a, a_log), (b, b_log)):
            reads = _reads(df, client.pid)
            assert set(reads["side"]) == {"source"}
            for dev, total in TOTAL.items():
                mine = reads[reads["device"] == dev]
                want = [(r[2], int(r[3])) for r in log if r[0] == "read" and r[1] == dev]
                got = list(zip(mine["state"], mine["ret"].astype(int), strict=True))
                assert got == want, (client.pid, dev)
                assert int(mine["bytes"].sum()) == total
        assert not (df["pid"] == gone.pid).fillna(False).any()
    finally:
        for h in hosts:
            h.close()


@pytest.fixture
def idle_qemus(tmp_path):
    """Ten real QEMU 7.2 processes idling (``-machine none -S``)."""
    procs = [subprocess.Popen([QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S",
                               "-name", f"migprof-test-idle-{i}"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i in range(10)]
    try:
        for p in procs:  # their fds exist once the QEMU is up: wait for /proc to show them
            while p.poll() is None and len(list(Path(f"/proc/{p.pid}/fd").iterdir())) < 4:
                threading.Event().wait(0.02)
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_many_qemus_in_the_maps_and_out_again(idle_qemus):
    pids = [p.pid for p in idle_qemus]
    with Collector(max_targets=12) as c:
        b = c.src._b
        for pid in pids:
            c.src.add_target(pid, "source")
        assert sorted(c.src.targets()) == sorted(pids)
        slots = {k.value: v.value for k, v in b[b"targets"].items()}
        assert set(slots) == set(pids)
        assert sorted(slots.values()) == list(range(10))  # one slot each
        # two more fit, the thirteenth is refused with one line
        with pytest.raises(MigprofError, match="at most 12 processes"):
            extra = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
            try:
                for p in extra:
                    c.src.add_target(p.pid)
            finally:
                for p in extra:
                    c.src.remove_target(p.pid)
                    p.kill()
                    p.wait()
        for pid in pids:
            c.src.remove_target(pid)
        assert c.src.targets() == []
        assert len(b[b"targets"]) == 0
        for name in (b"fds", b"inflight", b"last_dev"):
            for pid in pids:
                assert _keys_of(b[name], pid) == [], name


def test_bad_targets(fake_vfio_bins, tmp_path):  # noqa: F811
    from profiler.sources.bpf import BpfSource

    with Collector() as c:
        dead = subprocess.Popen(["true"])
        dead.wait()
        with pytest.raises(MigprofError, match=f"no process {dead.pid}"):
            c.src.add_target(dead.pid)
        assert c.src.targets() == []
        c.src.remove_target(dead.pid)  # not a target: nothing to do
    with pytest.raises(MigprofError, match="no target pid"):
        BpfSource([])
    # a fixed set is compiled in: it takes no new target
    host = FakeVfioHost(fake_vfio_bins["server"], tmp_path / "mnt")
    try:
        a = FakeVfioClient(fake_vfio_bins["client"], "source", host.mnt, tmp_path / "a.log")
        with BpfSource([a.pid]) as fixed, pytest.raises(MigprofError, match="fixed targets"):
            fixed.add_target(a.pid)
        a.go()
        a.wait()
    finally:
        host.close()
