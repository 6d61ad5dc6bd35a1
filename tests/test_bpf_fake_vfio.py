"""The BPF collector on the real kernel against a FUSE test double of VFIO devices.

Why a fake: this host has no VFIO hardware and no VFIO in its kernel, so nothing real
answers VFIO ioctls. ``tests/fake_vfio/fake_vfio_fuse.c`` serves files whose ioctls,
reads and writes go through the real syscall path (the tracepoints the collector uses);
``fake_vfio_client.c`` performs QEMU's exact syscall sequence (vfio-uapi.md §5.2) on a
source and a destination, two devices (mtty and mlx5 pre-copy semantics), several threads.
The client's own log is the ground truth every BPF event is checked against.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from profiler import events as ev

pytestmark = [pytest.mark.bpf]

HERE = Path(__file__).resolve().parent / "fake_vfio"
MTTY = "0000:00:04.0"
MLX5 = "0000:00:05.0"
# name, mode, initial bytes, dirty bytes per round, dirty rounds, stop-copy bytes
DEVS = f"{MTTY},mtty,3145851,0,0,1000;{MLX5},mlx5,2097152,300000,3,1500000"
TOTAL = {MTTY: 3145851 + 1000, MLX5: 2097152 + 3 * 300000 + 1500000}


def _gcc(out: Path, src: str, *flags: str) -> Path:
    cmd = ["gcc", "-O2", "-Wall", "-o", str(out), str(HERE / src), *flags]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="session")
def fake_vfio_bins(tmp_path_factory) -> dict[str, Path]:
    """Build the FUSE server and the QEMU-sequence client with gcc."""
    d = tmp_path_factory.mktemp("fake_vfio_bin")
    fuse = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], check=True,
                          capture_output=True, text=True).stdout.split()
    return {
        "server": _gcc(d / "fake_vfio_fuse", "fake_vfio_fuse.c", *fuse),
        "client": _gcc(d / "fake_vfio_client", "fake_vfio_client.c", "-pthread"),
    }


class FakeVfioHost:
    """One mounted fake_vfio_fuse (a 'host' with two VFIO devices).

    Why a fake: this host has no VFIO hardware and no kernel VFIO (see fake_vfio_fuse.c).
    """

    def __init__(self, server: Path, mnt: Path):
        self.mnt = mnt
        mnt.mkdir()
        env = dict(os.environ, FAKE_VFIO_DEVS=DEVS)
        self.proc = subprocess.Popen([str(server), str(mnt), "-f", "-s"], env=env,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not (mnt / "vfio").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fake_vfio_fuse did not mount: {self.proc.stderr.read()}")
            time.sleep(0.02)

    def close(self) -> None:
        subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False, capture_output=True)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class FakeVfioClient:
    """A fake_vfio_client waiting for 'go' (so the collector can attach first).

    Why a fake: it stands in for QEMU's VFIO migration syscalls because no VFIO device or
    kernel VFIO exists on this host (see fake_vfio_client.c); the syscalls are real.
    """

    def __init__(self, binary: Path, mode: str, mnt: Path, log: Path, records: Path | None = None,
                 env: dict[str, str] | None = None):
        args = [str(binary), mode, str(mnt), f"{MTTY},{MLX5}"] + ([str(records)] if records else [])
        self.log = log
        self.out = open(log, "w")  # noqa: SIM115 (closed in wait())
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=self.out, text=True,
                                     env=dict(os.environ, **(env or {})))
        deadline = time.monotonic() + 10
        while not log.read_text().startswith("ready"):
            assert time.monotonic() < deadline and self.proc.poll() is None, "client not ready"
            time.sleep(0.01)
        self.pid = self.proc.pid

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait(self) -> list[list[str]]:
        assert self.proc.wait(timeout=60) == 0, self.log.read_text()[-2000:]
        self.out.close()
        return [line.split() for line in self.log.read_text().splitlines()]


def _collect(src, stop: threading.Event, frames: list[pd.DataFrame]) -> None:
    for batch in src.batches(stop):
        if len(batch):
            frames.append(batch)


def run_fake_migration(bins: dict[str, Path], tmp: Path, live_drain: bool = True, **bpf_kw) -> dict:
    """A source and a destination fake migration traced by one BpfSource on both pids.

    ``live_drain=False`` reads nothing until both clients are done (to overflow a buffer).
    """
    from profiler.sources.bpf import BpfSource

    src_host = FakeVfioHost(bins["server"], tmp / "src_mnt")
    dst_host = FakeVfioHost(bins["server"], tmp / "dst_mnt")
    records = tmp / "records.txt"
    try:
        src = FakeVfioClient(bins["client"], "source", src_host.mnt, tmp / "src.log")
        dst = FakeVfioClient(bins["client"], "dest", dst_host.mnt, tmp / "dst.log", records)
        frames: list[pd.DataFrame] = []
        stop = threading.Event()
        with BpfSource([src.pid, dst.pid], sides={src.pid: "source", dst.pid: "destination"},
                       **bpf_kw) as bpf:
            t = threading.Thread(target=_collect, args=(bpf, stop, frames))
            if live_drain:
                t.start()
            src.go()
            src_log = src.wait()
            # the destination loads exactly the records the source read
            records.write_text("".join(f"{r[1]} {r[3]}\n" for r in src_log if r[0] == "read" and int(r[3]) > 0))
            dst.go()
            dst_log = dst.wait()
            if not live_drain:
                t.start()
            t.join(timeout=30)  # ends by itself: both targets exited
            assert not t.is_alive()
            health = bpf.health()
        df = ev.concat(frames)
        return {"df": df, "src": src, "dst": dst, "src_log": src_log, "dst_log": dst_log, "health": health}
    finally:
        src_host.close()
        dst_host.close()


@pytest.fixture(scope="module")
def migration(fake_vfio_bins, tmp_path_factory):
    return run_fake_migration(fake_vfio_bins, tmp_path_factory.mktemp("fake_vfio_run"))


def _rows(df: pd.DataFrame, pid: int, event: str, device: str | None = None) -> pd.DataFrame:
    sel = ((df["pid"] == pid) & (df["event"] == event)).fillna(False)
    if device is not None:
        sel &= (df["device"] == device).fillna(False)
    return df[sel].sort_values(["t_ns", "seq"]).reset_index(drop=True)


def test_schema_and_no_loss(migration):
    df, h = migration["df"], migration["health"]
    ev.validate(df, "bpf")
    assert h["lost"] == 0
    assert h["path"] == "tracepoint"
    assert h["buffer"] == "ring"
    assert (df["origin"] == "bpf").all()
    assert set(df.loc[df["pid"] == migration["src"].pid, "side"]) == {"source"}
    assert set(df.loc[df["pid"] == migration["dst"].pid, "side"]) == {"destination"}
    # BPF's monotonic stamps land on the wall clock: within the test's own run time
    now = time.time_ns()
    assert df["t_ns"].max() <= now and df["t_ns"].min() > now - 120 * 10**9


@pytest.mark.parametrize("dev", [MTTY, MLX5])
def test_source_reads_exact(migration, dev):
    """Every data-fd read, in order: bytes, return codes, phase and device."""
    df, log = migration["df"], migration["src_log"]
    reads = _rows(df, migration["src"].pid, ev.BPF_DATA_READ, dev)
    want = [(r[2], int(r[3])) for r in log if r[0] == "read" and r[1] == dev]
    # reads of different threads interleave; per device they are ordered by time
    got = list(zip(reads["state"], reads["ret"].astype(int), strict=True))
    assert got == want
    assert int(reads["bytes"].sum()) == TOTAL[dev]
    total_line = [int(r[2]) for r in log if r[0] == "total" and r[1] == dev]
    assert total_line == [TOTAL[dev]]
    # requested count: min(1 MiB, stop-copy size at setup)
    assert set(reads["requested_bytes"].astype(int)) == {1 << 20}
    assert (reads["dur_ns"] > 0).all()


def test_precopy_end_of_data(migration):
    """mtty ends pre-copy data with read() == 0, mlx5 with -ENOMSG; stop-copy ends with 0."""
    df, pid = migration["df"], migration["src"].pid
    mtty = _rows(df, pid, ev.BPF_DATA_READ, MTTY)
    mlx5 = _rows(df, pid, ev.BPF_DATA_READ, MLX5)
    pre_end = lambda r: r[(r["state"] == "PRE_COPY") & (r["bytes"].isna() | (r["bytes"] == 0))]  # noqa: E731
    assert set(pre_end(mtty)["ret"].astype(int)) == {0}
    assert set(pre_end(mlx5)["ret"].astype(int)) == {-42}
    for r in (mtty, mlx5):
        stop = r[r["state"] == "STOP_COPY"]
        assert int(stop["ret"].iloc[-1]) == 0


@pytest.mark.parametrize("dev", [MTTY, MLX5])
def test_precopy_info_values(migration, dev):
    df, log = migration["df"], migration["src_log"]
    info = _rows(df, migration["src"].pid, ev.BPF_PRECOPY_INFO, dev)
    want = [(int(r[2]), int(r[3])) for r in log if r[0] == "precopy" and r[1] == dev]
    got = list(zip(info["init_bytes"].astype(int), info["dirty_bytes"].astype(int), strict=True))
    assert got == want
    if dev == MLX5:
        assert 300000 in set(info["dirty_bytes"].astype(int))
    assert (info["ret"] == 0).all()


def test_state_sequences(migration):
    df = migration["df"]
    for pid, want in ((migration["src"].pid, ["PRE_COPY", "PRE_COPY_P2P", "STOP_COPY", "STOP"]),
                      (migration["dst"].pid, ["RESUMING", "RUNNING_P2P", "RUNNING"])):
        for dev in (MTTY, MLX5):
            io = _rows(df, pid, ev.BPF_IOCTL, dev)
            sets = io[io["detail"] == "SET MIG_DEVICE_STATE"]
            assert list(sets["state"]) == want
            assert (sets["ret"] == 0).all()
            assert (sets["cmd"] == 0x3B75).all() and (sets["flags"] == 0x20002).all()


def test_data_fds_from_ioctl(migration):
    """The data fd comes back at arg+12 of the SET that starts a session, else -1."""
    df = migration["df"]
    for client, log, kind in ((migration["src"], migration["src_log"], "data_save"),
                              (migration["dst"], migration["dst_log"], "data_load")):
        io = df[(df["pid"] == client.pid) & (df["event"] == ev.BPF_IOCTL)
                & (df["detail"] == "SET MIG_DEVICE_STATE")]
        want = sorted(int(r[4].split("=")[1]) for r in log if r[0] == "set" and not r[4].endswith("=-1"))
        assert len(want) == 2
        assert sorted(io["data_fd"].dropna().astype(int)) == want
        closes = df[(df["pid"] == client.pid) & (df["event"] == ev.BPF_FD_CLOSE)]
        assert sorted(closes["fd"].astype(int)) == want
        assert set(closes["detail"]) == {kind}


def test_data_size_and_migration_flags(migration):
    df, log = migration["df"], migration["src_log"]
    for dev in (MTTY, MLX5):
        io = _rows(df, migration["src"].pid, ev.BPF_IOCTL, dev)
        sizes = io[io["detail"] == "GET MIG_DATA_SIZE"]
        want = [int(r[2]) for r in log if r[0] == "datasize" and r[1] == dev]
        assert list(sizes["stopcopy_bytes"].astype(int)) == want
        assert list(sizes["bytes"].astype(int)) == want


@pytest.mark.parametrize("dev", [MTTY, MLX5])
def test_destination_writes(migration, dev):
    """Writes are cut at 32 KiB QEMUFile boundaries, total the source's bytes, phase RESUMING."""
    df, log = migration["df"], migration["dst_log"]
    writes = _rows(df, migration["dst"].pid, ev.BPF_DATA_WRITE, dev)
    want = [int(r[3]) for r in log if r[0] == "write" and r[1] == dev]
    assert list(writes["ret"].astype(int)) == want
    assert int(writes["bytes"].sum()) == TOTAL[dev]
    assert int(writes["bytes"].max()) <= 32768
    assert set(writes["state"]) == {"RESUMING"}
    assert set(writes["detail"]) == {f"mig/dst/load_{[MTTY, MLX5].index(dev)}"}


