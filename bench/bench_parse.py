"""Trace-log parsing speed and memory against a plain Python prefix-regex loop (same run).

Builds a log of >= 1.5 million lines by repeating the real QEMU logs of tests/data/real
(the timestamped source logs, QEMU 7.2 and 10.0, in capture order; each repetition shifted an
hour later, so the log reads as a long trace of many migrations), then measures:

(a) baseline: ``for line in f: re.match(r'(\\d+)@(\\d+)\\.(\\d{6}):([a-z0-9_]+) ', line)``
(b) ``read_log`` (chunked numpy scan -> schema frame)
(c) ``migprof report --json`` end to end: in process (``pipeline.load(keep=kept())`` + ``build_report``)
    and as a fresh process (interpreter and imports included)
(d) peak memory of ``read_log`` on that log vs. a log with the same events plus 10x as
    many non-trace lines (memory must follow the events kept, not the lines read)

Runs alternate and the best of N is kept, because the machine is shared. Prints ratios
(< 1.0 = faster than the baseline). Usage: bench/bench_parse.py [--lines N] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "tests" / "data" / "real"
PY = sys.executable
WORKERS = 2


def real_lines() -> list[bytes]:
    """Every line of the timestamped real source logs (TID@sec.usec: prefix), in capture
    order (QEMU 7.2 and 10.0; one of them floods migration_transferred_bytes)."""
    import gzip

    logs = []
    for p in sorted(REAL.glob("*/source.log*")):
        if "no-timestamps" in p.parent.name:
            continue
        data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        lines = data.splitlines(keepends=True)
        m = _TID.match(lines[0]) if lines else None
        logs.append((int(m.group(2)) if m else 0, lines))
    if not logs:
        raise SystemExit(f"no real logs under {REAL}")
    return [ln for _, lines in sorted(logs, key=lambda x: x[0]) for ln in lines]


_TID = re.compile(rb"^(\d+)@(\d+)\.")


def build(path: Path, lines: list[bytes], n: int, noise: int = 0) -> int:
    """Write >= n trace lines by repeating ``lines``, each repetition an hour later (a long
    trace of many migrations, as a real log of a busy host is), each trace line followed
    by ``noise`` non-trace lines."""
    other = [b"qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.80000001H:ECX.svm [bit 2]\n",
             b"2025-07-21T18:43:28.089819Z qemu-system-x86_64: info: guest log line that is not a trace\n",
             b"char device redirected to /dev/pts/3 (label charserial0)\n"]
    parts = [_TID.match(ln) for ln in lines]
    count = 0
    rep = 0
    with open(path, "wb") as f:
        while count < n:
            shift = rep * 3600
            out = []
            for i, (ln, m) in enumerate(zip(lines, parts, strict=True)):
                if m:
                    ln = m.group(1) + b"@" + str(int(m.group(2)) + shift).encode() + ln[m.end() - 1:]
                out.append(ln)
                if noise:
                    out.append(b"".join(other[(i + k) % 3] for k in range(noise)))
            f.write(b"".join(out))
            count += len(lines)
            rep += 1
    return count * (1 + noise)


BASELINE = """
import re, sys, time
t = time.perf_counter()
c = time.process_time()
n = 0
with open(sys.argv[1]) as f:
    for line in f:
        if re.match(r'(\\d+)@(\\d+)\\.(\\d{6}):([a-z0-9_]+) ', line):
            n += 1
print(time.perf_counter() - t, n, time.process_time() - c)
"""

READ_LOG = """
import sys, time
from profiler.sources.qemu_log import read_log
read_log(sys.argv[2])  # modules imported, as in any later call
t = time.perf_counter()
c = time.process_time()
r = read_log(sys.argv[1])
print(time.perf_counter() - t, r.lines, len(r.frame), r.malformed, time.process_time() - c)
"""

REPORT = """
import sys, time
from profiler import pipeline
from profiler.model import build_report
from profiler.model.names import kept
pipeline.load([sys.argv[2]], keep=kept())
t = time.perf_counter()
c = time.process_time()
L = pipeline.load([sys.argv[1]], keep=kept())  # as `migprof report` loads
rep = build_report(L.events, inputs=(sys.argv[1],), malformed=L.malformed, skipped=L.skipped,
                   n_events=L.rows)
