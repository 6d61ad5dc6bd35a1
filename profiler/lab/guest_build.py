"""Build the lab guest (a 32-bit multiboot kernel) with gcc, cached by source hash."""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from profiler.cache import cache_dir
from profiler.errors import SetupError

log = logging.getLogger(__name__)

GUEST_SOURCES = ("boot.S", "guest.c", "guest.ld")
GUEST_NAME = "migprof-guest.elf"
CFLAGS = (
    "-m32",
    "-march=i686",
    "-ffreestanding",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-nostdlib",
    "-O2",
    "-Wall",
    "-Wextra",
)


def _read_sources(src_dir: Path | None) -> dict[str, bytes]:
    if src_dir is not None:
        return {n: (src_dir / n).read_bytes() for n in GUEST_SOURCES}
    pkg = importlib.resources.files("profiler.lab") / "guest"
    return {n: (pkg / n).read_bytes() for n in GUEST_SOURCES}


def _compiler_id(cc: str) -> bytes:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise SetupError(
            f"cannot run the C compiler {cc!r} ({e}); install gcc: bash scripts/run.sh setup"
        ) from e
    return out.stdout.splitlines()[0] if out.stdout else b""


def build_guest(cache: Path | None = None, src_dir: Path | None = None, cc: str = "gcc") -> Path:
    """Return the path of the built guest kernel, building it when the sources changed.

    The build directory is keyed by a hash of the sources, the flags and the compiler
    version, so an edit to ``guest.c`` produces a new kernel and concurrent runs never
    see a half-written file (the build happens in a temporary directory, then a rename).
    Raises SetupError with the compiler's own message when the build fails.
    """
    sources = _read_sources(src_dir)
    h = hashlib.sha256()
    h.update(_compiler_id(cc))
    h.update(" ".join(CFLAGS).encode())
    for name in GUEST_SOURCES:
        h.update(name.encode() + b"\0" + sources[name] + b"\0")
    key = h.hexdigest()[:16]
    root = (cache or cache_dir()) / "guest"
    out_dir = root / key
    kernel = out_dir / GUEST_NAME
    if kernel.is_file():
        return kernel
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))
    except OSError as e:
        raise SetupError(f"{root.parent}: cannot write the cache (the lab guest is built there): "
                         f"{e.strerror or e}; set MIGPROF_CACHE to a writable directory") from None
    try:
        for name, data in sources.items():
            (tmp / name).write_bytes(data)
        steps = [
            [cc, *CFLAGS, "-c", "guest.c", "-o", "guest.o"],
            [cc, "-m32", "-c", "boot.S", "-o", "boot.o"],
            [
                cc,
                "-m32",
                "-nostdlib",
                "-static",
                "-no-pie",
                "-Wl,--build-id=none",
                "-T",
                "guest.ld",
                "-o",
                GUEST_NAME,
                "boot.o",
                "guest.o",
            ],
        ]
        for cmd in steps:
            r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                msg = (r.stderr or r.stdout).strip().splitlines()
                first = next((ln for ln in msg if "error" in ln), msg[0] if msg else "")
                raise SetupError(
                    f"building the lab guest failed ({' '.join(cmd[:1] + cmd[-3:])}): {first}; "
                    "a 32-bit capable gcc is needed (bash scripts/run.sh setup)"
                )
        try:
            tmp.rename(out_dir)
        except OSError:
            # another run built the same key first; theirs is as good as ours
            if not kernel.is_file():
                raise
        log.debug("built guest %s", kernel)
        return kernel
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