def test_threads_named(migration):
    """Pre-copy reads come from the migration thread, stop-copy reads from per-device threads."""
    df = migration["df"]
    reads = df[(df["pid"] == migration["src"].pid) & (df["event"] == ev.BPF_DATA_READ)]
    assert set(reads.loc[reads["state"] == "PRE_COPY", "detail"]) == {"mig/src/main"}
    stop = reads[reads["state"] == "STOP_COPY"]
    assert set(stop["detail"]) == {"mig/src/send_0", "mig/src/send_1"}
    assert stop["tid"].nunique() == 2


def test_device_fd_vs_container_fd(migration):
    """Both see 0x3b75: DEVICE_FEATURE on device fds, IOMMU_DIRTY_PAGES on the container."""
    df, log = migration["df"], migration["src_log"]
    container_fd = int(next(r for r in log if r[0] == "container")[1].split("=")[1])
    dev_fds = {r[1]: int(r[2].split("=")[1]) for r in log if r[0] == "device"}
    io = df[(df["pid"] == migration["src"].pid) & (df["event"] == ev.BPF_IOCTL) & (df["cmd"] == 0x3B75)]
    on_container = io[io["fd"] == container_fd]
    assert len(on_container) == sum(1 for r in log if r[0] == "dirty_pages")
    assert on_container["detail"].str.startswith("VFIO_IOMMU_DIRTY_PAGES").all()
    assert on_container["device"].isna().all() and on_container["state"].isna().all()
    on_devices = io[io["fd"] != container_fd]
    assert set(on_devices["fd"].astype(int)) == set(dev_fds.values())
    assert not on_devices["detail"].str.startswith("VFIO_IOMMU").any()
    # device names come from VFIO_GROUP_GET_DEVICE_FD, which the collector decodes
    for name, fd in dev_fds.items():
        assert set(on_devices.loc[on_devices["fd"] == fd, "device"]) == {name}


