"""Ground truth from a real VFIO device: the kernel's mtty driver migrated inside the nested L1 VM.

One session fixture builds (or reuses) the cached L1 image, boots L1 once through
``migprof lab --vfio mtty --scenario all`` and runs every scenario there; the tests
then check the run directories against QEMU's own ``query-migrate`` and mtty's exact
data sizes (vfio-uapi.md §4.1), and the BPF collector's counts taken inside L1.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from profiler.cli import main
from profiler.lab.vfio.scenarios import (
    DESTINATION_STATES,
    MTTY_PRECOPY_BYTES,
    MTTY_STOPCOPY_BYTES,
    MTTY_TOTAL_BYTES,
    MTTY_VFIO_TRANSFERRED_MULTIFD,
    SCENARIOS,
    SOURCE_STATES,
)

pytestmark = [pytest.mark.vfio_lab, pytest.mark.slow, pytest.mark.timeout(1500)]

COMPLETED = [n for n, s in SCENARIOS.items() if s.expect_outcome == "completed"]
TRACE_LINE = re.compile(r"^(\d+)@(\d+)\.(\d{6}):(\w+) ?(.*)$")


@pytest.fixture(scope="session")
def vfio_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vfio") / "runs"
    t0 = time.monotonic()
    rc = main(["lab", "--vfio", "mtty", "--scenario", "all", "--out", str(out)])
    print(f"vfio lab: {time.monotonic() - t0:.1f}s (image check/build, L1 boot, all scenarios)")
    assert rc == 0, f"migprof lab --vfio mtty exited {rc}; see {out}"
    return out


def _trace(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        m = TRACE_LINE.match(line)
        if m:
            rows.append((m.group(4), m.group(5)))
    return rows


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _qm(run: Path, side: str = "source") -> dict[str, Any]:
    return json.loads((run / f"query-migrate-{side}.json").read_text())


def _mtty_save_blocks(run: Path) -> tuple[int, int]:
    """(pre-copy, stop-copy) bytes mtty handed QEMU, split at the source's STOP_COPY request."""
    pre = stop = 0
    in_stop = False
    for name, args in _trace(run / "source.log"):
        if name == "vfio_migration_set_device_state" and "state STOP_COPY" in args:
            in_stop = True
        if name == "vfio_save_block":
            size = int(re.search(r"data_size (\d+)", args).group(1))
            if in_stop:
                stop += size
            else:
                pre += size
    return pre, stop


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_outcome_as_expected(vfio_runs: Path, name: str) -> None:
    info = json.loads((vfio_runs / name / "run.json").read_text())
    want = SCENARIOS[name].expect_outcome
    got = info["outcome"]
    assert got == want or (want == "failed" and got == "refused"), info.get("error")
    for f in ("source.log", "destination.log", "events.jsonl", "run.json"):
        assert (vfio_runs / name / f).stat().st_size > 0, f


@pytest.mark.parametrize("name", COMPLETED)
def test_mtty_bytes_are_exact(vfio_runs: Path, name: str) -> None:
    run = vfio_runs / name
    pre, stop = _mtty_save_blocks(run)
    assert (pre, stop) == (MTTY_PRECOPY_BYTES, MTTY_STOPCOPY_BYTES)
    want = SCENARIOS[name].expect_vfio_transferred
    assert _qm(run)["vfio"]["transferred"] == want
    if want == MTTY_TOTAL_BYTES:
        assert pre + stop == _qm(run)["vfio"]["transferred"]
    # the device's own estimate of its initial data, as QEMU saw it
    exact = [a for n, a in _trace(run / "source.log") if n == "vfio_state_pending_exact"]
    assert any(f"precopy initial size {MTTY_PRECOPY_BYTES} " in a for a in exact)


def test_multifd_sends_device_state_from_its_thread(vfio_runs: Path) -> None:
    run = vfio_runs / "multifd"
    names = {n for n, _ in _trace(run / "source.log")}
    assert "vfio_save_complete_precopy_thread_start" in names
    assert _qm(run)["vfio"]["transferred"] == MTTY_VFIO_TRANSFERRED_MULTIFD


def _qmp_states(run: Path, side: str) -> list[str]:
    return [r["state"] for r in _jsonl(run / "events.jsonl")
            if r["event"] == "qmp_vfio_migration" and r["side"] == side]


def _norm(states: list[str]) -> list[str]:
    return [s.upper().replace("-", "_") for s in states]


@pytest.mark.parametrize("name", COMPLETED)
def test_device_states_on_both_sides(vfio_runs: Path, name: str) -> None:
    run = vfio_runs / name
    assert _norm(_qmp_states(run, "source")) == SOURCE_STATES
    assert _norm(_qmp_states(run, "destination")) == DESTINATION_STATES
    src = [re.search(r"state (\w+)", a).group(1) for n, a in _trace(run / "source.log")
           if n == "vfio_migration_set_device_state"]
    assert src[: len(SOURCE_STATES)] == SOURCE_STATES


def test_switchover_ack_round_trip(vfio_runs: Path) -> None:
    run = vfio_runs / "switchover-ack"
    assert "source_return_path_thread_switchover_acked" in {n for n, _ in _trace(run / "source.log")}
    assert "loadvm_approve_switchover" in {n for n, _ in _trace(run / "destination.log")}


