"""The held-out case: `migprof live --pid` on processes doing QEMU's VFIO syscalls, no QMP, no trace.

Why a fake: this host has no VFIO hardware and no kernel VFIO, so the FUSE double
(tests/fake_vfio/, see test_bpf_fake_vfio.py) answers the VFIO ioctls, reads and writes through
the real syscall path; ``fake_vfio_client`` performs QEMU's exact sequence on a source and on
a destination. Each recording is made as a user would: ``migprof live -p PID --any-process
--no-tui --record F``, the real BPF collector, nothing else. Before the kernel view, ``report F``
said "no migration found". Expected values are the double's known answers (its device spec
``DEVS``: initial bytes, dirty bytes per round, rounds, stop-copy bytes) and the client's own
log of every call, never the model's.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_bpf_fake_vfio import DEVS, MLX5, MTTY, TOTAL, FakeVfioClient, FakeVfioHost, fake_vfio_bins  # noqa: F401

from profiler.cli import main

pytestmark = [pytest.mark.bpf]
ROOT = Path(__file__).resolve().parent.parent
# the double's spec: name -> (initial bytes, dirty bytes per round, dirty rounds, stop-copy bytes)
SPEC = {name: tuple(int(x) for x in rest) for name, _mode, *rest in (d.split(",") for d in DEVS.split(";"))}
READ = 1 << 20  # the client reads min(1 MiB, stop-copy size at setup), QEMU's buffer size
SOURCE_STATES = ["PRE_COPY", "PRE_COPY_P2P", "STOP_COPY", "STOP"]
DEST_STATES = ["RESUMING", "RUNNING_P2P", "RUNNING"]


def want_rounds(dev: str) -> list[int]:
    """Bytes per pre-copy round: the initial data, then each batch the device dirtied."""
    init, dirty, rounds, _ = SPEC[dev]
    return [init] + [dirty] * rounds


class Traced:
    """One fake_vfio_client traced by `migprof live -p PID --no-tui --record REC`."""

    def __init__(self, bins: dict[str, Path], tmp: Path, name: str, mode: str, *,
                 records: Path | None = None, env: dict[str, str] | None = None, attach_after_pause: bool = False):
        self.rec = tmp / f"{name}.parquet"
        host = FakeVfioHost(bins["server"], tmp / f"{name}_mnt")
        try:
            client = FakeVfioClient(bins["client"], mode, host.mnt, tmp / f"{name}.log", records, env=env)
            self.pid = client.pid
            if attach_after_pause:  # the migration is under way before migprof attaches
                client.go()
                deadline = time.monotonic() + 30
                while "paused" not in client.log.read_text():
                    assert client.proc.poll() is None and time.monotonic() < deadline, client.log.read_text()
                    time.sleep(0.01)
            live = subprocess.Popen([sys.executable, "-m", "profiler.cli", "live", "-p", str(client.pid),
                                     "--any-process", "--no-tui", "--record", str(self.rec)], cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            banner = ""
            while "Hit Ctrl-C to end." not in banner:
                line = live.stderr.readline()
                assert line, banner
                banner += line
            client.go()
            self.log = client.wait()
            self.out, err = live.communicate(timeout=120)  # ends by itself when the client exits
            assert live.returncode == 0, err
        finally:
            host.close()

    def lines(self, kind: str, dev: str | None = None) -> list[list[str]]:
        return [r for r in self.log if r[0] == kind and (dev is None or r[1] == dev)]


@pytest.fixture(scope="module")
def runs(fake_vfio_bins, tmp_path_factory) -> dict[str, Traced]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("kernel_view")
    src = Traced(fake_vfio_bins, tmp, "src", "source")
    records = tmp / "records.txt"  # the destination loads exactly what the source read
    records.write_text("".join(f"{r[1]} {r[3]}\n" for r in src.lines("read") if int(r[3]) > 0))
    dst = Traced(fake_vfio_bins, tmp, "dst", "dest", records=records)
    retry = Traced(fake_vfio_bins, tmp, "retry", "source", env={"FAKE_VFIO_CANCEL_FIRST": "1"})
    mid = Traced(fake_vfio_bins, tmp, "mid", "source", env={"FAKE_VFIO_PAUSE": "1"}, attach_after_pause=True)
    return {"src": src, "dst": dst, "retry": retry, "mid": mid}


def cli(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    assert rc == 0, err.getvalue()
    return out.getvalue(), err.getvalue()


def report(*paths: Path) -> dict[str, Any]:
    return json.loads(cli("report", "--json", *map(str, paths))[0])


def vfio(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in m["devices"] if d["kind"] == "vfio"}


def states(d: dict[str, Any]) -> list[str]:
    return [s["state"] for s in d["states"] if s["confirmed"]]


def test_source_alone_is_a_migration(runs):
    """The held-out case, source side: each device's rounds, pending, stop-copy bytes, states."""
    src = runs["src"]
    out, err = cli("report", str(src.rec))
    assert "no migration found" not in err
    assert "kernel view only" in out and f"pid {src.pid}" in out
    d = report(src.rec)
    assert not d["warnings"]
    (m,) = d["migrations"]
    assert (m["view"], m["side"], m["outcome"]) == ("kernel", "source", "completed")
    assert m["sources"]["process"] == f"pid {src.pid}"
    assert m["verdict"].startswith("Kernel view only")
    assert set(vfio(m)) == {MTTY, MLX5} and len(m["devices"]) == 2  # no RAM
    for name, dev in vfio(m).items():
        init, dirty, rounds, stop = SPEC[name]
        assert dev["side"] == "source"
        assert dev["precopy_bytes"] == init + dirty * rounds
        assert dev["stopcopy_bytes"] == stop
        assert dev["precopy_bytes"] + dev["stopcopy_bytes"] == TOTAL[name]
        assert dev["bytes_by_phase"] == {"PRE_COPY": init + dirty * rounds, "STOP_COPY": stop}
        assert [r["bytes"] for r in dev["rounds"]] == want_rounds(name)
        assert [r["reads"] for r in dev["rounds"]] == [math.ceil(b / READ) for b in want_rounds(name)]
        assert dev["initial_pending_bytes"] == init
        assert dev["stopcopy_size_bytes"] == stop  # MIG_DATA_SIZE once PRE_COPY began
        assert states(dev) == SOURCE_STATES
        assert dev["read_calls"] == len(src.lines("read", name))
        # each round starts with what PRECOPY_INFO reported pending
        assert [r["pending_bytes"] for r in dev["rounds"]] == want_rounds(name)
    # pending per device at each PRECOPY_INFO, exactly as the client's calls returned them
    logged = {n: [int(r[2]) + int(r[3]) for r in src.lines("precopy", n)] for n in (MTTY, MLX5)}
    assert len(m["checks"]) == max(len(v) for v in logged.values())
    for n, seq in logged.items():
        assert [c["devices"][n] for c in m["checks"]] == seq
    assert all(c["threshold_bytes"] is None and c["kind"] == "precopy_info" for c in m["checks"])
    # switch-over (devices leave PRE_COPY) before the stop-copy, within the migration
    assert 0 < m["switchover_ms"] < m["switchover_ms"] + m["stopcopy_ms"] <= m["total_ms"]
    assert m["downtime_ms"] is None and m["transferred_bytes"] is None
    # the live summary at exit already shows it
    assert "kernel view only" in src.out


