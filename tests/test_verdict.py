"""The convergence verdict: read from the checks QEMU switches over on (pending after a dirty sync).

Real traces (tests/data/real, QEMU 7.2 and 10.0, a guest re-dirtying a 32 MiB set faster than
64 MiB/s carries it, downtime-limit 20 ms) are checked against figures read straight from
their source.log with a regex, independent of the model.
"""

from __future__ import annotations

import importlib.util
import json
import re
import statistics
import sys
from pathlib import Path

import pytest
from conftest import REAL
from conftest import SYNTHETIC_MIGRATIONS as SYN

from profiler.model import build_report
from profiler.model.verdict import MARGIN
from profiler.sources.qemu_log import parse_bytes

MiB = 1 << 20

_LINE = re.compile(r"^\d+@[\d.]+:(?P<ev>\w+) (?P<body>.*)$")
_SIZE = re.compile(r"pending size (\d+)")
_MAX = re.compile(r"\bmax (\d+)\b|max_size (\d+)")


def _make():
    if "synthetic_migrations" not in sys.modules:
        spec = importlib.util.spec_from_file_location("synthetic_migrations", SYN / "make.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["synthetic_migrations"] = mod  # dataclasses look their module up there
        spec.loader.exec_module(mod)
    return sys.modules["synthetic_migrations"]


def _report(run: Path):
    return build_report(parse_bytes((run / "source.log").read_bytes(), side="source",
                                    file=str(run / "source.log")).frame)


def _post_sync_from_log(run: Path) -> tuple[list[int], list[int], list[int]]:
    """First migration of a source.log: (pending after each live sync, its threshold, every
    pending figure). A pending line is post-sync when a ``migration_bitmap_sync_end`` came
    since the previous pending line (the setup sync precedes the first one: not counted)."""
    post, thr, every = [], [], []
    threshold, seen_pending, synced, starts = 0, False, False, 0
    for line in (run / "source.log").read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        ev, body = m["ev"], m["body"]
        if ev == "migrate_set_state" and body.endswith(" setup"):
            starts += 1
            if starts == 2:
                break
        elif ev == "migration_bitmap_sync_end":
            synced = True
        elif ev == "migrate_transferred":
            x = _MAX.search(body)
            threshold = int(x[1] or x[2])
        elif ev in ("migrate_pending", "migrate_pending_exact", "migrate_pending_estimate"):
            size = int(_SIZE.search(body)[1])
            if ev == "migrate_pending":  # 7.2 prints the threshold it compared with
                threshold = int(_MAX.search(body)[1])
            every.append(size)
            if seen_pending and synced:
                post.append(size)
                thr.append(threshold)
            seen_pending, synced = True, False
    return post, thr, every


STUCK = [REAL / n for n in ("7.2-cancel-retry", "10.0-cancel-retry", "7.2-destination-dies",
                            "10.0-destination-dies")]


@pytest.mark.parametrize("run", STUCK, ids=lambda p: p.name)
def test_stuck_verdict_is_read_after_the_syncs(run: Path) -> None:
    post, thr, every = _post_sync_from_log(run)
    assert len(post) >= 3
    m = _report(run).migrations[0]
    v = m.verdict
    assert v.converged is False and v.precopy_stuck is True
    steady = max(post[-3:])
    assert v.post_sync_pending_bytes == steady
    # the closest approach is a post-sync check: the gap QEMU really had to close
    gaps = [p - t for p, t in zip(post, thr, strict=True)]
    assert v.min_gap_bytes == min(gaps)
    closest = m.checks[v.min_gap_check]
    assert closest.pending_bytes in post
    # the old reading (smallest pending of any check) is several times too optimistic
    assert min(every) < steady / 4
    # QEMU switches over once pending < threshold = bandwidth x downtime-limit. The verdict's
    # bandwidth is QEMU's mean rate: transferred / total-time of its last query-migrate
    q = json.loads((run / "run.json").read_text())["attempts"][0]["last_counters"]["source"]
    assert v.bandwidth_bytes_per_s == pytest.approx(q["ram"]["transferred"] / q["total-time"] * 1000, rel=0.1)
    bpms = v.bandwidth_bytes_per_s / 1000
    assert m.downtime_limit_ms == 20
    # the needed limit: the least whole ms whose threshold is above the working set ...
    need = v.needed_downtime_limit_ms
    assert need == int(need) and (need - 1) * bpms <= steady < need * bpms
    # ... and where QEMU's own thresholds put it: each post-sync threshold over the 20 ms
    # limit is the bandwidth QEMU measured in its last 100 ms window (they swing ~15 %)
    qemu_need = [steady / (t / 20) for t in thr[-3:]]
    assert need == pytest.approx(statistics.median(qemu_need), rel=0.1)
    # the suggestion: a round 10 ms with the margin it states, which switches over even at
    # the slowest window QEMU measured after a sync in this run
    sug = v.suggested_downtime_limit_ms
    assert sug % 10 == 0 and steady / bpms * MARGIN <= sug < need * MARGIN + 10
    assert sug * min(thr) / 20 > steady
    assert f"suggested (+{round((MARGIN - 1) * 100)}% margin)" in v.summary
    assert v.needed_bandwidth_bytes_per_s == pytest.approx(steady / 20 * 1000)
    assert v.suggested_bandwidth_bytes_per_s == pytest.approx(steady / 20 * 1000 * MARGIN)
    assert v.dominant_device == "ram"
    s = v.summary
    assert f"{steady / MiB:.1f} MiB is pending again" in s
    assert f"downtime-limit >= {v.needed_downtime_limit_ms:.0f} ms" in s
    assert f"downtime-limit {v.suggested_downtime_limit_ms:.0f} ms" in s
    assert "MiB/s" in s and "auto-converge" in s and "pre-copy cannot shrink pending" in s


@pytest.mark.parametrize("run", [REAL / "7.2-converges", REAL / "10.0-converges",
                                 REAL / "7.2-downtime-raise"], ids=lambda p: p.name)
def test_converged_verdict_suggests_nothing(run: Path) -> None:
    for m in _report(run).migrations:
        v = m.verdict
        assert v.converged is True and v.precopy_stuck is False
        assert v.suggested_downtime_limit_ms is None and v.suggested_bandwidth_bytes_per_s is None
        assert v.summary.startswith("converged at check")


def test_no_sync_after_setup_says_the_working_set_is_unknown() -> None:
    """Synthetic 9.2 log (make.py): the stuck migration never got below the threshold, so QEMU
    never re-synced; the verdict falls back to the closest estimate and says so."""
    lg = _make().v92_cancel_retry()
    bad = build_report(parse_bytes(lg.text().encode(), side="source", file=lg.name).frame).migrations[0]
    v = bad.verdict
    assert v.converged is False and v.post_sync_pending_bytes is None
    assert v.suggested_downtime_limit_ms is None
    assert "working set is not known yet" in v.summary and "closest at check" in v.summary and v.needed_downtime_limit_ms is not None


def test_fake_vfio_stopcopy_holds_pending_up() -> None:
    """Synthetic 10.0 log (make.py generator): no real VFIO device with a large stop-copy state
    is reachable on this host (mtty's is 72 bytes). The device's 64 MiB stop-copy size only
    shows in the exact checks, after each sync, and keeps pending above the threshold."""
    mk = _make()
    log = mk.Log((10, 0), name="fake-vfio-stuck.log")
    mk._setup(log)
    ok = mk._precopy(log, dirty_per_pass=2 * MiB, stop_size=64 * MiB, init=4 * MiB, dirty0=MiB,
                     max_checks=200, downtime_ms=10)
    assert not ok
    log.set_state("cancelling")
    log.set_state("cancelled")
    m = build_report(parse_bytes(log.text().encode(), side="source", file=log.name).frame).migrations[0]
    v = m.verdict
    assert v.converged is False and v.precopy_stuck is True
    assert v.dominant_device == mk.DEV
    exact = [c for c in m.checks if c.kind == "exact"]
    assert len(exact) >= 3 and m.checks[v.min_gap_check].kind == "exact"
    assert all(c.devices[mk.DEV] == 64 * MiB for c in exact)
    assert v.post_sync_pending_bytes == max(c.pending_bytes for c in exact[-3:])
    # estimates (no stop-copy size) fell below the threshold; they decided nothing
    assert any(c.below_threshold for c in m.checks if c.kind == "estimate")
    assert f"{mk.DEV} keeps 64.0 MiB of it pending after every sync" in v.summary
    assert "downtime-limit >=" in v.summary
