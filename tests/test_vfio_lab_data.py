"""The committed captures of the real mtty device (tests/data/real-vfio/) hold what the lab promises.

These run without the VM: the same checks as the nested tests, on run directories
captured by ``migprof lab --vfio mtty --scenario all`` (see the README there).
"""

from __future__ import annotations

import pytest
import vfio_checks as vc
from conftest import REAL_VFIO as DATA

from profiler.lab.vfio.scenarios import SCENARIOS


def test_every_scenario_was_captured() -> None:
    assert sorted(p.name for p in DATA.iterdir() if p.is_dir()) == sorted(SCENARIOS)


def test_every_scenario_has_its_expectations() -> None:
    """The lab's scenarios and the outcomes the tests expect of them (vfio_checks.EXPECT,
    stated from mtty's and QEMU's facts) name the same set: a new scenario needs both."""
    assert sorted(vc.EXPECT) == sorted(SCENARIOS)


@pytest.mark.parametrize("name", list(vc.EXPECT))
def test_outcome(name: str) -> None:
    vc.check_outcome(DATA / name, name)


@pytest.mark.parametrize("name", vc.COMPLETED)
def test_mtty_bytes(name: str) -> None:
    vc.check_mtty_bytes(DATA / name, name)


@pytest.mark.parametrize("name", vc.COMPLETED)
def test_device_states(name: str) -> None:
    vc.check_device_states(DATA / name)


def test_multifd_thread() -> None:
    vc.check_multifd_thread(DATA / "multifd")


def test_switchover_ack() -> None:
    vc.check_switchover_ack(DATA / "switchover-ack")


def test_downtime_raise() -> None:
    vc.check_downtime_raise(DATA / "downtime-raised")


def test_iterates() -> None:
    vc.check_iterates(DATA / "iterates")


def test_no_dirty_tracking() -> None:
    vc.check_no_dirty_tracking(DATA / "no-dirty-tracking")


@pytest.mark.parametrize("name", vc.COMPLETED)
def test_dirty_syncs(name: str) -> None:
    vc.check_dirty_syncs(DATA / name)


@pytest.mark.parametrize("name", vc.COMPLETED)
def test_model_matches_query_migrate(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    vc.check_model(DATA / name, capsys)


@pytest.mark.parametrize("name", list(vc.EXPECT))
def test_report_reads_run_directory(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    vc.check_report_rundir(DATA / name, capsys)


@pytest.mark.parametrize("name", vc.WITH_BPF)
def test_bpf_bytes(name: str) -> None:
    vc.check_bpf_bytes(DATA / name, name)


@pytest.mark.parametrize("name", vc.WITH_BPF)
def test_bpf_states(name: str) -> None:
    vc.check_bpf_states(DATA / name)


def test_bpf_fd_kinds() -> None:
    vc.check_bpf_fd_kinds(DATA / "multifd")
