"""The fleet dataset at scale: 10 000 migrations from real runs under many hosts and dates;
`migprof query` group-bys and the dataset compare, whole process and in process, with time
and peak memory against reading the same Parquet directly with pyarrow in the same run.

The dataset: every real run in tests/data/real and tests/data/real-vfio is imported once
with `migprof import` and prepared (report, derived tables) by profiler.dataset; the 10 000
migrations are those recordings cloned under 50 hosts x 20 dates, each clone shifted in
time by its date and given its own recording id and a patch release of its QEMU family
(7.2.19-22, 10.0.0-3) so group-bys have many groups. Clones are written one unit per
partition with the real writer (write_units). It goes to a temp dir unless --dataset DIR
names one to keep (and reuse: an existing complete one is not rebuilt).

    .venv/bin/python bench/bench_dataset.py [--dataset DIR] [--migrations N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from profiler.cli import main as migprof  # noqa: E402

HOSTS, DATES = 50, 20
DAY_NS = 86_400 * 10**9
PY = sys.executable
MIGPROF = str(Path(PY).parent / "migprof")


# ---------------------------------------------------------------------------- measuring


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def in_process(fn, repeat: int = 3) -> tuple[float, int, object]:
    """Median wall time of ``fn`` and the peak RSS it adds (kernel high-water mark, reset
    through /proc/self/clear_refs before each run), and its last result."""
    times, peaks, r = [], [], None
    for _ in range(repeat):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status("VmRSS")
        t0 = time.perf_counter()
        r = fn()
        times.append(time.perf_counter() - t0)
        peaks.append(_status("VmHWM") - base)
    return statistics.median(times), max(peaks), r


# A forked child keeps its parent's peak RSS through exec, so a command is started by this
# small launcher (itself ~10 MiB) and its own peak and time come back on a pipe.
LAUNCH = """import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, st, ru = os.wait4(pid, 0)
os.write(int(sys.argv[1]), f"{ru.ru_maxrss} {time.perf_counter() - t0}".encode())
sys.exit(os.waitstatus_to_exitcode(st))
"""


def whole_process(argv: list[str], repeat: int = 3) -> tuple[float, int]:
    """Median wall time and the largest peak RSS of a command (stdout discarded)."""
    times, peaks = [], []
    for _ in range(repeat):
        r, w = os.pipe()
        p = subprocess.run([PY, "-c", LAUNCH, str(w), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           cwd=ROOT, pass_fds=(w,), env={**os.environ, "PYTHONUNBUFFERED": "1"})
        os.close(w)
        with os.fdopen(r) as f:
            got = f.read().split()
        if p.returncode or len(got) != 2:
            raise SystemExit(f"bench_dataset: {' '.join(argv[:4])} ... failed ({p.returncode}): "
                             f"{p.stderr.decode()[-2000:]}")
        peaks.append(int(got[0]) * 1024)
        times.append(float(got[1]))
    return statistics.median(times), max(peaks)


def mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


# ---------------------------------------------------------------------------- the dataset


def real_recordings(tmp: Path) -> list[Path]:
    runs = sorted([*(ROOT / "tests/data/real").glob("*/"), *(ROOT / "tests/data/real-vfio").glob("*/")])
    out = []
    for r in runs:
        p = tmp / f"{r.parent.name}-{r.name}.parquet"
        with contextlib.redirect_stderr(io.StringIO()):
            assert migprof(["import", str(r), "-o", str(p)]) == 0
        out.append(p)
    return out


def clone(base, k: int, host: str, date: str, shift_ns: int, qemu: str | None):
    """Recording ``base`` (a Prepared) as clone ``k``: own id, shifted times, a QEMU patch release."""
    from dataclasses import replace

    rid = f"c{k:015x}"
    out = {}
    for name, t in base.tables.items():
        t = t.set_column(t.schema.get_field_index("recording"), "recording",
                         pa.array([rid] * t.num_rows, pa.string()))
        cols = {"events": ("t_ns",), "migrations": ("start_ns", "end_ns"),
                "recordings": ("created_ns",)}.get(name, ())
        for c in cols:
            i = t.schema.get_field_index(c)
            t = t.set_column(i, t.schema.field(i), pc.add(t[c], pa.scalar(shift_ns, pa.int64())))
        if name == "events":  # the raw clock moves with t_ns where it is the real-time clock
            i = t.schema.get_field_index("clock_ns")
            rt = pc.equal(t["clock"].cast(pa.string()), "realtime")
            t = t.set_column(i, t.schema.field(i), pc.if_else(
                rt, pc.add(t["clock_ns"], pa.scalar(shift_ns, pa.int64())), t["clock_ns"]))
        if name in ("migrations", "recordings") and qemu:
            i = t.schema.get_field_index("qemu_version")
            t = t.set_column(i, t.schema.field(i), pa.array([qemu] * t.num_rows, pa.string()))
        out[name] = t
    return replace(base, recording=rid, host=host, date=date, tables=out)


def build(d: Path, tmp: Path, target: int) -> dict:
    import datetime as dt

    from profiler.dataset import write

    recs = real_recordings(tmp)
    t0 = time.perf_counter()
    bases = [write.prepare(p, host="h", date="2026-01-01") for p in recs]
    t_prep = (time.perf_counter() - t0) / len(bases)
    per_cycle = sum(b.tables["migrations"].num_rows for b in bases)
    per_part = -(-target * len(bases) // (per_cycle * HOSTS * DATES))  # recordings per partition
    day0 = dt.date(2026, 10, 1)
    t0_ns = int(dt.datetime(day0.year, day0.month, day0.day, tzinfo=dt.UTC).timestamp()) * 10**9
    migs = k = events = units = 0
    t_write = 0.0
    for part in range(HOSTS * DATES):
        if migs >= target:
            break
        host, day = f"hv{part % HOSTS:03d}", part // HOSTS
        date = (day0 + dt.timedelta(days=day)).isoformat()
        clones = []
        for _ in range(per_part):
            if migs >= target:
                break
            b = bases[k % len(bases)]
            created = b.tables["recordings"]["created_ns"][0].as_py() or 0
            shift = t0_ns + day * DAY_NS + (k % 86_000) * 10**9 - created
            fam = b.tables["recordings"]["qemu_version"][0].as_py()
            qemu = None
            if fam and fam.count(".") == 2:
                major_minor = fam.rsplit(".", 1)[0]
                qemu = f"{major_minor}.{(19 if major_minor == '7.2' else 0) + k % 4}"
            clones.append(clone(b, k, host, date, shift, qemu))
            migs += b.tables["migrations"].num_rows
            k += 1
        t0 = time.perf_counter()
        a = write.write_unit(d, clones)
        t_write += time.perf_counter() - t0
        events += a.events
        units += 1
    return {"recordings": k, "migrations": migs, "units": units, "real_runs": len(bases),
            "migrations_per_cycle": per_cycle, "prepare_s_per_recording": t_prep,
            "write_s": t_write, "events": events}


# ---------------------------------------------------------------------------- the work


QUERIES = {
    "downtime by host (migrations)": "SELECT host, count(*) AS n, quantile_cont(downtime_ms, 0.5) AS p50, "
    "quantile_cont(downtime_ms, 0.95) AS p95, avg(downtime_ms) AS mean FROM migrations "
    "WHERE outcome = 'completed' GROUP BY host ORDER BY host",
    "bytes by device kind (devices)": "SELECT kind, count(*) AS n, sum(precopy_bytes) AS pre, "
    "sum(stopcopy_bytes) AS stop, avg(downtime_ms) AS down FROM devices GROUP BY kind ORDER BY kind",
    "events by qemu release (events x recordings)": "SELECT r.qemu_version, e.event, count(*) AS n "
    "FROM events e JOIN recordings r USING (recording) GROUP BY ALL ORDER BY ALL",
}

# the same answers from pyarrow alone: read the needed columns of the same files, group
# with Arrow's hash aggregates (Arrow has no exact quantile there: tdigest is the nearest)
ARROW = {
    "downtime by host (migrations)": """
