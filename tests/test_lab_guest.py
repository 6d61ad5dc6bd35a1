"""The lab guest: built by gcc into the cache, rebuilt on change, boots and dirties as told."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import time
from pathlib import Path

import pytest

from profiler.errors import SetupError
from profiler.lab import guest_build
from profiler.lab import qemu as lq

SRC = Path(guest_build.__file__).parent / "guest"


def _copy_sources(dst: Path) -> Path:
    dst.mkdir()
    for n in guest_build.GUEST_SOURCES:
        (dst / n).write_bytes((SRC / n).read_bytes())
    return dst


def test_built_once_and_cached(tmp_path: Path) -> None:
    k1 = guest_build.build_guest(cache=tmp_path)
    mtime = k1.stat().st_mtime_ns
    k2 = guest_build.build_guest(cache=tmp_path)
    assert k1 == k2 and k2.stat().st_mtime_ns == mtime
    head = k1.read_bytes()[:20]
    assert (
        head[:4] == b"\x7fELF" and head[4] == 1
    )  # ELFCLASS32: QEMU's multiboot loader wants 32-bit
    # the multiboot magic sits in the first 8 KiB
    assert (0x1BADB002).to_bytes(4, "little") in k1.read_bytes()[:8192]


def test_rebuilt_when_sources_change(tmp_path: Path) -> None:
    src = _copy_sources(tmp_path / "src")
    k1 = guest_build.build_guest(cache=tmp_path / "cache", src_dir=src)
    (src / "guest.c").write_text((src / "guest.c").read_text() + "\n/* changed */\n")
    k2 = guest_build.build_guest(cache=tmp_path / "cache", src_dir=src)
    assert k1 != k2 and k1.exists() and k2.exists()


def test_build_failure_is_a_setup_error(tmp_path: Path) -> None:
    src = _copy_sources(tmp_path / "src")
    (src / "guest.c").write_text("int kmain( {\n")
    with pytest.raises(SetupError) as e:
        guest_build.build_guest(cache=tmp_path / "cache", src_dir=src)
    assert "building the lab guest failed" in str(e.value) and "error" in str(e.value)
    assert not list((tmp_path / "cache" / "guest").glob("*/migprof-guest.elf"))
    # no half-built directory is left to be mistaken for a good build
    assert not [p for p in (tmp_path / "cache" / "guest").iterdir() if p.name.startswith(".build")]


def test_missing_compiler(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="cannot run the C compiler"):
        guest_build.build_guest(cache=tmp_path, cc=str(tmp_path / "no-gcc"))


def _boot(binary: lq.QemuBinary, kernel: Path, append: str, seconds: float,
          cpu: list[float] | None = None, accel: str = "tcg") -> str:
    """The guest's serial output over ``seconds``; ``cpu`` gets QEMU's CPU time (s)."""
    p = subprocess.Popen(
        [
            str(binary.path),
            *binary.base_args(),
            "-machine",
            "pc",
            "-accel",
            accel,
            "-cpu",
            lq.cpu_model(accel),
            "-m",
            "64",
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-kernel",
            str(kernel),
            "-append",
            append,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=binary.env(),
    )
    out = b""
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            if sel.select(0.1):
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break
                out += chunk
    finally:
        p.kill()
        _, _, ru = os.wait4(p.pid, 0)
        p.returncode = -9
        if cpu is not None:
            cpu.append(ru.ru_utime + ru.ru_stime)
    return out.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("version", ["7.2", "10.0"])
def test_guest_boots_and_dirties_at_its_rate(version: str) -> None:
    kernel = guest_build.build_guest()
    text = _boot(lq.find_qemu(version), kernel, "dirty_mb=8 rate_mbps=40 report_ms=250", 3.0)
    assert "migprof-guest: ready dirty_mb=8 rate_mbps=40" in text
    rates = [int(x) for x in re.findall(r"mibps=(\d+)", text)]
    assert len(rates) >= 4 and max(rates) > 0
    # paced against guest time: a slow period is paid back later, but the guest never gets
    # ahead of its rate since boot (8 MiB/s per 200 ms of backlog is the most it may owe)
    done = [(int(t), int(d)) for t, d in re.findall(r"t_ms=(\d+) dirtied_mib=(\d+)", text)]
    assert all(d <= 40 * t / 1000 + 1 for t, d in done), done
    sweeps = [int(x) for x in re.findall(r"sweeps=(\d+)", text)]
    assert sweeps == sorted(sweeps) and sweeps[-1] >= 1


@pytest.mark.slow
def test_guest_dirties_under_kvm() -> None:
    """Under KVM the guest spins between its writes instead of halting on the 1 kHz tick: a
    KVM nested in another hypervisor failed to emulate the tick handler's IRET, and the
    guest stopped after its ready line."""
    b, k = lq.find_qemu("7.2"), guest_build.build_guest()
    if not lq.kvm_usable(b, k):
        pytest.skip("KVM does not boot guests on this host")
    text = _boot(b, k, "dirty_mb=8 rate_mbps=40 report_ms=250", 4.0, accel="kvm")  # a nested KVM boots slowly
    assert "migprof-guest: ready" in text and "KVM internal error" not in text
    assert len(re.findall(r"mibps=(\d+)", text)) >= 3


@pytest.mark.slow
def test_guest_halts_between_its_writes() -> None:
    """The guest halts until the next 1 kHz tick instead of spinning, so under TCG its QEMU
    leaves the host CPU to the migration thread and the other QEMU (a spinning guest took a
    whole core, and the lab's two-core hosts then slowed the migration and the guest alike)."""
    cpu: list[float] = []
    text = _boot(lq.find_qemu("7.2"), guest_build.build_guest(), "dirty_mb=8 rate_mbps=40 report_ms=250",
                 3.0, cpu)
    assert "mibps=" in text
    assert cpu and cpu[0] < 0.5 * 3.0, f"QEMU used {cpu[0]:.2f} s of CPU in 3 s"


@pytest.mark.slow
def test_guest_clamps_an_oversized_working_set() -> None:
    text = _boot(lq.find_qemu("7.2"), guest_build.build_guest(), "dirty_mb=500 rate_mbps=10", 1.5)
    assert "warning: dirty_mb=500 exceeds free RAM" in text
    m = re.search(r"ready dirty_mb=(\d+)", text)
    assert m and 0 < int(m[1]) < 64
