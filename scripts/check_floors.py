"""Run migprof's main commands at the lowest dependency versions pyproject.toml declares.

Builds (once, cached in ``$MIGPROF_CACHE/floors/<key>``) a venv holding exactly the
``>=`` floor of every dependency, then runs report, compare, import, whatif, query and
every ``--help`` there on the real data in tests/data, beside the same commands run by
this interpreter (the project's venv: the newest versions pip picks). Each JSON output
must be the same at the floor as at the ceiling; a recording written at one end must read
at the other. The checkout is put on PYTHONPATH, so the cached venv serves every clone.

    .venv/bin/python scripts/check_floors.py              # the declared floors
    .venv/bin/python scripts/check_floors.py --pin pandas==2.1.4   # try another floor
exit status: 0 every command agrees, 1 some did not (each says which), 2 no floor venv.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REAL = "tests/data/real"
VFIO = "tests/data/real-vfio"
RECS = "tests/data/recordings"
COMMANDS = ("report", "live", "record", "lab", "demo", "replay", "import", "compare", "whatif",
            "query")


def floors(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """Each runtime dependency's declared floor: ``{"pandas": "2.2.0", ...}``."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    out = {}
    for d in deps:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(,.*)?", d)
        if not m:
            raise SystemExit(f"pyproject.toml: dependency {d!r} has no '>=' floor")
        out[m[1]] = m[2]
    return out


def floor_venv(pins: dict[str, str], cache: Path) -> Path:
    """The venv with exactly ``pins``, built on first use under ``cache`` (a lock keeps two
    runs from building it at once; a stamp marks it complete)."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    spec = sorted(f"{k}=={v}" for k, v in pins.items())
    key = hashlib.sha256("\n".join([str(base), sys.version, *spec]).encode()).hexdigest()[:16]
    venv = cache / "floors" / key
    stamp = venv / ".complete"
    if stamp.exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        print(f"check_floors: building {venv}: {' '.join(spec)}", file=sys.stderr)
        subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
        r = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", *spec], capture_output=True, text=True)
        if r.returncode:
            tail = "\n".join(r.stderr.strip().splitlines()[-5:])
            raise SystemExit(f"check_floors: cannot install the floors ({' '.join(spec)}):\n{tail}")
        (venv / "pins.txt").write_text("\n".join(spec) + "\n")
        stamp.touch()
    return venv


def _cases() -> list[tuple[str, list[str], str]]:
    """(name, migprof arguments, what to compare: json | exit | file:PATH); {out} is each
    end's own output directory."""
    cases: list[tuple[str, list[str], str]] = [
        (f"{c} --help", [c, "--help"], "exit") for c in COMMANDS]
    cases += [
        ("report run dir", ["report", "--json", f"{REAL}/7.2-converges"], "json"),
        ("report logs", ["report", "--json", f"{REAL}/10.0-downtime-raise/source.log",
                         f"{REAL}/10.0-downtime-raise/destination.log"], "json"),
        ("report vfio+bpf", ["report", "--json", f"{VFIO}/converges"], "json"),
        ("report v1 recording", ["report", "--json", f"{RECS}/vfio-converges.v1.parquet"], "json"),
        ("report text", ["report", f"{REAL}/7.2-cancel-retry"], "exit"),
        ("compare", ["compare", "--json", f"{REAL}/7.2-converges", f"{REAL}/7.2-downtime-raise",
                     "--", f"{REAL}/10.0-converges", f"{RECS}/7.2-converges.v1.parquet"], "json"),
        ("compare text", ["compare", f"{REAL}/7.2-converges", "--", f"{REAL}/10.0-converges"],
         "exit"),
        ("compare html", ["compare", f"{REAL}/7.2-converges", "--", f"{REAL}/10.0-converges",
                          "--html", "{out}/cmp.html"], "file:cmp.html"),
        ("whatif", ["whatif", "--json", f"{REAL}/7.2-downtime-raise", "--sweep",
                    "downtime-limit=20..2000"], "json"),
        ("import", ["import", f"{VFIO}/converges", "-o", "{out}/rec.parquet"], "file:rec.parquet"),
        ("import dataset", ["import", f"{REAL}/7.2-converges", f"{REAL}/10.0-converges",
                            "--dataset", "{out}/ds", "--host", "h1"], "exit"),
        ("query", ["query", "{out}/ds", "SELECT host, count(*) AS n, sum(downtime_ms) AS d "
                   "FROM migrations GROUP BY host", "--json"], "json"),
    ]
    return cases


