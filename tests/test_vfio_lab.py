"""The nested VFIO lab's host side without booting L1: guest image, image cache, bad input."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT
from qemu.qmp import QMPClient

from profiler.errors import SetupError
from profiler.lab.vfio import guest, image, l1, scenarios

HOST_QEMU = "/usr/bin/qemu-system-x86_64"


def _mounts_under(path: Path) -> list[str]:
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(path))]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def test_dirty_guest_header_is_multiboot() -> None:
    img = guest.dirty_guest(1 << 20)
    magic, flags, checksum = (int.from_bytes(img[i:i + 4], "little") for i in (0, 4, 8))
    assert magic == 0x1BADB002 and flags & (1 << 16)
    assert (magic + flags + checksum) & 0xFFFFFFFF == 0
    with pytest.raises(ValueError):
        guest.dirty_guest(100)


async def _read_guest_dword(sock: Path, addr: int) -> int:
    q = QMPClient("test")
    await q.connect(str(sock))
    try:
        out = await q.execute("human-monitor-command", {"command-line": f"xp /1wx {addr:#x}"})
    finally:
        await q.disconnect()
    return int(out.split(":")[1].split()[0], 16)


def test_dirty_guest_dirties_its_range_in_real_qemu(tmp_path: Path) -> None:
    """Boot the generated image in the host's QEMU: every page of the range keeps changing."""
    img = guest.write_dirty_guest(tmp_path / "g.bin", 1 << 20)
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen([HOST_QEMU, "-machine", "pc", "-accel", "tcg", "-m", "16",
                             "-nodefaults", "-display", "none", "-kernel", str(img),
                             "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
        first, last = 0x200000, 0x200000 + (1 << 20) - 4096
        a1 = asyncio.run(_read_guest_dword(sock, first))
        b1 = asyncio.run(_read_guest_dword(sock, last))
        outside = asyncio.run(_read_guest_dword(sock, 0x200000 + (1 << 20)))
        time.sleep(0.3)
        a2 = asyncio.run(_read_guest_dword(sock, first))
        assert a1 > 0 and b1 > 0, "the guest never wrote its range"
        assert a2 > a1, "the guest stopped dirtying"
        assert outside == 0, "the guest wrote past its range"
    finally:
        proc.kill()
        proc.wait()


def test_inputs_hash_follows_requirements() -> None:
    reqs = image.l1_requirements()
    assert any(r.startswith("pandas") for r in reqs) and any(r.startswith("qemu.qmp") for r in reqs)
    assert image.inputs_hash(reqs) == image.inputs_hash(reqs)
    assert image.inputs_hash(reqs) != image.inputs_hash([*reqs, "extra-package>=1"])


def test_missing_host_tools_name_the_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(SetupError, match=r"step host-check: missing packages .*debootstrap.*e2fsprogs"):
        image.check_host(tmp_path / "cache")


def test_too_little_disk_names_the_step(tmp_path: Path) -> None:
    """A real 16 MiB tmpfs as the image cache: the disk-space step refuses it."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(SetupError, match=r"step disk-space: .* GiB free; the L1 image build needs"):
            image.check_host(small / "cache")
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.slow
def test_failed_build_names_step_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable mirror: the build stops at debootstrap, no mount, no build directory."""
    monkeypatch.setenv("MIGPROF_L1_MIRROR", "http://127.0.0.1:9/debian")
    root = tmp_path / "cache"
    with pytest.raises(SetupError, match=r"L1 image build failed at step debootstrap"):
        image.ensure_image(root=root)
    assert _mounts_under(root) == []
    assert [p.name for p in root.iterdir() if p.is_dir()] == []
    assert image.find_image(root) is None


def _image_with_kernel(tmp_path: Path, kernel: bytes) -> image.L1Image:
    """An L1 image directory around ``kernel``, with an empty initrd and disk."""
    d = tmp_path / "img"
    d.mkdir()
    (d / "vmlinuz").write_bytes(kernel)
    (d / "initrd.img").write_bytes(b"\x00" * 512)
    (d / "l1.ext4").write_bytes(b"\x00" * 65536)
    (d / "manifest.env").write_text("KVER=none\n")
    return image.L1Image.load(d)


def test_l1_that_does_not_boot_names_the_step(tmp_path: Path) -> None:
    """A kernel that is not a kernel: run_job says 'step boot' and no QEMU is left running."""
    img = _image_with_kernel(tmp_path, b"\x00" * 4096)
    results = tmp_path / "results"
    with pytest.raises(SetupError, match=r"step boot: L1 exited .* before its init ran"):
        l1.run_job(img, results, ["converges"], boot_timeout_s=30)
    assert _processes_mentioning(str(results)) == []


def test_l1_that_hangs_is_killed(tmp_path: Path) -> None:
    """A kernel that never reaches init: the boot timeout kills QEMU and names the step."""
    # the guest image from above is a valid multiboot kernel that loops forever
    img = _image_with_kernel(tmp_path, guest.dirty_guest(1 << 20))
    results = tmp_path / "results"
    # the message proves the 3 s boot timeout fired (no wall-clock assertion: that is bench work)
    with pytest.raises(SetupError, match=r"step boot: L1 did not reach its init within 3s"):
        l1.run_job(img, results, ["converges"], boot_timeout_s=3)
    assert _processes_mentioning(str(results)) == []


def test_l1_command_line_shares_repo_read_only(tmp_path: Path) -> None:
    img = image.L1Image(tmp_path, tmp_path / "k", tmp_path / "i", tmp_path / "d", {})
    argv = l1.l1_argv(img, tmp_path / "r", tmp_path / "c")
    joined = " ".join(argv)
    assert "mount_tag=repo,security_model=none,readonly=on" in joined
    assert "snapshot=on" in joined and "-accel tcg" in joined and "-cpu max" in joined


def test_scenarios_cover_the_issue() -> None:
    names = set(scenarios.SCENARIOS)
    assert {"converges", "downtime-raised", "switchover-ack", "multifd", "no-dirty-tracking"} <= names
    assert scenarios.select(["multifd"])[0].expect_vfio_transferred == 4252
    with pytest.raises(KeyError):
        scenarios.select(["nope"])


def test_vfio_device_option_follows_dirty_tracking() -> None:
    from profiler.lab.vfio.runner import vfio_device_arg

    on = vfio_device_arg("u", True)
    assert "x-device-dirty-page-tracking=off" in on and "enable-migration=on" in on
    assert "migration-events=on" in on
    assert "x-device-dirty-page-tracking" not in vfio_device_arg("u", False)


def test_cli_rejects_unknown_vfio_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    from profiler.cli import main
    from profiler.lab.scenarios import SCENARIOS as HOST_SCENARIOS

    with pytest.raises(SystemExit) as exc:
        main(["lab", "--vfio", "mtty", "--scenario", "bogus"])
    assert exc.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    # a host-lab scenario that the VFIO lab does not have: one clear line, exit 2
    host_only = sorted(set(HOST_SCENARIOS) - set(scenarios.SCENARIOS))[0]
    rc = main(["lab", "--vfio", "mtty", "--scenario", host_only])
    assert rc == 2
    assert f"unknown VFIO scenario '{host_only}'" in capsys.readouterr().err


@pytest.fixture
def package_for_nobody():
    """A copy of the profiler package where user nobody can read it. The checkout may lie
    in a root-only directory (a 0700 mktemp -d) and the venv's editable install points
    into it, so another user can import nothing from there."""
    d = Path(tempfile.mkdtemp(prefix="migprof-nobody-"))
    try:
        shutil.copytree(ROOT / "profiler", d / "profiler",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for p in [d, *d.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_root_required_message(package_for_nobody: Path) -> None:
    """Run as nobody with no capabilities (a real unprivileged user, not a patched geteuid)."""
    probe = ("import sys, pathlib\n"
             "from profiler.errors import SetupError\n"
             "from profiler.lab.vfio import image\n"
             "assert image.__file__.startswith(sys.argv[2]), image.__file__\n"
             "try:\n"
             "    image.check_host(pathlib.Path(sys.argv[1]))\n"
             "except SetupError as e:\n"
             "    print(e)\n")
    d = package_for_nobody
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                        sys.executable, "-B", "-c", probe, str(d / "cache"), str(d)],
                       cwd=d, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(d)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "step host-check: building the L1 image needs root" in r.stdout
    assert not (d / "cache").exists()  # refused before touching the cache


def _lab_args(*argv: str):
    from profiler.cli import build_parser

    full = ["lab", *argv]
    return build_parser(full).parse_args(full)


def test_settings_reach_the_runner_in_l1(tmp_path: Path) -> None:
    """`lab --vfio mtty -s iterates --downtime-limit MS --max-bandwidth MIBPS --timeout S`: the
    host lab's flags, in its units, go into the job L1's runner reads (job.json, written by
    the real run_job before QEMU refuses a kernel that is not one) and override the scenario."""
    import json

    from profiler.commands.options import lab_config
    from profiler.lab.vfio import overrides_from_args
    from profiler.lab.vfio.runner import job_scenarios

    flags = ("--downtime-limit", "1000", "--max-bandwidth", "16", "--timeout", "12")
    ov = overrides_from_args(_lab_args("--vfio", "mtty", "-s", "iterates", *flags, "--dirty-mb", "6"),
                             ["iterates"])
    results = tmp_path / "results"
    with pytest.raises(SetupError, match="step boot"):
        l1.run_job(_image_with_kernel(tmp_path, b"\x00" * 4096), results, ["iterates"],
                   boot_timeout_s=30, overrides=ov)
    [sc] = job_scenarios(json.loads((results / "job.json").read_text()))
    mib = scenarios.MiB
    assert sc.name == "iterates"
    assert sc.params == {"downtime-limit": 1000, "max-bandwidth": 16 * mib}
    assert (sc.cancel_after_s, sc.dirty_bytes) == (12.0, 6 * mib)
    # whether a setting converges is the question asked: either end is an answer
    assert sc.expect_outcome == scenarios.EITHER and sc.expects("completed") and sc.expects("cancelled")
    assert not sc.expects("failed")
    # the same flags mean the same QMP values in the host lab
    host = lab_config(_lab_args("-s", "converges", *flags)).scenario
    assert {k: host.params[k] for k in sc.params} == sc.params and host.timeout_s == sc.cancel_after_s
    # no flags: the scenario as defined, pre-copy at 8 MiB/s and 300 ms, cancelled after 15 s
    assert overrides_from_args(_lab_args("--vfio", "mtty", "-s", "iterates"), ["iterates"]) == {}
    [sc0] = job_scenarios({"scenarios": ["iterates"], "overrides": {}})
    assert sc0 is scenarios.SCENARIOS["iterates"]
    assert sc0.params == {"max-bandwidth": 8 * mib, "downtime-limit": 300}
    assert sc0.cancel_after_s == 15.0 and sc0.expect_outcome == "cancelled"


@pytest.mark.parametrize(("argv", "says"), [
    (("--vfio", "mtty", "-s", "iterates", "--downtime-limit", "-5"), "--downtime-limit -5: must be >= 0"),
    (("--vfio", "mtty", "-s", "iterates", "--max-bandwidth", "-1"), "--max-bandwidth -1: must be >= 0"),
    (("--vfio", "mtty", "-s", "iterates", "--timeout", "0"), "--timeout 0: must be > 0 s"),
    (("--vfio", "mtty", "--downtime-limit", "2000001"), "QEMU takes at most 2000000 ms"),
    (("--vfio", "mtty", "-s", "no-dirty-tracking", "--downtime-limit", "500"),
     "--downtime-limit makes no sense for VFIO scenario 'no-dirty-tracking'"),
    (("--vfio", "mtty", "-s", "all", "--max-bandwidth", "8"),
     "--max-bandwidth makes no sense for VFIO scenario 'no-dirty-tracking'"),
    (("--vfio", "mtty", "--dirty-mb", "61"), "--dirty-mb 61: the nested lab's guest dirties 1 to 60 MiB"),
    (("--vfio", "mtty", "--rate-mbps", "50"), "--rate-mbps is not available with --vfio"),
    (("--vfio", "mtty", "--qemu", "7.2"), "--qemu is not available with --vfio"),
    (("--vfio", "mtty", "--net", "loopback"), "--net is not available with --vfio"),
    (("--vfio", "mtty", "--record", "r.parquet", "--dataset", "fleet"),
     "--dataset is not available with --vfio; add its run directories with: migprof import"),
    # the host lab refuses the same values before any work
    (("-s", "converges", "--downtime-limit", "-5"), "--downtime-limit -5: must be >= 0"),
])
def test_bad_settings_are_one_line_exit_2(argv: tuple[str, ...], says: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from profiler.cli import main

    out = tmp_path / "out"
    assert main(["lab", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err
    assert not out.exists()
