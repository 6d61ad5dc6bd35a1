"""Build and cache the nested VFIO lab's L1 image under $MIGPROF_CACHE/vfio-l1/<inputs-hash>/.

The image is rebuilt only when its inputs change: the build script, the PID-1 stub
and the Python requirements installed into its venv (taken from pyproject.toml).
A failed build names the step that failed and leaves nothing mounted (the script
runs in a private mount namespace) and no half-built directory behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from profiler.errors import SetupError

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
BUILD_SCRIPT = HERE / "build-image.sh"
STUB_INIT = HERE / "l1-stub-init.sh"
# host tools the build runs, and the Debian package each comes from
HOST_TOOLS = {"debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs", "unshare": "util-linux",
              "chroot": "coreutils", "tar": "tar", "xz": "xz-utils"}
# the rootfs (~2 GB) and the image (~3 GB, sparse) exist together during the build
MIN_FREE_BYTES = 6 << 30
BUILD_TIMEOUT_S = 1800
EXTRA_L1_REQUIREMENTS = ["pytest>=8"]


@dataclass(frozen=True, slots=True)
class L1Image:
    """A built L1 image: kernel, initramfs, ext4 disk and what went into it."""

    dir: Path
    kernel: Path
    initrd: Path
    disk: Path
    manifest: dict[str, str]

    @classmethod
    def load(cls, d: Path) -> L1Image:
        manifest = {}
        for line in (d / "manifest.env").read_text().splitlines():
            k, _, v = line.partition("=")
            manifest[k] = v.strip('"')
        return cls(d, d / "vmlinuz", d / "initrd.img", d / "l1.ext4", manifest)


def cache_root() -> Path:
    from profiler.cache import cache_dir

    return cache_dir() / "vfio-l1"


def l1_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """What the image's venv needs to run migprof: pyproject's dependencies plus pytest."""
    data = tomllib.loads(pyproject.read_text())
    return [*data["project"]["dependencies"], *EXTRA_L1_REQUIREMENTS]


def inputs_hash(reqs: list[str] | None = None) -> str:
    """A short hash of everything that goes into the image."""
    h = hashlib.sha256()
    for f in (BUILD_SCRIPT, STUB_INIT):
        h.update(f.read_bytes())
    h.update("\n".join(reqs if reqs is not None else l1_requirements()).encode())
    return h.hexdigest()[:16]


def find_image(root: Path | None = None) -> L1Image | None:
    """The cached image for the current inputs, or None."""
    d = (root or cache_root()) / inputs_hash()
    if (d / "ready").exists():
        return L1Image.load(d)
    return None


def check_host(root: Path) -> None:
    """Raise SetupError naming what the build lacks: root, tools, disk space."""
    if os.geteuid() != 0:
        raise SetupError("vfio lab: step host-check: building the L1 image needs root "
                         "(debootstrap, chroot)")
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)})
    if missing:
        raise SetupError(f"vfio lab: step host-check: missing packages {' '.join(missing)}; "
                         "run 'bash scripts/run.sh setup'")
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        raise SetupError(f"vfio lab: step disk-space: {root} has {free / 2**30:.1f} GiB free; the "
                         f"L1 image build needs {MIN_FREE_BYTES / 2**30:.0f} GiB (image ~3 GB)")


@contextlib.contextmanager
def _build_lock(root: Path):
    """One build at a time per cache (a test and the CLI may both ask)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_image(rebuild: bool = False, root: Path | None = None,
                 progress: Callable[[str], None] | None = None) -> L1Image:
    """Return the cached L1 image for the current inputs, building it first if needed."""
    root = root or cache_root()
    reqs = l1_requirements()
    digest = inputs_hash(reqs)
    final = root / digest
    with _build_lock(root):
        if not rebuild and (final / "ready").exists():
            return L1Image.load(final)
        check_host(root)
        work = root / f"{digest}.build"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        env = {**os.environ, "MIGPROF_L1_PIP": " ".join(reqs),
               "MIGPROF_L1_PIP_HOST": f"{sys.executable} -m pip"}
        step = "start"
        tail: list[str] = []
        proc = subprocess.Popen(["bash", str(BUILD_SCRIPT), str(work)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                line = line.rstrip("\n")
                if line.startswith("STEP "):
                    step = line[5:]
                    if progress:
                        progress(step)
                else:
                    tail = (tail + [line])[-15:]
            rc = proc.wait(timeout=BUILD_TIMEOUT_S)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            shutil.rmtree(work, ignore_errors=True)
            raise
        if rc != 0 or step != "done":
            shutil.rmtree(work, ignore_errors=True)
            why = " | ".join(t for t in tail if t.strip())[-800:] or f"exit status {rc}"
            raise SetupError(f"vfio lab: L1 image build failed at step {step}: {why}")
        (work / "ready").write_text(digest + "\n")
        work.rename(final)
        # older images are 3 GB each: keep only the current one
        for other in root.iterdir():
            if other.is_dir() and other.name != digest:
                shutil.rmtree(other, ignore_errors=True)
        return L1Image.load(final)