print(time.perf_counter() - t, L.rows, len(rep.migrations), time.process_time() - c)
"""

MEMORY = """
import resource, sys, time, tracemalloc
from profiler.sources.qemu_log import read_log
tracemalloc.start()
r = read_log(sys.argv[1])
cur, peak = tracemalloc.get_traced_memory()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
frame = int(r.frame.memory_usage(deep=True).sum())
print(rss, peak, frame, r.lines, len(r.frame))
"""


def run(code: str, *args: str) -> list[float]:
    out = subprocess.run([PY, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_500_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args(argv)
    lines = real_lines()
    with tempfile.TemporaryDirectory(prefix="bench_parse_") as tmp:
        big = Path(tmp) / "source.log"
        n = build(big, lines, a.lines)
        small = Path(tmp) / "small.log"
        build(small, lines[:200], 200)
        size = big.stat().st_size
        print(f"log: {n} lines, {size / 1e6:.0f} MB, from {len(lines)} real lines (QEMU 7.2 + 10.0)")

        base, ours, rep = [], [], []  # (wall s, cpu s)
        for i in range(a.repeat):
            r = run(BASELINE, str(big))
            base.append((r[0], r[2]))
            r = run(READ_LOG, str(big), str(small))
            ours.append((r[0], r[4]))
            assert r[3] == 0, "malformed lines in a real log"
            if not a.no_report and i == 0:  # the model is another benchmark's topic: once
                r = run(REPORT, str(big), str(small))
                rep.append((r[0], r[3]))

        def show(label: str, xs: list[tuple[float, float]]) -> tuple[float, float]:
            w = min(x[0] for x in xs)
            c = min(x[1] for x in xs)
            print(f"{label} wall best {w:.3f}s (all {', '.join(f'{x[0]:.2f}' for x in xs)}), "
                  f"cpu best {c:.3f}s")
            return w, c

        bw, bc = show("(a) baseline prefix-regex loop:", base)
        ow, oc = show("(b) read_log:                  ", ours)
        print(f"    ratio read_log/baseline: wall {ow / bw:.2f}, cpu {oc / bc:.2f} "
              f"({n / ow / 1e6:.2f} M lines/s; read_log uses {WORKERS} threads, so its cpu adds both)")
        if rep:
            rw, rc = show("(c) load + build_report:       ", rep)
            print(f"    ratio report/baseline: wall {rw / bw:.2f}, cpu {rc / bc:.2f}")
            t = time.perf_counter()
            subprocess.run([str(ROOT / ".venv" / "bin" / "migprof"), "report", "--json", str(big)],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            e2e = time.perf_counter() - t
            print(f"    `migprof report --json` as a new process: {e2e:.3f}s wall, ratio {e2e / bw:.2f} "
                  "(includes interpreter start and imports)")

        # (d) memory: same events, 10x more non-trace lines
        mem_small = Path(tmp) / "events.log"
        mem_noisy = Path(tmp) / "noisy.log"
        n_ev = build(mem_small, lines, min(a.lines, 300_000))
        n_noisy = build(mem_noisy, lines, min(a.lines, 300_000), noise=10)
        m1 = run(MEMORY, str(mem_small))
        m2 = run(MEMORY, str(mem_noisy))
        print(f"(d) memory, {int(m1[4])} events: {n_ev} lines ({mem_small.stat().st_size / 1e6:.0f} MB) -> "
              f"peak RSS {m1[0] / 2**20:.0f} MiB, tracemalloc peak {m1[1] / 2**20:.0f} MiB, "
              f"frame {m1[2] / 2**20:.0f} MiB")
        print(f"    same events + 10x non-trace: {n_noisy} lines ({mem_noisy.stat().st_size / 1e6:.0f} MB) -> "
              f"peak RSS {m2[0] / 2**20:.0f} MiB, tracemalloc peak {m2[1] / 2**20:.0f} MiB, "
              f"frame {m2[2] / 2**20:.0f} MiB")
        print(f"    ratio noisy/plain: RSS {m2[0] / m1[0]:.2f}, tracemalloc {m2[1] / max(m1[1], 1):.2f} "
              f"for {n_noisy / n_ev:.0f}x the lines")
        print(json.dumps({"lines": n, "baseline_wall_s": bw, "baseline_cpu_s": bc,
                          "read_log_wall_s": ow, "read_log_cpu_s": oc, "read_log_wall_ratio": ow / bw,
                          "read_log_cpu_ratio": oc / bc,
                          "report_wall_ratio": (rw / bw) if rep else None,
                          "rss_ratio_10x_noise": m2[0] / m1[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
