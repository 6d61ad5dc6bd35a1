"""`migprof compare` over 2 x 50 recordings (goal: under 2 s), against loading the same
recordings alone, measured in the same run."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profiler import store  # noqa: E402
from profiler.cli import main as migprof  # noqa: E402

N = 50
# real lab runs shipped with the tests: a base side on QEMU 7.2, a candidate on 10.0
BASE_RUNS = ["7.2-converges", "7.2-downtime-raise", "7.2-no-timestamps", "7.2-cancel-retry"]
CAND_RUNS = ["10.0-converges", "10.0-downtime-raise", "10.0-no-timestamps", "10.0-cancel-retry"]


def make_side(d: Path, name: str, runs: list[str]) -> list[str]:
    """N recordings made with `migprof import` from real run directories (cycled)."""
    src = []
    for r in runs:
        p = ROOT / "tests/data/real" / r
        if p.is_dir():
            out = d / f"{name}-{r}.parquet"
            assert migprof(["import", str(p), "-o", str(out)]) == 0
            src.append(out)
    if not src:
        raise SystemExit(f"bench_compare: no real runs under tests/data/real ({runs})")
    files = []
    for i in range(N):
        f = d / f"{name}{i:02d}.parquet"
        shutil.copy(src[i % len(src)], f)
        files.append(str(f))
    return files


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def quiet_compare(args: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return migprof(["compare", *args])


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        with contextlib.redirect_stderr(io.StringIO()):
            base = make_side(d, "base", BASE_RUNS)
            cand = make_side(d, "cand", CAND_RUNS)
        files = base + cand
        store.model_key()  # hash the model code once, as any compare does
        t_load, _ = timed(lambda: [store.read_recording(f) for f in files])
        t_meta, _ = timed(lambda: [store.read_summary(f) for f in files])
        args = [*base, "--", *cand, "--json"]
        t_warm, rc = timed(lambda: quiet_compare(args))
        t_cold1, rc1 = timed(lambda: quiet_compare([*args, "--no-summary", "--jobs", "1"]))
        t_cold, rc2 = timed(lambda: quiet_compare([*args, "--no-summary"]))
        t_cli, res = timed(lambda: subprocess.run([sys.executable, "-m", "profiler.cli", "compare", *args],
                                                  capture_output=True, cwd=ROOT, check=False, text=True))
        cli = json.loads(res.stdout)
        used = cli["base"]["from_summary"] + cli["candidate"]["from_summary"]
        assert {rc, rc1, rc2} == {0}, (rc, rc1, rc2)
    n = len(files)
    print(f"compare 2 x {N} recordings ({n} files); baseline = read_recording of all {n} files")
    print(f"{'WHAT':<44} {'TIME(s)':>8} {'vs LOAD':>8}")
    rows = [
        ("load alone (read_recording x100)", t_load),
        ("read stored summaries alone (footers x100)", t_meta),
        ("compare, stored summaries (in process)", t_warm),
        ("compare, whole CLI process (python start)", t_cli),
        ("compare --no-summary --jobs 1 (rebuild reports)", t_cold1),
        ("compare --no-summary (rebuild, processes)", t_cold),
    ]
    for what, t in rows:
        print(f"{what:<44} {t:8.3f} {t / t_load:8.2f}")
    print(f"the CLI process used {used}/{n} stored summaries (fewer: the model code changed "
          "since import, so reports were rebuilt)")
    print(f"goal < 2 s: {'met' if t_cli < 2 else 'NOT met'} by the CLI ({t_cli:.2f} s); "
          f"rebuilding every report takes {t_cold:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