def test_destination_alone_is_a_migration(runs):
    dst = runs["dst"]
    (m,) = report(dst.rec)["migrations"]
    assert (m["view"], m["side"], m["outcome"]) == ("kernel", "destination", "completed")
    for name, dev in vfio(m).items():
        assert dev["side"] == "destination"
        assert dev["bytes_by_phase"] == {"RESUMING": TOTAL[name]}
        assert dev["write_calls"] == len(dst.lines("write", name))
        assert states(dev) == DEST_STATES
        assert dev["rounds"] == []


def test_both_recordings_in_one_report(runs):
    """Source and destination recordings together: one kernel-view migration per process
    (the destination here ran after the source had finished, so they are not one)."""
    d = report(runs["src"].rec, runs["dst"].rec)
    assert [(m["index"], m["view"], m["side"]) for m in d["migrations"]] == [
        (0, "kernel", "source"), (1, "kernel", "destination")]


def test_cancel_and_retry_are_two_migrations(runs):
    """migrate_cancel (devices back to RUNNING) and a retry in the same process: two
    migrations told apart by the new RUNNING -> PRE_COPY."""
    r = runs["retry"]
    d = report(r.rec)
    first, second = d["migrations"]
    cut = r.log.index(["cancelled"])
    for name, dev in vfio(first).items():
        read = sum(int(x[3]) for x in r.log[:cut] if x[:2] == ["read", name] and int(x[3]) > 0)
        assert dev["precopy_bytes"] == read
        assert states(dev) == ["PRE_COPY", "RUNNING"]
    assert first["outcome"] == "failed" and "went back to RUNNING" in first["error"]
    assert second["outcome"] == "completed" and second["start_ns"] > first["end_ns"]
    for name, dev in vfio(second).items():
        assert (dev["precopy_bytes"], dev["stopcopy_bytes"]) == (TOTAL[name] - SPEC[name][3], SPEC[name][3])
        assert [x["bytes"] for x in dev["rounds"]] == want_rounds(name)
        assert states(dev) == SOURCE_STATES


