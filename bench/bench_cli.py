"""Whole-process speed, memory and start-up of the `migprof` command line, as a user runs it.

Every figure is a ratio to a baseline measured in the same run (the machine is shared, so
runs alternate and the best of N is kept):

(a) `migprof report --json BIG` (stdout a pipe) vs a plain Python loop that matches each
    line's prefix (bench_parse's baseline); peak RSS of the report, and how it grows: half
    the log (half the migrations), and a 300 k-line part of it alone and with 10 non-trace
    lines after each line (11x the lines, the same migrations).
(b) `migprof report SMALL` and `report --json SMALL` (a 13 KB log) vs `python -c "import
    pandas, pyarrow"`.
(c) `migprof --help` and `--version` vs `python -c pass`.
(d) first vs second `report SMALL` on a fresh machine: the package copied to a new
    directory (no byte-code or compiler cache), as root, and as an unprivileged user whose
    HOME is not writable and who cannot write the package directory either (each run
    starts cold); the user part needs root, unshare and setpriv, and is skipped otherwise.

The package measured is the working tree, or ``--rev REV`` (``git archive``), always run
from a copy through the same launcher as the ``migprof`` script. BIG is built like
bench_parse's log (the real captures repeated, each repetition an hour later).

    .venv/bin/python bench/bench_cli.py [--lines 1900000] [--repeat 3] [--rev main]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_parse  # noqa: E402

PY = sys.executable
# what the `migprof` console script does, with the package under test first on the path
LAUNCH = "import sys; sys.path.insert(0, sys.argv.pop(1)); from profiler.cli import main; sys.exit(main())"
PREFIX_LOOP = bench_parse.BASELINE.replace("print(time.perf_counter() - t, n, time.process_time() - c)",
                                           "print(n)")


def timed(cmd: list[str], env: dict[str, str] | None = None, stdout=subprocess.DEVNULL) -> tuple[float, int, int]:
    """(wall s, peak RSS bytes, exit status) of one child process."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                         env=env, cwd="/")
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_maxrss * 1024, p.returncode


