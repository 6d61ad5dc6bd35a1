"""Boot the L1 guest under the host's QEMU (TCG), run one job in it, and bring back its results.

The disk is opened with ``snapshot=on`` so the cached image is never written; the
repository is shared read-only over 9p and the results directory read-write. The
QEMU process is killed on every exit path, so nothing keeps running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from profiler.errors import SetupError
from profiler.lab.vfio.image import REPO, L1Image

log = logging.getLogger(__name__)

HOST_QEMU = "/usr/bin/qemu-system-x86_64"
BOOT_MARK = "migprof-l1: init started"
L1_CPUS = 2
L1_MEM = "6G"


@dataclass(frozen=True, slots=True)
class L1Result:
    """What one L1 boot left in its results directory."""

    results: Path
    status: str  # "ok", or "failed <step>: <why>"
    step: str  # the last step the guest entered
    console: Path
    boot_s: float  # host start to the guest's PID 1
    wall_s: float

    @property
    def runs(self) -> Path:
        return self.results / "runs"


def l1_argv(image: L1Image, results: Path, console: Path, repo: Path = REPO,
            qemu: str = HOST_QEMU) -> list[str]:
    """The host QEMU command line that boots L1 (TCG: guests fail under this host's KVM)."""
    return [
        qemu, "-machine", "pc", "-accel", "tcg", "-cpu", "max",
        "-smp", str(L1_CPUS), "-m", L1_MEM,
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", "root=/dev/vda rw console=ttyS0 init=/sbin/migprof-init panic=-1 "
                   "loglevel=4 mitigations=off",
        "-drive", f"file={image.disk},format=raw,if=virtio,snapshot=on,cache=unsafe",
        "-virtfs", f"local,path={repo},mount_tag=repo,security_model=none,readonly=on,id=repo",
        "-virtfs", f"local,path={results},mount_tag=results,security_model=none,id=results",
        "-device", "virtio-rng-pci",
        "-serial", f"file:{console}",
    ]


def _tail(path: Path, n: int = 12) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines[-n:] if line.strip())


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def run_job(image: L1Image, results: Path, scenarios: list[str], boot_timeout_s: float = 180.0,
            timeout_s: float = 1500.0, qemu: str = HOST_QEMU,
            modules: list[str] | None = None, report_in_l1: bool = False,
            overrides: dict | None = None) -> L1Result:
    """Boot L1 with ``results`` shared in, run the scenarios, wait for it to power off.

    Raises SetupError naming the step when L1 does not boot or its init fails before
    the runner; scenario failures are reported in the run directories instead.
    ``modules`` replaces the kernel modules L1 loads (default: vfio vfio_iommu_type1
    mdev mtty). ``report_in_l1`` also runs ``migprof report --json`` inside L1 on each
    run (report-l1.json). ``overrides``: the user's settings for every scenario
    (``Scenario.with_overrides`` keywords), applied by the runner in L1.
    """
    if not Path(qemu).exists():
        raise SetupError(f"vfio lab: step boot: host QEMU {qemu} is missing; run 'bash scripts/run.sh setup'")
    results.mkdir(parents=True, exist_ok=True)
    for stale in ("status", "step", "runs", "modules"):
        p = results / stale
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    (results / "job.json").write_text(json.dumps({
        "out": "/results/runs", "scenarios": scenarios,
        "qemu": "/usr/bin/qemu-system-x86_64", "l1_report": report_in_l1,
        "overrides": overrides or {}}, indent=1) + "\n")
    if modules is not None:
        (results / "modules").write_text(" ".join(modules) + "\n")
    console = results / "console.log"
    argv = l1_argv(image, results, console, qemu=qemu)
    (results / "l1.cmdline").write_text(" ".join(argv) + "\n")
    t0 = time.monotonic()
    boot_s = -1.0
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while proc.poll() is None:
            now = time.monotonic() - t0
            if boot_s < 0 and BOOT_MARK in _read(console):
                boot_s = now
            if boot_s < 0 and now > boot_timeout_s:
                raise SetupError(f"vfio lab: step boot: L1 did not reach its init within "
                                 f"{boot_timeout_s:.0f}s; console: {_tail(console)}")
            if now > timeout_s:
                raise SetupError(f"vfio lab: step {_read(results / 'step') or 'boot'}: L1 still "
                                 f"running after {timeout_s:.0f}s; console: {_tail(console)}")
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0] or b""
    wall = time.monotonic() - t0
    if boot_s < 0 and BOOT_MARK in _read(console):
        boot_s = wall
    status = _read(results / "status")
    step = _read(results / "step")
    if boot_s < 0:
        raise SetupError(f"vfio lab: step boot: L1 exited (QEMU status {proc.returncode}) before "
                         f"its init ran: {out.decode(errors='replace').strip()[-300:]} "
                         f"console: {_tail(console)}")
    if not status:
        raise SetupError(f"vfio lab: step {step or 'init'}: L1 powered off without a status; "
                         f"console: {_tail(console)}")
    if status.startswith("failed") and not status.startswith("failed runner"):
        raise SetupError(f"vfio lab: L1 {status}")
    return L1Result(results, status, step, console, round(boot_s, 2), round(wall, 2))