import pyarrow.dataset as ds, pyarrow.compute as pc
t = ds.dataset(D + "/migrations", format="parquet", partitioning="hive").to_table(
    columns=["host", "downtime_ms", "outcome"], filter=pc.field("outcome") == "completed")
r = t.group_by("host").aggregate([("downtime_ms", "count"), ("downtime_ms", "tdigest", pc.TDigestOptions(q=[0.5, 0.95])), ("downtime_ms", "mean")]).sort_by("host")
""",
    "bytes by device kind (devices)": """
import pyarrow.dataset as ds
t = ds.dataset(D + "/devices", format="parquet", partitioning="hive").to_table(
    columns=["kind", "precopy_bytes", "stopcopy_bytes", "downtime_ms"])
r = t.group_by("kind").aggregate([("kind", "count"), ("precopy_bytes", "sum"), ("stopcopy_bytes", "sum"), ("downtime_ms", "mean")]).sort_by("kind")
""",
    "events by qemu release (events x recordings)": """
import pyarrow.dataset as ds
rec = ds.dataset(D + "/recordings", format="parquet", partitioning="hive").to_table(columns=["recording", "qemu_version"])
t = ds.dataset(D + "/events", format="parquet", partitioning="hive").to_table(columns=["recording", "event"])
t = t.set_column(1, "event", t["event"].cast("string"))
r = t.join(rec, "recording").group_by(["qemu_version", "event"]).aggregate([("event", "count")])
""",
}

COMPARE = """
from profiler.dataset import groups, sql
from profiler.model import compare as cmp
t = sql.compare_tables(D, "date >= '2026-10-01'")
mig, dev = t.migrations, t.devices
gs = groups.group_samples(mig, dev, "qemu_version")
b, c = groups.pick_sides(gs, base="10.0.0", candidate="10.0.3")
r = cmp.compare(b, c)
"""
# the baseline reads what compare_tables reads (the same columns), nothing more
COMPARE_ARROW = """
import pyarrow.dataset as ds, pyarrow.compute as pc
m = ds.dataset(D + "/migrations", format="parquet", partitioning="hive").to_table(
    columns=["recording", "migration", "outcome", "qemu_version", "host", "device_driver", "total_ms",
             "setup_ms", "downtime_ms", "stopcopy_ms", "dirty_syncs", "checks", "checks_to_converge",
             "transferred_bytes", "bandwidth_bytes_per_s", "read_ms"],
    filter=pc.field("date") >= "2026-10-01")
