"""Output paths a user cannot write, and the cache, as a real unprivileged user (nobody).

Each unwritable output (--html, -o, --record, --out, --dataset, the cache of a lab) is one
line naming the path and the reason, exit 2, before any work; the cache is
$XDG_CACHE_HOME/migprof (else ~/.cache/migprof) for a user other than root, and a lab run
as nobody builds its guest there and migrates. Inputs are copied where nobody can read
them (the checkout may sit in a root-only directory).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REAL
from unprivileged import run_as_nobody

CLI = "import sys; from profiler.cli import main; sys.exit(main(sys.argv[1:]))"
# what the commands below import as they run (tests/unprivileged.py links these in)
IMPORTS = ["profiler.cli", "profiler.commands.compare", "profiler.commands.import_",
           "profiler.commands.lab", "profiler.commands.live", "profiler.commands.record",
           "profiler.commands.demo", "profiler.pipeline", "profiler.store", "profiler.dataset",
           "profiler.views.html", "profiler.lab.run", "profiler.lab.follow", "profiler.lab.verify",
           "profiler.sources.jsonl", "qemu.qmp", "pyroute2", "plotly", "rich"]


@pytest.fixture(scope="module")
def place() -> Iterator[Path]:
    """A directory nobody can enter, holding a run to read (``run``), a directory nobody
    cannot write (``ro``, root's) and one it can (``rw``)."""
    d = Path(tempfile.mkdtemp(prefix="migprof-paths-"))
    try:
        shutil.copytree(REAL / "7.2-converges", d / "run")
        (d / "ro").mkdir()
        (d / "rw").mkdir()
        for p in [d, *d.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (d / "rw").chmod(0o777)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _nobody(*args: str, env: dict[str, str | None] | None = None, timeout: float = 120):
    return run_as_nobody(CLI, *args, imports=IMPORTS, timeout=timeout, env=env)


CASES = [
    # (arguments, the path named, what it is)
    (["compare", "{run}", "--", "{run}", "--html", "{ro}/c.html"], "{ro}/c.html", "the HTML page"),
    (["compare", "{run}", "--", "{run}", "--html", "{ro}/p/c.html", "--plotly", "directory"],
     "{ro}/p/c.html", "the HTML page"),
    (["import", "{run}", "-o", "{ro}/r.parquet"], "{ro}/r.parquet", "the recording"),
    (["import", "{run}", "--dataset", "{ro}/fleet"], "{ro}/fleet", "the dataset"),
    # checked before the target is looked at: pid 1 is never reached
    (["record", "-p", "1", "-o", "{ro}/r.parquet"], "{ro}/r.parquet", "the recording"),
    (["live", "-p", "1", "--no-tui", "--record", "{ro}/r.parquet"], "{ro}/r.parquet",
     "the recording"),
    (["lab", "--net", "loopback", "-o", "{ro}/run1"], "{ro}/run1", "the run directory"),
    (["lab", "--net", "loopback", "--record", "{ro}/r.parquet", "-o", "{rw}/run2"],
     "{ro}/r.parquet", "the recording"),
    (["demo", "--no-tui", "--net", "loopback", "-o", "{ro}/run3"], "{ro}/run3",
     "the run directory"),
    (["lab", "--vfio", "mtty", "--out", "{ro}/vfio"], "{ro}/vfio", "the run directories"),
]


@pytest.mark.parametrize("args,path,what", CASES, ids=lambda x: " ".join(x[:2]) if isinstance(x, list) else None)
def test_unwritable_output_is_one_line_exit_2(place: Path, args: list[str], path: str, what: str) -> None:
    sub = {"{run}": str(place / "run"), "{ro}": str(place / "ro"), "{rw}": str(place / "rw")}
    for k, v in sub.items():
        args = [a.replace(k, v) for a in args]
        path = path.replace(k, v)
    r = _nobody(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    # the one error line; `lab`/`demo` say what they are about to run before it
    errors = [ln for ln in lines if ln.startswith("migprof: error:")]
    assert len(errors) == 1, r.stderr
    assert errors[0].startswith(f"migprof: error: {path}: cannot write {what}: Permission denied")
    assert "Traceback" not in r.stderr
    assert not any((place / "ro").iterdir())  # nothing half-written


def test_cache_follows_xdg_for_a_user(place: Path) -> None:
    """As nobody: $XDG_CACHE_HOME/migprof, else ~/.cache/migprof; MIGPROF_CACHE wins."""
    code = "import sys; from profiler.cache import cache_dir; print(cache_dir())"
    imp = ["profiler.cache"]
    no = {"MIGPROF_CACHE": None, "XDG_CACHE_HOME": None, "HOME": "/home/someone"}
    assert run_as_nobody(code, imports=imp, env=no).stdout.strip() == "/home/someone/.cache/migprof"
    xdg = {**no, "XDG_CACHE_HOME": str(place / "rw" / "xdg")}
    assert run_as_nobody(code, imports=imp, env=xdg).stdout.strip() == str(place / "rw/xdg/migprof")
    mine = {**xdg, "MIGPROF_CACHE": "/srv/c"}
    assert run_as_nobody(code, imports=imp, env=mine).stdout.strip() == "/srv/c"


def test_cache_is_the_system_one_for_root(monkeypatch) -> None:
    from profiler.cache import cache_dir

    assert os.geteuid() == 0  # the suite runs as root (BPF, namespaces)
    monkeypatch.delenv("MIGPROF_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/tmp/elsewhere")
    assert cache_dir() == Path("/var/cache/migprof")


@pytest.mark.slow
def test_lab_as_a_user_builds_its_guest_in_the_xdg_cache(place: Path) -> None:
    """A real migration as nobody (loopback, TCG): the guest kernel is built into
    $XDG_CACHE_HOME/migprof/guest, not /var/cache/migprof."""
    xdg = place / "rw" / "xdg-lab"
    out = place / "rw" / "lab-run"
    r = _nobody("lab", "--net", "loopback", "--accel", "tcg", "-o", str(out),
                env={"MIGPROF_CACHE": None, "XDG_CACHE_HOME": str(xdg)}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "status=completed" in r.stdout
    assert list((xdg / "migprof" / "guest").glob("*/migprof-guest.elf"))
    assert (out / "run.json").is_file()


def test_lab_with_an_unwritable_cache_is_one_line(place: Path) -> None:
    """nobody's HOME (/nonexistent) cannot hold a cache: the lab says where and what to do."""
    r = _nobody("lab", "--net", "loopback", "--accel", "tcg", "-o", str(place / "rw" / "lab-nocache"),
                env={"MIGPROF_CACHE": None, "XDG_CACHE_HOME": None, "HOME": "/nonexistent"})
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("migprof: error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert errors[0].startswith("migprof: error: /nonexistent/.cache/migprof: ")
    assert "cannot write the cache" in errors[0] and "MIGPROF_CACHE" in errors[0]
    assert "Permission denied" in errors[0]


def test_qemu_10_from_the_setup_is_found_by_a_user(place: Path) -> None:
    """scripts/setup.d/40-qemu10.sh unpacks QEMU 10.0 into the system cache as root; a user
    whose own cache lacks it runs that one (`lab --qemu 10.0`)."""
    from profiler.cache import SYSTEM_CACHE

    code = "from profiler.lab.qemu import find_qemu; b = find_qemu('10.0'); print(b.path, b.short)"
    r = run_as_nobody(code, imports=["profiler.lab.qemu"],
                      env={"MIGPROF_CACHE": None, "XDG_CACHE_HOME": str(place / "rw" / "empty")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(SYSTEM_CACHE / "qemu-10.0/usr/bin/qemu-system-x86_64"), "10.0"]