def package(rev: str | None, dest: Path) -> Path:
    """A fresh copy of the ``profiler`` package (no __pycache__) under ``dest``."""
    dest.mkdir(parents=True)
    if rev:
        tar = dest / "p.tar"
        subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(tar), rev, "profiler"], check=True)
        with tarfile.open(tar) as t:
            t.extractall(dest, filter="data")
        tar.unlink()
    else:
        shutil.copytree(ROOT / "profiler", dest / "profiler",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def best(xs: list[float]) -> float:
    return min(xs)


def show(label: str, xs: list[float], base: float | None = None) -> str:
    s = f"{label:<44} best {best(xs):7.3f}s  (all {', '.join(f'{x:.2f}' for x in xs)})"
    if base:
        s += f"  ratio {best(xs) / base:.2f}"
    print(s, flush=True)
    return s


def migprof(src: Path, *args: str) -> list[str]:
    return [PY, "-c", LAUNCH, str(src), *args]


def fresh_env(tmp: Path) -> dict[str, str]:
    """An environment with empty caches (numba's too, for revisions that used it)."""
    cache = Path(tempfile.mkdtemp(dir=tmp, prefix="cache_"))
    return dict(os.environ, NUMBA_CACHE_DIR=str(cache), XDG_CACHE_HOME=str(cache))


def can_drop_privileges() -> bool:
    return os.geteuid() == 0 and bool(shutil.which("unshare")) and bool(shutil.which("setpriv"))


def as_user(cmd: list[str]) -> list[str]:
    """``cmd`` as nobody with an unwritable HOME, in a private mount namespace where the
    interpreter (under root's 0700 home) is bind-mounted where nobody can reach it."""
    py = Path(PY).resolve()
    parent, top = "/" + py.parts[1], "/" + "/".join(py.parts[1:3])  # /root, /root/.pyenv
    script = (f'set -e; d=$(mktemp -d); mount --bind "{top}" "$d"; '
              f'mount -t tmpfs -o mode=755 tmpfs "{parent}"; mkdir -p "{top}"; mount --bind "$d" "{top}"; '
              'exec setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/nonexistent '
              'XDG_CACHE_HOME=/nonexistent/.cache NUMBA_CACHE_DIR= "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *cmd]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_900_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rev", default=None, help="measure this git revision instead of the working tree")
    ap.add_argument("--skip-big", action="store_true", help="only the start-up measurements")
    a = ap.parse_args(argv)
    results: dict[str, float | None] = {}
    lines = bench_parse.real_lines()
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmpd:
        tmp = Path(tmpd)
        os.chmod(tmp, 0o755)  # the unprivileged runs read the logs and the package copies
        src = package(a.rev, tmp / "pkg")
        small = tmp / "small.log"
        bench_parse.build(small, lines[:200], 200)
        small.chmod(0o644)
        # warm: byte code written, caches filled (the steady state of (a)-(c))
        for _ in range(2):
            timed(migprof(src, "report", "--json", str(small)))

        if not a.skip_big:
            big = tmp / "big.log"
            n = bench_parse.build(big, lines, a.lines)
            half = tmp / "half.log"
            n_half = bench_parse.build(half, lines, a.lines // 2)
            part = tmp / "part.log"
            n_part = bench_parse.build(part, lines, 300_000)
            noisy = tmp / "noisy.log"
            n_noisy = bench_parse.build(noisy, lines, 300_000, noise=10)
            print(f"BIG: {n} lines, {big.stat().st_size / 1e6:.0f} MB; half: {n_half} lines; "
                  f"part: {n_part} lines; noisy: {n_noisy} lines ({noisy.stat().st_size / 1e6:.0f} MB, "
                  "part + 10 non-trace lines after each line)", flush=True)
            base, ours, rss = [], [], []
            for _ in range(a.repeat):
                base.append(timed([PY, "-c", PREFIX_LOOP, str(big)])[0])
                w, r, rc = timed(migprof(src, "report", "--json", str(big)))
                assert rc == 0, f"report exited {rc}"
                ours.append(w)
                rss.append(r)
            bw = best(base)
            show("(a) prefix loop over BIG", base)
            show("    migprof report --json BIG", ours, bw)
            r_half = timed(migprof(src, "report", "--json", str(half)))[1]
            r_part = timed(migprof(src, "report", "--json", str(part)))[1]
            r_noisy = timed(migprof(src, "report", "--json", str(noisy)))[1]
            print(f"    peak RSS: BIG {min(rss) / 2**20:.0f} MiB, half {r_half / 2**20:.0f} MiB, "
                  f"part {r_part / 2**20:.0f} MiB, part + 10x non-trace lines {r_noisy / 2**20:.0f} MiB",
                  flush=True)
            results.update(report_big_ratio=best(ours) / bw, prefix_loop_s=bw, report_big_s=best(ours),
                           rss_big_mib=min(rss) / 2**20, rss_half_mib=r_half / 2**20,
                           rss_part_mib=r_part / 2**20, rss_noisy_mib=r_noisy / 2**20)

        imp, rep, repj, bare, hlp, ver = [], [], [], [], [], []
        for _ in range(a.repeat * 2):
            imp.append(timed([PY, "-c", "import pandas, pyarrow"])[0])
            rep.append(timed(migprof(src, "report", str(small)))[0])
            repj.append(timed(migprof(src, "report", "--json", str(small)))[0])
            bare.append(timed([PY, "-c", "pass"])[0])
            hlp.append(timed(migprof(src, "--help"))[0])
            ver.append(timed(migprof(src, "--version"))[0])
        show("(b) python -c 'import pandas, pyarrow'", imp)
        show("    migprof report SMALL", rep, best(imp))
        show("    migprof report --json SMALL", repj, best(imp))
        show("(c) python -c pass", bare)
        show("    migprof --help", hlp, best(bare))
        show("    migprof --version", ver, best(bare))
        results.update(small_report_ratio=best(rep) / best(imp), small_json_ratio=best(repj) / best(imp),
                       help_ratio=best(hlp) / best(bare), version_ratio=best(ver) / best(bare))

        first, second = [], []
        for i in range(a.repeat):
            p = package(a.rev, tmp / f"fresh{i}")
            env = fresh_env(tmp)
            first.append(timed(migprof(p, "report", str(small)), env=env)[0])
            second.append(timed(migprof(p, "report", str(small)), env=env)[0])
        show("(d) root: first report SMALL (fresh copy)", first)
        show("    root: second report SMALL", second)
        print(f"    first / second: {best(first) / best(second):.2f}", flush=True)
        results["first_second_root"] = best(first) / best(second)
        if can_drop_privileges():
            uf, us = [], []
            for i in range(a.repeat):
                p = package(a.rev, tmp / f"user{i}")
                for d in [p, *p.rglob("*")]:
                    d.chmod(0o755 if d.is_dir() else 0o644)
                w1, _, rc1 = timed(as_user(migprof(p, "report", str(small))))
                w2, _, rc2 = timed(as_user(migprof(p, "report", str(small))))
                if rc1 or rc2:
                    print(f"    unprivileged report failed (exit {rc1}, {rc2})", flush=True)
                uf.append(w1)
                us.append(w2)
            show("    nobody, unwritable HOME: first", uf)
            show("    nobody, unwritable HOME: second", us)
            print(f"    first / second: {best(uf) / best(us):.2f}", flush=True)
            results["first_second_user"] = best(uf) / best(us)
        else:
            print("    (unprivileged first/second skipped: needs root, unshare and setpriv)")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
