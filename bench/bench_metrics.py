"""CPU cost of `--metrics` on a live run: the same real lab migration followed with and without
the metrics sink and server, runs interleaved, in one process.

Each run is `migprof lab`'s own follow (its QMP, sock_diag and lab rows and both QEMU trace
logs through one session, as `demo` and `lab --record` do), TCG on loopback, scenario
never-converges for ``--timeout`` seconds: a steady pre-copy with a convergence check every
few ms. The metrics runs add ``ReportMetrics`` and ``MetricsServer`` and are scraped from a
separate process (its CPU is not ours) every ``--scrape`` seconds. The figure is this
process's CPU time (all threads: the lab's drivers, the session, the server, the builds)
over the session, median of ``--reps`` runs each way; the ratio is with / without.

    .venv/bin/python bench/bench_metrics.py [--reps 3] [--timeout 8] [--scrape 1 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profiler.lab import scenarios  # noqa: E402
from profiler.lab.follow import lab_session  # noqa: E402
from profiler.lab.run import Lab, LabConfig, run_guarded  # noqa: E402
from profiler.metrics_server import MetricsServer  # noqa: E402
from profiler.session import BaseSink  # noqa: E402
from profiler.views.metrics import ReportMetrics  # noqa: E402

SCRAPER = """
import sys, time, urllib.request
url, every = sys.argv[1], float(sys.argv[2])
n = 0
while True:
    try:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "application/openmetrics-text"}), timeout=10).read()
        n += 1
    except OSError:
        break
    time.sleep(every)
print(n)
"""


class Count(BaseSink):
    def __init__(self) -> None:
        self.events = 0

    def feed(self, batch) -> None:
        self.events += len(batch)


def one_run(out: Path, timeout_s: float, scrape_s: float | None) -> tuple[float, float, int, int]:
    """(CPU s, wall s, events, scrapes) of one followed lab run."""
    sc = scenarios.get("never-converges").with_overrides(timeout_s=timeout_s)
    count = Count()
    with run_guarded(), Lab(LabConfig(sc, out, accel="tcg", net="loopback")) as lab:
        sinks: list = [count]
        scraper = None
        if scrape_s is not None:
            model = ReportMetrics("lab", lab.procs["source"].pid, "source")
            server = MetricsServer("127.0.0.1:0", model.collect)
            sinks += [model, server]
            scraper = subprocess.Popen([sys.executable, "-c", SCRAPER, server.url, str(scrape_s)],
                                       stdout=subprocess.PIPE, text=True)
        session, driver = lab_session(lab, sinks)
        c0, w0 = time.process_time(), time.perf_counter()
        session.run()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        driver.result()
        scrapes = int(scraper.communicate(timeout=30)[0] or 0) if scraper else 0
    return cpu, wall, count.events, scrapes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=8.0, help="pre-copy seconds a run")
    ap.add_argument("--scrape", type=float, nargs="+", default=[1.0, 15.0],
                    help="scrape intervals to measure (s)")
    a = ap.parse_args()
    configs = [None, *a.scrape]
    res: dict[float | None, list] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        for rep in range(a.reps):
            for c in configs:  # interleaved: the host's load drifts alike for each
                r = one_run(Path(tmp) / f"run-{rep}-{c}", a.timeout, c)
                res[c].append(r)
                print(f"rep {rep} scrape={c}: cpu {r[0]:.2f} s wall {r[1]:.1f} s events {r[2]} "
                      f"scrapes {r[3]}", file=sys.stderr)
    base = statistics.median(r[0] for r in res[None])
    print(f"{'scrape every':>14} {'CPU s (median)':>15} {'events':>8} {'scrapes':>8} {'ratio':>7} "
          f"{'ms CPU/scrape':>14}")
    for c in configs:
        cpu = statistics.median(r[0] for r in res[c])
        ev = statistics.median(r[2] for r in res[c])
        n = statistics.median(r[3] for r in res[c])
        per = f"{(cpu - base) / n * 1000:.1f}" if n else "-"
        print(f"{'without' if c is None else f'{c:g} s':>14} {cpu:>15.2f} {ev:>8.0f} {n:>8.0f} "
              f"{cpu / base:>7.3f} {per:>14}")


if __name__ == "__main__":
    main()
