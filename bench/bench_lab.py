"""The lab's own costs, measured on real runs in the same session:

1. time from starting `migprof lab` to the `migrate` command, against the bare floor of
   starting the two QEMUs until their QMP sockets answer (same binary, same guest);
2. the profiler's CPU while it follows a migration (`migprof demo --no-tui`: QMP polled at
   10 Hz on both sides, sock_diag at 10 Hz, both trace logs tailed and parsed, the line view),
   against the source QEMU's CPU over the same window. Goal: under 5 % of one core.
   ``--baseline DIR`` measures an older copy of the package too, interleaved, and prints
   the ratio; the last row adds ``--record`` (a recording of every event).
"""

from __future__ import annotations

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

from profiler.lab import qemu as lq  # noqa: E402
from profiler.lab.guest_build import build_guest  # noqa: E402

MIGPROF = str(ROOT / ".venv/bin/migprof")
TICK = os.sysconf("SC_CLK_TCK")
REPS = 3


def cpu_s(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds (None once it is gone)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(f[11]) + int(f[12])) / TICK


def events(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "events.jsonl").read_text().splitlines() if ln]


def bare_qemu_start(tmp: Path) -> float:
    """Floor: two QEMUs (source booting the guest, destination -incoming defer) up to QMP."""
    binary = lq.find_qemu("7.2")
    kernel = build_guest()
    t0 = time.monotonic()
    procs = []
    for side in ("source", "destination"):
        spec = lq.VmSpec(
            side=side,
            name=f"migprof-lab-bench-{side[:3]}",
            kernel=kernel,
            append="dirty_mb=32 rate_mbps=50",
            run_dir=tmp / "bare",
            incoming=side == "destination",
        )
        procs.append(lq.QemuProcess(binary, spec).start())
    try:
        for p in procs:
            p.wait_socket()
        return time.monotonic() - t0
    finally:
        for p in procs:
            p.stop()


def lab_start(tmp: Path, i: int, accel: str) -> float:
    out = tmp / f"start-{accel}-{i}"
    t0 = time.time_ns()
    subprocess.run(
        [MIGPROF, "lab", "--scenario", "converges", "--accel", accel, "--out", str(out)],
        check=True,
        capture_output=True,
    )
    mark = next(
        e for e in events(out) if e.get("event") == "lab_mark" and e.get("state") == "migrate"
    )
    return (mark["t_ns"] - t0) / 1e9