def test_attached_mid_migration(runs):
    """Attached after SET PRE_COPY: the session is kept, said to be joined in its middle;
    nothing was read before the attach, so the bytes are still whole."""
    mid = runs["mid"]
    d = report(mid.rec)
    (m,) = d["migrations"]
    assert m["outcome"] == "completed"
    assert any("attached in the middle" in w for w in d["warnings"])
    fds = {f"fd{int(r[2].split('=')[1])}": r[1] for r in mid.lines("device")}
    devs = vfio(m)
    assert set(devs) == set(fds)  # device names unknown to a late collector: fdN
    for fd, name in fds.items():
        dev = devs[fd]
        assert (dev["precopy_bytes"], dev["stopcopy_bytes"]) == (TOTAL[name] - SPEC[name][3], SPEC[name][3])
        assert [x["bytes"] for x in dev["rounds"]] == want_rounds(name)
        assert states(dev) == SOURCE_STATES[1:]  # PRE_COPY was set before the attach


def test_compare_two_recordings(runs):
    """compare takes the completed migrations: the plain run against the retry's second."""
    out, _ = cli("compare", str(runs["src"].rec), "--", str(runs["retry"].rec))
    assert "kernel view only" in out
    c = json.loads(cli("compare", "--json", str(runs["src"].rec), "--", str(runs["retry"].rec))[0])
    assert c["base"]["kernel_view"] == c["candidate"]["kernel_view"] == 1
    metrics = {x["name"]: x for x in c["metrics"]}
    for name in (MTTY, MLX5):
        pre = metrics[f"device.{name}.precopy_bytes"]
        assert pre["base"]["median"] == pre["candidate"]["median"] == TOTAL[name] - SPEC[name][3]
        assert pre["delta"] == 0
    assert "dirty_syncs" not in metrics and "checks" not in metrics  # the kernel sees neither


def test_replay_shows_the_kernel_view(runs):
    """The TUI's header, devices table and verdict panel mark the kernel view."""
    import asyncio

    from profiler import pipeline
    from tui.app import MigprofApp
    from tui.feed import ReplayFeed, default_build
    from tui.widgets.verdict import render_verdict

    loaded = pipeline.load([str(runs["src"].rec)])
    app = MigprofApp(ReplayFeed(loaded.events, build=default_build(), playing=False, at="end"))

    async def run() -> None:
        async with app.run_test(size=(160, 50)) as pilot:
            while app.view is None or app.view.applied < app.view.total or not app.view.report:
                await pilot.pause(0.05)
            await pilot.pause(0.2)
            header = "".join(t.plain for t in app.screen.query_one("#header").render().renderables)
            assert "KERNEL VIEW ONLY" in header and "COMPLETED" in header
            table = app.screen.query_one("#devices")
            rows = [table.get_row_at(i) for i in range(table.row_count)]
            assert {r[0] for r in rows} == {MTTY, MLX5}
            assert {r[1] for r in rows} == {"vfio (kernel)"}
            shown = app.screen.query_one("#header").shown
            panel = render_verdict(shown)
            text = " ".join(str(c) for col in panel.columns for c in col._cells)
            assert "kernel only" in text and f"{MLX5} {len(want_rounds(MLX5))}" in text

    asyncio.run(run())


def test_in_flight_pre_copy(runs):
    """The recording cut before the switch-over (what `live` has while the migration runs):
    incomplete, still in pre-copy, the rounds so far; the TUI's phase says which round."""
    from profiler import pipeline
    from profiler.model import build_report
    from tui.view import phase

    ev = pipeline.load([str(runs["src"].rec)]).events
    sets = ev[(ev["detail"] == "SET MIG_DEVICE_STATE").fillna(False).to_numpy(dtype=bool)]
    cut = int(sets.loc[(sets["state"] == "PRE_COPY_P2P").fillna(False), "t_ns"].min())
    (m,) = build_report(ev[(ev["t_ns"] < cut).to_numpy(dtype=bool)].reset_index(drop=True)).migrations
    assert (m.view, m.outcome, m.switchover_ms, m.total_ms) == ("kernel", "incomplete", None, None)
    assert "still in pre-copy" in m.verdict.summary
    rounds = {d.name: [r.bytes for r in d.rounds] for d in m.devices}
    assert rounds == {n: want_rounds(n) for n in (MTTY, MLX5)}
    assert phase(m) == f"pre-copy round {len(want_rounds(MLX5))}"


@pytest.mark.parametrize("name", ["retry", "src", "mid"])
def test_incremental_model_equals_full_builds(runs, name):
    """`live` builds the kernel view incrementally (profiler/model/incremental.py): at every
    cut point its report equals a full build of the events so far; the cancelled migration is
    frozen once the retry has begun."""
    from test_model_incremental import cut_points, same_report

    from profiler import events as ev
    from profiler import pipeline
    from profiler.model import build_report
    from profiler.model.incremental import IncrementalModel

    events = ev.sort_timeline(pipeline.load([str(runs[name].rec)]).events)
    model = IncrementalModel()
    last = 0
    for cut in cut_points(len(events)):
        model.add(events.iloc[last:cut])
        last = cut
        diff = same_report(model.report(), build_report(events.iloc[:cut]))
        assert not diff, (cut, diff[:5])
    if name == "retry":
        assert [m.outcome for m in model.frozen] == ["failed"]
