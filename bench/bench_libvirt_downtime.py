"""How close our downtime figures come to libvirt's, on real `lab --libvirt` migrations.

Runs ``-n`` migrations of scenario ``converges`` under two libvirt daemons and prints, per
run, the host's 1-minute load, libvirt's ``downtime`` and ours: QEMU's (source), the
guest's pause (source STOP -> destination RESUME), STOP -> the destination's reply to
libvirt's ``cont`` (the span libvirt times, on QEMU's clock), the bounds QEMU's stamps put
on libvirt's figure, and libvirt's lifecycle events as received; then the spread of
libvirt minus each (docs/libvirt.md has the numbers and why they differ).

``--disk-root`` keeps the daemons' state (/run/libvirt, status files that libvirt saves
with fsync) on the temp directory's disk instead of a tmpfs: the lab's layout before it
moved to /dev/shm, for the comparison. ``--wait-load L`` waits until the 1-minute load
is below L before each run (a quiet host).

    .venv/bin/python bench/bench_libvirt_downtime.py -n 10 --wait-load 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = """
import sys
import profiler.lab.libvirt as L
if {disk!r}:
    L.root_bases = lambda: ["/tmp"]
from profiler.cli import main
sys.exit(main(["lab", "--libvirt", "-s", "converges", "-o", {out!r}, "--json"]))
"""
FIGURES = ("downtime_ms", "guest_paused_ms", "cont_reply_ms", "libvirt_seen_ms")


def load1() -> float:
    return os.getloadavg()[0]


def one(out: Path, disk: bool) -> dict:
    r = subprocess.run([sys.executable, "-c", RUN.format(disk=disk, out=str(out))], cwd=ROOT,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"lab --libvirt failed: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def spread(xs: list[float]) -> str:
    if not xs:
        return "-"
    return (f"median {statistics.median(xs):+.1f}  min {min(xs):+.1f}  max {max(xs):+.1f}  "
            f"within 3 ms {sum(abs(x) <= 3 for x in xs)}/{len(xs)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=6)
    ap.add_argument("--disk-root", action="store_true")
    ap.add_argument("--wait-load", type=float, default=None)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="migprof-bench-lv-") as tmp:
        for i in range(a.n):
            while a.wait_load is not None and load1() >= a.wait_load:
                time.sleep(5)
            ld = load1()
            s = one(Path(tmp) / f"run{i}", a.disk_root)
            s["load1"] = ld
            rows.append(s)
            print(f"load {ld:4.2f}  libvirt {s['libvirt_downtime_ms']:>4} ms  " + "  ".join(
                f"{k.removesuffix('_ms')} {s[k]:.1f}" if s.get(k) is not None else f"{k} -"
                for k in FIGURES) + f"  bounds ({s['libvirt_low_ms']:.1f}, {s['libvirt_high_ms']:.1f})",
                flush=True)
    print(f"\n{len(rows)} runs, daemons' state on {'disk' if a.disk_root else 'tmpfs'}, "
          f"load {min(r['load1'] for r in rows):.2f}..{max(r['load1'] for r in rows):.2f}")
    for k in FIGURES:
        xs = [r["libvirt_downtime_ms"] - r[k] for r in rows if r.get(k) is not None]
        print(f"  libvirt - {k:16} {spread(xs)}")
    inside = sum(r["libvirt_low_ms"] < r["libvirt_downtime_ms"] < r["libvirt_high_ms"] for r in rows)
    print(f"  inside the bounds: {inside}/{len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