d = ds.dataset(D + "/devices", format="parquet", partitioning="hive").to_table(
    columns=["recording", "migration", "device", "kind", "downtime_ms", "load_ms", "precopy_bytes", "stopcopy_bytes", "read_ms"])
r = (m, d)
"""


def run_code(code: str, d: str):
    env = {"D": d}
    exec(code, env)
    return env["r"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", help="build (or reuse) the dataset here instead of a temp dir")
    ap.add_argument("--migrations", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="migprof-bench-") as tmp:
        d = Path(args.dataset) if args.dataset else Path(tmp) / "fleet"
        stamp = d / "_bench.json"
        if stamp.exists():
            info = json.loads(stamp.read_text())
            print(f"reusing {d}: {info['migrations']} migrations", flush=True)
        else:
            print(f"building {args.migrations} migrations in {d} ...", flush=True)
            info = build(d, Path(tmp), args.migrations)
            stamp.write_text(json.dumps(info))
        size = sum(f.stat().st_size for f in d.rglob("*.parquet"))
        files = sum(1 for _ in d.rglob("*.parquet"))
        print(f"dataset: {info['migrations']} migrations, {info['recordings']} recordings from "
              f"{info['real_runs']} real runs, {info['events']} events, {info['units']} units, "
              f"{files} files, {mib(size)} on disk")
        if "write_s" in info:
            print(f"  build: prepare (read + report + tables) {info['prepare_s_per_recording'] * 1000:.0f} ms "
                  f"per real recording; write_units {info['write_s']:.1f} s "
                  f"({info['write_s'] / info['units'] * 1000:.1f} ms per unit of 5 files, fsync'd)")
        ds = str(d)
        rows = []
        t, _ = whole_process([PY, "-c", "pass"])
        print(f"python start alone: {t * 1000:.0f} ms")
        from profiler.dataset import scan, sql

        t_scan, _, s = in_process(lambda: scan.scan(ds, ["migrations"]))
        print(f"scan (list + footers of the {len(s.files['migrations'])} migrations files): {t_scan * 1000:.0f} ms")
        for name, q in QUERIES.items():
            tq, mq, res = in_process(lambda q=q: sql.run(ds, q))
            ta, ma, _ = in_process(lambda name=name: run_code(ARROW[name], ds))
            wq, wmq = whole_process([MIGPROF, "query", ds, q, "--json"])
            wa, wma = whole_process([PY, "-c", f"D = {ds!r}\n" + ARROW[name]])
            rows.append((name, res.table.num_rows, tq, ta, mq, ma, wq, wa, wmq, wma))
        tq, mq, _ = in_process(lambda: run_code(COMPARE, ds))
        ta, ma, _ = in_process(lambda: run_code(COMPARE_ARROW, ds))
        wq, wmq = whole_process([PY, "-c", f"D = {ds!r}\n" + COMPARE])
        wa, wma = whole_process([PY, "-c", f"D = {ds!r}\n" + COMPARE_ARROW])
        rows.append(("compare --by qemu_version 10.0.0 vs 10.0.3", 2, tq, ta, mq, ma, wq, wa, wmq, wma))
        print()
        print("| work | rows | in process: time (pyarrow) ratio | peak RSS added (pyarrow) ratio "
              "| whole process: time (pyarrow) ratio | peak RSS (pyarrow) ratio |")
        print("|---|---|---|---|---|---|")
        for name, n, tq, ta, mq, ma, wq, wa, wmq, wma in rows:
            print(f"| {name} | {n} | {tq * 1000:.0f} ms ({ta * 1000:.0f} ms) {tq / ta:.2f}x "
                  f"| {mib(mq)} ({mib(ma)}) {mq / max(ma, 1):.2f}x "
                  f"| {wq * 1000:.0f} ms ({wa * 1000:.0f} ms) {wq / wa:.2f}x "
                  f"| {mib(wmq)} ({mib(wma)}) {wmq / wma:.2f}x |")
        with open("/proc/loadavg") as f:
            print(f"\nload average: {f.read().split()[0]} (2 cores shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
