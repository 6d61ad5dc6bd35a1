"""Ground truth from a real VFIO device: the kernel's mtty driver migrated inside the nested L1 VM.

One session fixture builds (or reuses) the cached L1 image, boots L1 once through
``migprof lab --vfio mtty --scenario all`` and runs every scenario there; the tests then
check the run directories (tests/vfio_checks.py) against QEMU's own ``query-migrate``,
mtty's exact data sizes, and the BPF collector's counts taken inside L1.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import vfio_checks as vc

from profiler.cli import main

pytestmark = [pytest.mark.vfio_lab, pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="session")
def vfio_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vfio") / "runs"
    t0 = time.monotonic()
    rc = main(["lab", "--vfio", "mtty", "--scenario", "all", "--out", str(out)])
    print(f"vfio lab: {time.monotonic() - t0:.1f}s (image check/build, L1 boot, all scenarios)")
    assert rc == 0, f"migprof lab --vfio mtty exited {rc}; see {out}"
    return out


@pytest.mark.parametrize("name", list(vc.EXPECT))
def test_outcome_as_expected(vfio_runs: Path, name: str) -> None:
    vc.check_outcome(vfio_runs / name, name)


@pytest.mark.parametrize("name", vc.COMPLETED)
def test_mtty_bytes_are_exact(vfio_runs: Path, name: str) -> None:
    vc.check_mtty_bytes(vfio_runs / name, name)


@pytest.mark.parametrize("name", vc.COMPLETED)
def test_device_states_on_both_sides(vfio_runs: Path, name: str) -> None:
    vc.check_device_states(vfio_runs / name)


def test_multifd_sends_device_state_from_its_thread(vfio_runs: Path) -> None:
    vc.check_multifd_thread(vfio_runs / "multifd")


def test_switchover_ack_round_trip(vfio_runs: Path) -> None:
    vc.check_switchover_ack(vfio_runs / "switchover-ack")


def test_downtime_raise_is_what_let_it_converge(vfio_runs: Path) -> None:
    vc.check_downtime_raise(vfio_runs / "downtime-raised")


def test_iterates_until_cancelled(vfio_runs: Path) -> None:
    vc.check_iterates(vfio_runs / "iterates")


@pytest.fixture(scope="session")
def vfio_at_settings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`iterates` at other settings, as `bench_whatif.py` reruns it: a second L1 boot."""
    out = tmp_path_factory.mktemp("vfio") / "settings"
    rc = main(["lab", "--vfio", "mtty", "-s", "iterates", "--downtime-limit", "2000",
               "--max-bandwidth", "16", "--timeout", "60", "--out", str(out)])
    assert rc == 0, f"migprof lab --vfio mtty exited {rc}; see {out}"
    return out / "iterates"


def test_settings_reach_qemu_and_converge(vfio_at_settings: Path) -> None:
    # 2000 ms at 16 MiB/s is a threshold far above the 4 MiB set: it switches over
    vc.check_iterates(vfio_at_settings, downtime_ms=2000, bandwidth=16 << 20, cancelled=False)
    vc.check_mtty_bytes(vfio_at_settings, "converges")


def test_missing_dirty_tracking_fails_with_reason(vfio_runs: Path) -> None:
    vc.check_no_dirty_tracking(vfio_runs / "no-dirty-tracking")


@pytest.mark.parametrize("name", vc.COMPLETED)
def test_dirty_syncs_match_query_migrate(vfio_runs: Path, name: str) -> None:
    vc.check_dirty_syncs(vfio_runs / name)


@pytest.mark.parametrize("name", vc.COMPLETED)
def test_model_matches_query_migrate(vfio_runs: Path, name: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    vc.check_model(vfio_runs / name, capsys)


@pytest.mark.parametrize("name", list(vc.EXPECT))
def test_report_reads_run_directory(vfio_runs: Path, name: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    vc.check_report_rundir(vfio_runs / name, capsys)


@pytest.mark.parametrize("name", vc.WITH_BPF)
def test_bpf_data_fd_bytes_equal_mtty_sizes(vfio_runs: Path, name: str) -> None:
    vc.check_bpf_bytes(vfio_runs / name, name)


def test_bpf_tells_device_fd_from_container_fd(vfio_runs: Path) -> None:
    # the tracepoint path sees every ioctl syscall, container fd included
    vc.check_bpf_fd_kinds(vfio_runs / "multifd")


@pytest.mark.parametrize("name", vc.WITH_BPF)
def test_bpf_sees_device_states(vfio_runs: Path, name: str) -> None:
    vc.check_bpf_states(vfio_runs / name)


def test_kprobe_path_exercised_in_l1(vfio_runs: Path) -> None:
    info, rows = vc.bpf(vfio_runs / "converges")
    assert info["path"] == "kprobe"
    assert any(r["event"] == "bpf_data_read" for r in rows)


def test_module_that_will_not_load_names_the_step(tmp_path: Path, vfio_runs: Path) -> None:
    """Real L1, a module modprobe cannot load: one line naming the step, L1 gone.

    Runs after the scenarios (it asks for ``vfio_runs``) so the image is built once.
    """
    from profiler.errors import SetupError
    from profiler.lab.vfio import image, l1

    img = image.find_image()
    assert img is not None, "the session fixture built the image"
    results = tmp_path / "results"
    with pytest.raises(SetupError, match=r"L1 failed modules: modprobe mtty_not_here: .*not found"):
        l1.run_job(img, results, ["converges"], modules=["vfio", "mtty_not_here"])
    leftover = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and str(results) in (p / "cmdline").read_bytes().decode(errors="replace"):
                leftover.append(p.name)
        except OSError:  # exited while we looked
            pass
    assert leftover == [], "the L1 QEMU is still running"
    assert (results / "dmesg.txt").exists()