def _counts(df: pd.DataFrame) -> pd.Series:
    d = df[df["event"] != ev.BPF_LOST]
    return d.groupby([d["side"].astype(str), d["event"].astype(str)]).size()


def test_perf_buffer_fallback(fake_vfio_bins, tmp_path, migration):
    """Without the ring buffer (kernels < 5.8) the perf buffer carries the same events."""
    run = run_fake_migration(fake_vfio_bins, tmp_path, ringbuf=False)
    assert run["health"]["buffer"] == "perf"
    assert run["health"]["lost"] == 0
    pd.testing.assert_series_equal(_counts(run["df"]), _counts(migration["df"]))
    reads = run["df"][run["df"]["event"] == ev.BPF_DATA_READ]
    assert int(reads["bytes"].sum()) == sum(TOTAL.values())


def test_lost_events_are_counted(fake_vfio_bins, tmp_path, migration):
    """A one-page ring buffer nobody reads during the run overflows: every record the
    kernel refused is counted, shown as bpf_lost rows, and received + lost adds up."""
    run = run_fake_migration(fake_vfio_bins, tmp_path, live_drain=False, ringbuf_pages=1)
    df, h = run["df"], run["health"]
    lost_rows = df[df["event"] == ev.BPF_LOST]
    assert h["lost"] > 0
    assert int(lost_rows["count"].sum()) == h["lost"]
    received = int((df["event"] != ev.BPF_LOST).sum())
    assert received + h["lost"] == int(_counts(migration["df"]).sum())


