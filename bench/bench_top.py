"""CPU of `migprof top` following four concurrent lab migrations, against `migprof lab` itself.

Four `migprof lab -s never-converges --timeout T` runs start at once (each its own two
QEMUs, network namespaces and QMP poller); `migprof top --json` follows exactly their eight
QEMUs (``-n`` on their names, known before they start: each lab is exec'd from a shell
whose pid it keeps). utime+stime of top and of each lab process are sampled every 0.1 s.
Measured, in the same run, as bench_lab.py does for one lab: the CPU share over the window
where all four migrate (from 1 s after the last `migrate` to the first cancel), top's
against the labs' own (each lab's profiler following its one migration: the baseline).
Also printed: top over the whole lab lifetime (attaching to eight new QEMUs, switching
their trace events on and back off, detaching: the window of the QEMUs' lives), and the
whole top process from its start (the BPF compile and imports). Goal: top < 5 % of one
core while following. Needs root.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIGPROF = str(ROOT / ".venv/bin/migprof")
TICK = os.sysconf("SC_CLK_TCK")
LABS = 4
REPS = 3
TIMEOUT_S = 12  # each migration runs this long (never-converges), then is cancelled


def cpu_s(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds (None once it is gone)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(f[11]) + int(f[12])) / TICK


def b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def _events(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "events.jsonl").read_text().splitlines() if ln]


def _share(samples: list[tuple[float, float | None]], t0: float, t1: float) -> float | None:
    """CPU share (% of a core) between two epoch times from (epoch s, cpu s) samples."""
    win = [s for s in samples if t0 <= s[0] <= t1 and s[1] is not None]
    if len(win) < 2:
        return None
    return 100 * (win[-1][1] - win[0][1]) / (win[-1][0] - win[0][0])


def one(tmp: Path, rep: int) -> dict:
    labs = []
    for i in range(LABS):
        out = tmp / f"lab-{rep}-{i}"
        # the shell's pid is the lab's once it execs: its QEMUs' names are known now
        p = subprocess.Popen(["sh", "-c", f"read go; exec {MIGPROF} lab -s never-converges "
                              f"--timeout {TIMEOUT_S} --accel tcg -o {out}"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, text=True)
        labs.append((p, out))
    names = "|".join(f"migprof-lab-{b36(p.pid)}-" for p, _ in labs)
    t_start = time.time()
    top = subprocess.Popen([MIGPROF, "top", "--json", "-n", f"^({names})", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = [top.stdout.readline()]  # attached: the first interval's line
    assert lines[0].startswith("{"), lines
    reader = threading.Thread(target=lambda: lines.extend(top.stdout))
    reader.start()
    for p, _ in labs:
        p.stdin.write("go\n")
        p.stdin.flush()
    top_s: list[tuple[float, float | None]] = []
    lab_s: list[list[tuple[float, float | None]]] = [[] for _ in labs]
    while any(p.poll() is None for p, _ in labs):
        now = time.time()
        top_s.append((now, cpu_s(top.pid)))
        for (p, _), acc in zip(labs, lab_s, strict=True):
            if p.poll() is None:
                acc.append((now, cpu_s(p.pid)))
        time.sleep(0.1)
    time.sleep(1.0)  # top's last interval over the ends
    top_s.append((time.time(), cpu_s(top.pid)))
    top.send_signal(signal.SIGINT)
    top.wait(60)
    reader.join(10)
    runs = [_events(out) for _, out in labs]
    starts = [next(e["t_ns"] for e in ev if e.get("state") == "migrate") / 1e9 for ev in runs]
    ends = [max(e["t_ns"] for e in ev if e.get("event") == "qmp_migration"
                and e.get("side") == "source") / 1e9 for ev in runs]
    w0, w1 = max(starts) + 1.0, min(ends)
    final = json.loads(lines[-1]) if lines[-1].startswith("{") else {"vms": []}
    seen = {v["pid"] for ln in lines if ln.startswith("{") for v in json.loads(ln)["vms"]}
    return {
        "window_s": w1 - w0,
        "top_pct": _share(top_s, w0, w1),
        "lab_pct": statistics.mean(x for x in (_share(a, w0, w1) for a in lab_s) if x is not None),
        "top_life_pct": _share(top_s, top_s[0][0], top_s[-1][0]),
        "top_whole_pct": 100 * (top_s[-1][1] or 0) / (top_s[-1][0] - t_start),
        "qemus": len(seen),
        "cancelled": sum(1 for v in final["vms"] if v["status"] == "cancelled"
                         and v["side"] == "source"),
        "labs_ok": sum(1 for p, _ in labs if p.returncode == 0),
    }


def main() -> int:
    if os.geteuid() != 0:
        print("bench_top: needs root (BPF, network namespaces)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as d:
        res = [one(Path(d), r) for r in range(REPS)]
    print(f"{LABS} concurrent `migprof lab -s never-converges --timeout {TIMEOUT_S}`, "
          f"followed by `migprof top --json 1`; {REPS} runs; % of one core")
    print(f"{'RUN':>3} {'QEMUS':>5} {'CANC':>4} {'WINDOW(s)':>9} {'TOP':>6} {'LAB':>6} "
          f"{'TOP LIFE':>8} {'TOP WHOLE':>9}")
    for i, r in enumerate(res):
        print(f"{i:>3} {r['qemus']:>5} {r['cancelled']:>4} {r['window_s']:>9.1f} "
              f"{r['top_pct']:>6.2f} {r['lab_pct']:>6.2f} {r['top_life_pct']:>8.2f} "
              f"{r['top_whole_pct']:>9.2f}")
    worst = max(r["top_pct"] for r in res)
    print(f"top following {LABS} migrations: {worst:.2f} % of a core at worst (goal < 5 %); "
          f"one lab following its own: {statistics.mean(r['lab_pct'] for r in res):.2f} %; "
          f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
