"""`migprof live` end to end on the FUSE VFIO stand-in (see tests/test_bpf_fake_vfio.py for why).

The command attaches to the QEMU-sequence client (``--any-process``: it is not QEMU),
follows it to its exit, prints the per-device, per-phase data-fd summary and leaves a
recording whose byte counts are exact.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bpf_fake_vfio import MLX5, MTTY, TOTAL, FakeVfioClient, FakeVfioHost, fake_vfio_bins  # noqa: F401

pytestmark = [pytest.mark.bpf]
ROOT = Path(__file__).resolve().parent.parent


def test_live_on_fake_vfio(fake_vfio_bins, tmp_path):  # noqa: F811
    from profiler.store import read_recording

    host = FakeVfioHost(fake_vfio_bins["server"], tmp_path / "mnt")
    rec = tmp_path / "live.parquet"
    try:
        client = FakeVfioClient(fake_vfio_bins["client"], "source", host.mnt, tmp_path / "src.log")
        live = subprocess.Popen([sys.executable, "-m", "profiler.cli", "live", "-p", str(client.pid),
                                 "--any-process", "--no-tui", "--record", str(rec)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        banner = ""
        deadline = time.monotonic() + 60
        while "Hit Ctrl-C to end." not in banner and time.monotonic() < deadline:
            line = live.stderr.readline()
            assert line, banner
            banner += line
        assert "no QMP socket found" in banner  # said once, then BPF only
        client.go()
        log = client.wait()
        out, err = live.communicate(timeout=60)  # ends by itself when the client exits
        assert live.returncode == 0, err
        assert f"pid {client.pid} exited" in err
    finally:
        host.close()
    # the line view: state changes as they happen, then the summary per device and phase
    lines = out.splitlines()
    for state in ("PRE_COPY", "PRE_COPY_P2P", "STOP_COPY", "STOP"):
        assert sum(1 for x in lines if "bpf_vfio_ioctl" in x and "VFIO_IOMMU" not in x
                   and x.split()[-1] == state) == 2, state
    summary = {tuple(line.split()[:3]): line.split() for line in out.splitlines()
               if line.startswith("source ")}
    pre = {d: int(summary[("source", d, "PRE_COPY")][4]) for d in (MTTY, MLX5)}
    stop = {d: int(summary[("source", d, "STOP_COPY")][4]) for d in (MTTY, MLX5)}
    assert stop == {MTTY: 1000, MLX5: 1500000}
    assert {d: pre[d] + stop[d] for d in pre} == TOTAL
    # every read() the client made, by device and phase (its own log): calls and bytes
    want: dict[tuple[str, str], list[int]] = {}
    for r in log:
        if r[0] == "read":
            w = want.setdefault((r[1], r[2]), [0, 0])
            w[0] += 1
            w[1] += max(0, int(r[3]))
    got = {(k[1], k[2]): [int(v[3]), int(v[4])] for k, v in summary.items()}
    assert got == want
    # the line view's periodic data-fd totals add up to the same bytes
    periodic: dict[str, int] = {}
    for x in lines:
        f = x.split()
        if len(f) > 4 and f[2] == "bpf_data_read" and f[-1] == "lat)":
            periodic[f[3]] = periodic.get(f[3], 0) + int(f[4])
    assert periodic == TOTAL
    df, meta, warnings = read_recording(rec)
    assert not warnings
    reads = df[df["event"] == "bpf_data_read"]
    assert reads.groupby(reads["device"].astype(str))["bytes"].sum().to_dict() == TOTAL
    assert meta["attach"] == "tracepoint"
    assert meta["clock_offsets"]["bpf_monotonic_to_realtime_ns"] > 0