def test_attach_mid_migration(fake_vfio_bins, tmp_path):
    """Attached after SET PRE_COPY: the data fds are learned from the next precopy-info
    ioctl, each charged to the device QEMU asked for MIG_DATA_SIZE just before, and the
    phase is known again from the next state change on."""
    from profiler.sources.bpf import BpfSource

    host = FakeVfioHost(fake_vfio_bins["server"], tmp_path / "mnt")
    try:
        client = FakeVfioClient(fake_vfio_bins["client"], "source", host.mnt, tmp_path / "src.log",
                        env={"FAKE_VFIO_PAUSE": "1"})
        client.go()
        deadline = time.monotonic() + 10
        while "paused" not in client.log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        frames: list[pd.DataFrame] = []
        with BpfSource([client.pid], sides={client.pid: "source"}) as bpf:
            t = threading.Thread(target=_collect, args=(bpf, threading.Event(), frames))
            t.start()
            client.go()
            log = client.wait()
            t.join(timeout=30)
    finally:
        host.close()
    df = ev.concat(frames)
    dev_fd = {r[1]: int(r[2].split("=")[1]) for r in log if r[0] == "device"}
    for name, fd in dev_fd.items():
        reads = df[(df["event"] == ev.BPF_DATA_READ) & (df["device"] == f"fd{fd}").fillna(False)]
        assert int(reads["bytes"].sum()) == TOTAL[name]  # nothing was read before the attach
        pre = reads[reads["state"].isna()]  # PRE_COPY began before we attached
        stop = reads[reads["state"] == "STOP_COPY"]
        assert len(pre) + len(stop) == len(reads)
        assert int(stop["bytes"].sum()) == {MTTY: 1000, MLX5: 1500000}[name]
