"""`migprof report` and `report --json` on every input in tests/data: byte-identical to a base revision?

Runs the working tree and a base revision (``git archive`` of its ``profiler`` package into a
temporary directory) on the same inputs, each in one process that calls ``profiler.cli.main``
per input with stdout/stderr captured (both not a terminal, as in a pipe), and compares
stdout, stderr and the exit status. The inputs: every lab run directory, every log on its
own, each run's source and destination logs together, the synthetic logs, and any
``--extra`` paths (e.g. a large bench log). The base revision must be importable with the
venv's packages (a revision that still used numba needs numba installed).

Usage: bench/check_outputs.py [--base REV] [--extra PATH ...]   (exit 1 on any difference)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

DRIVER = r"""
import contextlib, io, json, sys
sys.path.insert(0, sys.argv[3])  # before the cwd (the checkout) and the editable install
from profiler import cli
assert cli.__file__.startswith(sys.argv[3]), cli.__file__
out = {}
for key, argv in json.load(open(sys.argv[1])).items():
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            rc = cli.main(argv)
        except SystemExit as x:
            rc = x.code
    out[key] = {"rc": rc, "stdout": o.getvalue(), "stderr": e.getvalue()}
json.dump(out, open(sys.argv[2], "w"))
"""


def inputs(extra: list[str]) -> list[list[str]]:
    """Argument lists of the inputs to report on (paths relative to the checkout)."""
    out: list[list[str]] = []
    for group in ("real", "real-vfio"):
        for d in sorted(p for p in (DATA / group).iterdir() if p.is_dir()):
            out.append([str(d.relative_to(ROOT))])
            logs = sorted(d.glob("*.log")) + sorted(d.glob("*.log.gz"))
            logs = [p for p in logs if p.name.startswith(("source", "destination"))]
            out += [[str(p.relative_to(ROOT))] for p in logs]
            if len(logs) == 2:
                out.append([str(p.relative_to(ROOT)) for p in logs])
    for p in sorted((DATA / "synthetic").rglob("*.log")):
        out.append([str(p.relative_to(ROOT))])
    out += [[x] for x in extra]
    return out


def run(src: Path, cases: dict[str, list[str]]) -> dict:
    with tempfile.TemporaryDirectory(prefix="check_outputs_run_") as tmp:
        todo, done = Path(tmp) / "cases.json", Path(tmp) / "out.json"
        todo.write_text(json.dumps(cases))
        r = subprocess.run([sys.executable, "-c", DRIVER, str(todo), str(done), str(src)], cwd=ROOT)
        if r.returncode:
            raise SystemExit(f"the driver failed on {src} (exit {r.returncode})")
        return json.loads(done.read_text())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="main", help="git revision to compare with (default main)")
    ap.add_argument("--extra", nargs="*", default=[], help="more input paths")
    a = ap.parse_args(argv)
    cases: dict[str, list[str]] = {}
    for inp in inputs(a.extra):
        for mode in ([], ["--json"]):
            cases[" ".join(["report", *mode, *inp])] = ["report", *mode, *inp]
    with tempfile.TemporaryDirectory(prefix="check_outputs_") as tmp:
        tar = Path(tmp) / "base.tar"
        subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(tar), a.base, "profiler"], check=True)
        with tarfile.open(tar) as t:
            t.extractall(Path(tmp) / "base", filter="data")
        base = run(Path(tmp) / "base", cases)
    ours = run(ROOT, cases)
    bad = 0
    for key in cases:
        for part in ("rc", "stdout", "stderr"):
            if base[key][part] != ours[key][part]:
                bad += 1
                print(f"DIFFERENT {part}: migprof {key}")
                break
    print(f"{len(cases) - bad} of {len(cases)} identical to {a.base}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