def _run(python: Path, args: list[str], out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = [a.replace("{out}", str(out)) for a in args]
    return subprocess.run([str(python), "-m", "profiler.cli", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def check(venv: Path) -> list[str]:
    """Run every case at the floor and at the ceiling; the problems found."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("VIRTUAL_ENV", None)
    problems = []
    with tempfile.TemporaryDirectory(prefix="migprof-floors-") as d:
        ends = {"floor": venv / "bin/python", "ceiling": Path(sys.executable)}
        for end in ends:
            (Path(d) / end).mkdir()
        for name, args, what in _cases():
            res = {end: _run(py, args, Path(d) / end, env) for end, py in ends.items()}
            bad = [f"{end}: exit {r.returncode}: {r.stderr.strip().splitlines()[-1:] or ''}"
                   for end, r in res.items() if r.returncode != 0]
            if not bad and what == "json":
                a, b = (json.loads(res[e].stdout) for e in ends)
                if a != b:
                    bad.append("JSON differs between floor and ceiling: " + _first_diff(a, b))
            if not bad and what.startswith("file:"):
                bad += [f"{end}: no {what[5:]}" for end in ends
                        if not (Path(d) / end / what[5:]).is_file()]
            problems += [f"{name}: {b}" for b in bad]
            print(f"check_floors: {name}: {'ok' if not bad else 'FAILED'}", file=sys.stderr)
        # a recording written at either end reads at the other, to the same report
        before = len(problems)
        reports = {}
        for writer in ends:
            rec = str(Path(d) / writer / "rec.parquet")
            got = {end: _run(py, ["report", "--json", rec], Path(d), env) for end, py in ends.items()}
            for end, r in got.items():
                if r.returncode:
                    problems.append(f"{writer}'s recording at the {end}: exit {r.returncode}: "
                                    f"{r.stderr.strip().splitlines()[-1:]}")
            reports[writer] = {e: json.loads(r.stdout)["migrations"] for e, r in got.items()
                               if not r.returncode}
        flat = [v for per in reports.values() for v in per.values()]
        if any(v != flat[0] for v in flat):
            problems.append("recordings: the reports of the floor's and the ceiling's "
                            "recordings differ")
        print(f"check_floors: recordings across ends: "
              f"{'ok' if len(problems) == before else 'FAILED'}", file=sys.stderr)
    return problems


def _first_diff(a, b, path: str = "$") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_diff(a.get(k), b.get(k), f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_diff(x, y, f"{path}[{i}]")
    return f"{path}: {json.dumps(a)[:80]} (floor) vs {json.dumps(b)[:80]} (ceiling)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pin", action="append", default=[], metavar="PKG==VER",
                   help="install this version instead of the declared floor (repeatable)")
    a = p.parse_args(argv)
    pins = floors()
    for spec in a.pin:
        name, _, ver = spec.partition("==")
        pins[name] = ver
    from profiler.cache import cache_dir

    try:
        venv = floor_venv(pins, cache_dir())
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"check_floors: cannot build the floor venv: {e}", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):
        print(f"check_floors: floor venv {venv}: "
              + (venv / "pins.txt").read_text().replace("\n", " "), file=sys.stderr)
    problems = check(venv)
    for pr in problems:
        print(f"check_floors: {pr}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