def test_downtime_raise_is_what_let_it_converge(vfio_runs: Path) -> None:
    run = vfio_runs / "downtime-raised"
    rows = _jsonl(run / "events.jsonl")
    mark = next(r for r in rows if r["event"] == "lab_mark" and r.get("state") == "raise-downtime-limit")
    polls = [r for r in rows if r["event"] == "qmp_query_migrate" and r["side"] == "source"]
    before = [r for r in polls if r["t_ns"] < mark["t_ns"]]
    assert before and all(r["state"] == "active" for r in before)
    assert max(r.get("count") or 0 for r in before) >= SCENARIOS["downtime-raised"].raise_downtime_at_sync
    assert _qm(run)["status"] == "completed"


def test_missing_dirty_tracking_fails_with_reason(vfio_runs: Path) -> None:
    info = json.loads((vfio_runs / "no-dirty-tracking" / "run.json").read_text())
    assert info["outcome"] in ("failed", "refused")
    assert info["error"], "the failure must carry QEMU's reason"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_dirty_syncs_match_query_migrate(vfio_runs: Path, name: str) -> None:
    run = vfio_runs / name
    syncs = sum(1 for n, _ in _trace(run / "source.log") if n == "migration_bitmap_sync_end")
    assert syncs == (_qm(run).get("ram") or {}).get("dirty-sync-count", 0)


def _report(run: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    rc = main(["report", "--json", str(run / "source.log"), str(run / "destination.log")])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


@pytest.mark.parametrize("name", COMPLETED)
def test_model_matches_query_migrate(vfio_runs: Path, name: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = vfio_runs / name
    qm = _qm(run)
    mig = _report(run, capsys)["migrations"][-1]
    assert mig["outcome"] == qm["status"]
    assert mig["dirty_syncs"] == qm["ram"]["dirty-sync-count"]
    assert mig["downtime_ms"] == pytest.approx(qm["downtime"], abs=5)
    assert mig["total_ms"] == pytest.approx(qm["total-time"], abs=5)
    vfio = [d for d in mig["devices"] if d["kind"] == "vfio"]
    assert len(vfio) == 1, [d["name"] for d in mig["devices"]]
    assert vfio[0]["precopy_bytes"] == MTTY_PRECOPY_BYTES
    assert vfio[0]["stopcopy_bytes"] == MTTY_STOPCOPY_BYTES


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_report_ran_inside_l1(vfio_runs: Path, name: str) -> None:
    info = json.loads((vfio_runs / name / "run.json").read_text())
    assert info["l1_report"]["rc"] == 0, info["l1_report"]
    assert json.loads((vfio_runs / name / "report-l1.json").read_text())["migrations"]


# --- the BPF collector inside L1 ------------------------------------------------------


def _bpf(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    info = json.loads((run / "run.json").read_text())["bpf"]
    assert info["error"] is None, info["error"]
    return info, _jsonl(run / "bpf.jsonl")


@pytest.mark.parametrize("name", COMPLETED)
def test_bpf_data_fd_bytes_equal_mtty_sizes(vfio_runs: Path, name: str) -> None:
    run = vfio_runs / name
    info, rows = _bpf(run)
    assert info["path"] == SCENARIOS[name].bpf_path
    assert info["health"]["lost"] == 0
    read = sum(r.get("bytes") or 0 for r in rows
               if r["event"] == "bpf_data_read" and r["side"] == "source")
    written = sum(r.get("bytes") or 0 for r in rows
                  if r["event"] == "bpf_data_write" and r["side"] == "destination")
    assert read == MTTY_TOTAL_BYTES
    assert written == MTTY_TOTAL_BYTES
    pre, stop = _mtty_save_blocks(run)
    assert read == pre + stop
    info_rows = [r for r in rows if r["event"] == "bpf_precopy_info" and r["side"] == "source"]
    assert any(r.get("init_bytes") == MTTY_PRECOPY_BYTES for r in info_rows)


def test_bpf_tells_device_fd_from_container_fd(vfio_runs: Path) -> None:
    """0x3b75 is VFIO_DEVICE_FEATURE on a device fd and VFIO_IOMMU_DIRTY_PAGES on the container."""
    _, rows = _bpf(vfio_runs / "converges")
    hits = [r for r in rows if r["event"] == "bpf_vfio_ioctl" and r.get("cmd") == 0x3B75
            and r["side"] == "source"]
    fds = {r["fd"] for r in hits}
    assert len(fds) >= 2, hits[:5]
    kinds = {r["fd"]: (r.get("detail") or "") + " " + (r.get("raw") or "") for r in hits}
    dev = [fd for fd, k in kinds.items() if "DEVICE_FEATURE" in k or "MIG_DEVICE_STATE" in k]
    cont = [fd for fd, k in kinds.items() if "DIRTY_PAGES" in k]
    assert dev and cont and not set(dev) & set(cont), kinds


def test_kprobe_path_exercised_in_l1(vfio_runs: Path) -> None:
    info, rows = _bpf(vfio_runs / "converges")
    assert info["path"] == "kprobe"
    assert any(r["event"] == "bpf_data_read" for r in rows)
