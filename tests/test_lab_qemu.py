"""Finding QEMU binaries (Debian 7.2, the private 10.0 prefix), trace event choice, command lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from profiler.errors import SetupError
from profiler.lab import qemu as lq
from profiler.lab.guest_build import cache_dir


def test_debian_qemu_is_the_default() -> None:
    b = lq.find_qemu()
    assert b.path == lq.SYSTEM_QEMU and b.short == "7.2"
    assert b.data_dirs == () and b.module_dir is None
    assert lq.find_qemu("7.2") == b


def test_backports_qemu_from_the_private_prefix() -> None:
    b = lq.find_qemu("10.0")
    assert b.short == "10.0" and b.version[:2] == (10, 0)
    assert str(b.path).startswith(str(cache_dir() / "qemu-10.0"))
    assert b.base_args() == ["-L", str(cache_dir() / "qemu-10.0/usr/share/qemu")]
    assert b.env()["QEMU_MODULE_DIR"].endswith("qemu-10.0/usr/lib/x86_64-linux-gnu/qemu")
    assert lq.find_qemu(str(b.path)) == b


def test_bad_qemu_specs(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="QEMU not found"):
        lq.find_qemu(str(tmp_path / "qemu"))
    with pytest.raises(SetupError, match="bash scripts/run.sh setup"):
        lq.find_qemu("9.9")
    with pytest.raises(SetupError, match="give a version"):
        lq.find_qemu("latest")
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\necho hello\n")
    fake.chmod(0o755)
    with pytest.raises(SetupError, match="not a working QEMU"):
        lq.find_qemu(str(fake))


@pytest.mark.parametrize("version", ["7.2", "10.0"])
def test_trace_events_follow_the_binary(version: str) -> None:
    b = lq.find_qemu(version)
    names = lq.available_trace_events(b)
    chosen = lq.select_trace_events(b)
    assert set(chosen) <= names
    # the VFIO migration events, not the whole subsystem (vfio_region_* traces every MMIO access)
    vfio_migration = ("vfio_migration", "vfio_save", "vfio_load", "vfio_state_pending", "vfio_vmstate")
    assert {n for n in names if n.startswith(vfio_migration)} <= set(chosen)
    assert "vfio_region_read" in names and not any(n.startswith("vfio_region_") for n in chosen)
    assert "migrate_set_state" in chosen and "migration_bitmap_sync_end" in chosen
    assert "migration_transferred_bytes" not in chosen
    if version == "7.2":
        assert "migrate_pending" in chosen and "vmstate_downtime_save" not in chosen
    else:
        assert {
            "migrate_pending_estimate",
            "migrate_pending_exact",
            "vmstate_downtime_save",
            "vmstate_downtime_load",
            "vmstate_downtime_checkpoint",
        } <= set(chosen)
        assert "migration_transferred_bytes" in lq.select_trace_events(b, transferred_bytes=True)


def test_command_line(tmp_path: Path) -> None:
    b = lq.find_qemu("10.0")
    spec = lq.VmSpec(
        side="destination",
        name="migprof-lab-x-des",
        kernel=tmp_path / "k.elf",
        append="dirty_mb=4",
        run_dir=tmp_path,
        incoming=True,
        trace_events=["migrate_set_state"],
    )
    cmd = lq.build_command(b, spec)
    assert cmd[0] == str(b.path) and cmd[1:3] == b.base_args()
    assert cmd[cmd.index("-incoming") + 1] == "defer"
    assert cmd[cmd.index("-msg") + 1] == "timestamp=on"
    assert cmd[cmd.index("-D") + 1] == str(tmp_path / "destination.log")
    assert cmd[cmd.index("-trace") + 1] == f"events={tmp_path / 'trace-events-destination.txt'}"
    # guest RAM faulted in at start-up: first-touch faults on the destination made its first
    # pass and a stop-copy into untouched RAM run at a fraction of the speed in some runs
    assert "-mem-prealloc" in cmd
    spec.timestamps = False
    spec.incoming = False
    cmd = lq.build_command(b, spec)
    assert "-msg" not in cmd and "-incoming" not in cmd


def test_owner_tags_round_trip() -> None:
    for pid in (1, 35, 36, 4194304, os.getpid()):
        tag = lq.owner_tag(pid)
        assert lq.owner_pid(f"migprof-lab-{tag}-src") == pid
        assert lq.owner_pid(f"migprof-{tag}-dst") == pid
        assert len(f"migprof-{tag}s") <= 15  # IFNAMSIZ - 1
    assert lq.pid_alive(os.getpid())


@pytest.mark.slow
def test_kvm_probe_answers() -> None:
    from profiler.lab.guest_build import build_guest

    b, k = lq.find_qemu(), build_guest()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert lq.kvm_usable(b, k) is False
        return
    probed = lq._probe_kvm(b, k, timeout=4)  # the real boot, not the per-boot cache
    assert isinstance(probed, bool)
    assert lq.kvm_usable(b, k) is probed