def follow_cpu(
    tmp: Path,
    cmd: str,
    timeout_s: float = 6.0,
    skip_s: float = 0.5,
    i: int = 0,
    code: str | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[float, float, float]:
    """(profiler CPU share, source QEMU CPU share, window s) while a migration runs,
    from ``skip_s`` after `migrate` to the cancel at ``timeout_s``. ``code``: run the
    migprof package found in that directory instead (a copy of an older tree)."""
    out = tmp / f"cpu-{cmd}-{timeout_s:g}-{i}-{'base' if code else 'now'}{'-x' if extra else ''}"
    env = dict(os.environ, PYTHONPATH=code) if code else None
    p = subprocess.Popen(
        [
            MIGPROF,
            cmd,
            *(["--no-tui"] if cmd == "demo" else []),
            "--scenario",
            "never-converges",
            "--timeout",
            str(timeout_s),
            "--accel",
            "tcg",
            "--out",
            str(out),
            *(a.replace("{out}", str(out)) for a in extra),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    samples = []  # (epoch ns, migprof cpu s, source qemu cpu s)
    qemu_pid = None
    while p.poll() is None:
        if qemu_pid is None:
            tag = lq.owner_tag(p.pid)
            for d in Path("/proc").iterdir():
                if d.name.isdigit():
                    try:
                        argv = (d / "cmdline").read_bytes()
                    except OSError:
                        continue
                    if f"{lq.NAME_PREFIX}{tag}-sou".encode() in argv:
                        qemu_pid = int(d.name)
        a, b = cpu_s(p.pid), cpu_s(qemu_pid) if qemu_pid else None
        if a is not None:
            samples.append((time.time_ns(), a, b))
        time.sleep(0.1)
    err = p.stderr.read().decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"bench_lab: migprof {cmd} failed ({p.returncode}): {err.strip()[-500:]}")
    ev = events(out)
    t_start = next(e["t_ns"] for e in ev if e.get("state") == "migrate")
    t_end = max(
        e["t_ns"] for e in ev if e.get("event") == "qmp_migration" and e.get("side") == "source"
    )
    # skip the first half second (sock_diag and tails attach) and stop at the cancel
    win = [s for s in samples if t_start + int(skip_s * 1e9) <= s[0] <= t_end]
    if len(win) < 2 or win[0][2] is None or win[-1][2] is None:
        raise SystemExit(
            f"bench_lab: too few samples in the migration window ({len(win)} of "
            f"{len(samples)}; qemu pid {qemu_pid})"
        )
    dt = (win[-1][0] - win[0][0]) / 1e9
    return (win[-1][1] - win[0][1]) / dt, (win[-1][2] - win[0][2]) / dt, dt


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-only", action="store_true", help="skip the start-time part")
    ap.add_argument("--reps", type=int, default=1, help="runs per CPU measurement (median)")
    ap.add_argument(
        "--baseline",
        metavar="DIR",
        help="also measure the migprof package in DIR (e.g. a copy of the tree before a "
        "change: cp -r profiler tui DIR/), interleaved with this one, and print the ratio",
    )
    ap.add_argument(
        "--rows", default="1,2,3,4", help="CPU rows to run (1 lab, 2-3 demo, 4 demo --record)"
    )
    args = ap.parse_args(argv)
    rows = {int(x) for x in args.rows.split(",")}
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as d:
        tmp = Path(d)
        if not args.cpu_only:
            _start_times(tmp)
        record = ("--record", "{out}.parquet")
        for row, (cmd, timeout_s, skip_s, extra, what) in enumerate(
            (
                ("lab", 6.0, 0.5, (), "QMP 10 Hz x2, sock_diag 10 Hz, events.jsonl"),
                ("demo", 6.0, 0.5, (), "+ both trace logs tailed and parsed, line view; whole run"),
                ("demo", 12.0, 6.0, (), "steady state: after the log parser's first-use JIT"),
                ("demo", 6.0, 0.5, record, "demo --record FILE: + every event to a recording"),
            ),
            1,
        ):
            if row not in rows:
                continue
            runs, base = [], []
            for i in range(args.reps):  # interleaved: both see the same host load
                if args.baseline and not extra:  # the baseline has no --record
                    base.append(follow_cpu(tmp, cmd, timeout_s, skip_s, i, args.baseline))
                runs.append(follow_cpu(tmp, cmd, timeout_s, skip_s, i, extra=extra))
            prof = _report(cmd, what, runs)
            if base:
                old = _report(cmd, what + "; BASELINE " + args.baseline, base)
                print(f"cpu: migprof {cmd:<5} now / baseline = {prof / old:.2f}", flush=True)
    return 0


def _report(cmd: str, what: str, runs: list[tuple[float, float, float]]) -> float:
    prof = statistics.median(r[0] for r in runs)
    qemu = statistics.median(r[1] for r in runs)
    dt = statistics.median(r[2] for r in runs)
    spread = " ".join(f"{r[0] * 100:.1f}" for r in runs)
    print(
        f"cpu: migprof {cmd:<5} {prof * 100:5.1f} % of a core over {dt:4.1f} s "
        f"(source QEMU {qemu * 100:5.1f} %, ratio {prof / qemu:.3f}); goal < 5 %: "
        f"{'met' if prof < 0.05 else 'NOT met'}  [{what}; runs: {spread}]",
        flush=True,
    )
    return prof


def _start_times(tmp: Path) -> None:
    bare_qemu_start(tmp)  # warm the page cache and the guest build
    floor = statistics.median(bare_qemu_start(tmp) for _ in range(REPS))
    tcg = statistics.median(lab_start(tmp, i, "tcg") for i in range(REPS))
    auto = statistics.median(lab_start(tmp, i, "auto") for i in range(REPS))
    print(f"start: two bare QEMUs to QMP ready   {floor * 1000:7.0f} ms (baseline)")
    print(
        f"start: migprof lab to migrate (tcg)  {tcg * 1000:7.0f} ms  x{tcg / floor:.1f} "
        "(includes netns set-up and the guest's warm-up of its working set)"
    )
    print(
        f"start: migprof lab to migrate (auto) {auto * 1000:7.0f} ms  x{auto / floor:.1f} "
        "(adds the KVM probe)"
    )


if __name__ == "__main__":
    sys.exit(main())
