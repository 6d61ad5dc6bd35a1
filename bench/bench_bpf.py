"""Cost of the BPF collector on a syscall-heavy target, against the floor of the mechanism.

The target does non-VFIO ioctls and 1-byte reads in a loop (well over a million syscalls a
second bare). It is timed, in the same run: bare; under an empty program on the same seven
syscall tracepoints (the floor: the price of the tracepoints themselves); under
``migprof live --pid`` (tracepoint path, no QMP/trace); under the one program set ``top``
loads for every QEMU (targets in a map: ten real idle QEMU 7.2 processes plus the target
itself, and the ten QEMUs with the target left out, which is what every other process on
the host pays); under an equivalent bpftrace script; under strace. Goal: migprof within
1.10x the floor in both forms, far below strace. Prints ns per syscall and the ratios.
Needs root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
OPS = 2_000_000  # syscalls per timed run (half ioctl, half read)
STRACE_OPS = 100_000  # strace is ~100x slower: fewer, reported per syscall
ROUNDS = 5  # best of, modes interleaved (the box is shared: noise only ever adds time)

TARGET_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
/* prints "ready PID", waits for a line, runs N ioctl+read pairs, prints elapsed ns */
int main(int argc, char **argv) {
    long n = atol(argv[1]) / 2;
    int fd = open("/dev/zero", O_RDONLY);
    char c, line[8];
    printf("ready %d\n", getpid()); fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        int v;
        ioctl(fd, 0x541B /* FIONREAD: ENOTTY on /dev/zero */, &v);
        if (read(fd, &c, 1) != 1) return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%lld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
    return 0;
}
"""

EMPTY_C = r"""
TRACEPOINT_PROBE(syscalls, sys_enter_ioctl) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_ioctl) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_read) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_write) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_close) { return 0; }
"""

# the same filters as vfio_syscalls.bpf.c: pid, then command or fd map
BPFTRACE = r"""
tracepoint:syscalls:sys_enter_ioctl /pid == PID && (args->cmd == 0x3b75 || args->cmd == 0x3b79)/
{ @start[tid] = nsecs; @fd[tid] = args->fd; }
tracepoint:syscalls:sys_exit_ioctl /pid == PID && @start[tid]/
{ @ioctl_lat = hist(nsecs - @start[tid]); delete(@start[tid]); delete(@fd[tid]); }
tracepoint:syscalls:sys_enter_read /pid == PID && @data[args->fd]/ { @rstart[tid] = nsecs; }
tracepoint:syscalls:sys_exit_read /pid == PID && @rstart[tid]/
{ @read_bytes = sum(args->ret); delete(@rstart[tid]); }
tracepoint:syscalls:sys_enter_write /pid == PID && @data[args->fd]/ { @wstart[tid] = nsecs; }
tracepoint:syscalls:sys_exit_write /pid == PID && @wstart[tid]/
{ @write_bytes = sum(args->ret); delete(@wstart[tid]); }
tracepoint:syscalls:sys_enter_close /pid == PID/ { delete(@data[args->fd]); }
BEGIN { @data[-1] = 1; printf("attached\n"); }
"""


def prog_stats(pid: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the BPF programs whose fds ``pid`` holds."""
    total_t = total_n = 0
    fd_dir = Path(f"/proc/{pid}/fdinfo")
    for fd in os.listdir(fd_dir):
        try:
            info = (fd_dir / fd).read_text()
        except OSError:
            continue
        if "prog_type:" not in info:
            continue
        kv = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        total_t += int(kv.get("run_time_ns", "0").strip() or 0)
        total_n += int(kv.get("run_cnt", "0").strip() or 0)
    return total_t, total_n


class Target:
    def __init__(self, exe: Path, ops: int):
        self.p = subprocess.Popen([str(exe), str(ops)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line.startswith("ready"), line
        self.pid = self.p.pid

    def run(self) -> int:
        self.p.stdin.write("go\n")
        self.p.stdin.flush()
        ns = int(self.p.stdout.readline())
        self.p.wait(60)
        return ns


def _wait_stderr(p: subprocess.Popen, needle: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    buf = ""
    while time.monotonic() < deadline:
        line = p.stderr.readline() if p.stderr else ""
        if not line:
            raise RuntimeError(f"tool ended before attaching: {buf}")
        buf += line
        if needle in line:
            return
    raise RuntimeError(f"tool did not attach: {buf}")


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def bare(exe: Path, ops: int) -> float:
    t = Target(exe, ops)
    return t.run() / ops


COST: dict[str, list[float]] = {}  # mode -> BPF run time per program invocation (ns)


def _cost(mode: str, pid: int, before: tuple[int, int]) -> None:
    t, n = prog_stats(pid)
    if n > before[1]:
        COST.setdefault(mode, []).append((t - before[0]) / (n - before[1]))


def floor(exe: Path, ops: int) -> float:
    from bcc import BPF

    b = BPF(text=EMPTY_C.encode())
    try:
        t = Target(exe, ops)
        before = prog_stats(os.getpid())
        ns = t.run() / ops
        _cost("floor (empty tracepoints)", os.getpid(), before)
        return ns
    finally:
        b.cleanup()


def migprof(exe: Path, ops: int) -> float:
    t = Target(exe, ops)
    p = subprocess.Popen([sys.executable, "-m", "profiler.cli", "live", "-p", str(t.pid), "--any-process",
                          "--no-tui", "--no-trace"], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        _wait_stderr(p, "Hit Ctrl-C to end.")
        before = prog_stats(p.pid)
        ns = t.run() / ops
        _cost("migprof live", p.pid, before)
        return ns
    finally:
        _stop(p)


QEMUS: list[int] = []  # idle QEMUs traced beside the target (started in _main)


def _qemus(n: int) -> list[subprocess.Popen]:
    """``n`` real QEMU 7.2 processes idling (-machine none -S), up once their fds exist."""
    procs = [subprocess.Popen(["/usr/bin/qemu-system-x86_64", "-machine", "none", "-nodefaults",
                               "-display", "none", "-S", "-name", f"migprof-bench-idle-{i}"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for i in range(n)]
    for p in procs:
        while p.poll() is None and len(os.listdir(f"/proc/{p.pid}/fd")) < 4:
            time.sleep(0.02)
    return procs


def _map(exe: Path, ops: int, mode: str, with_target: bool) -> float:
    """The dynamic program set (as ``top`` loads it): the QEMUs and maybe the target in
    its targets map, added after attaching; a thread drains the buffer meanwhile."""
    import threading

    from profiler.sources.bpf import BpfSource

    t = Target(exe, ops)
    stop = threading.Event()
    with BpfSource([], dynamic=True) as src:
        for pid in QEMUS + ([t.pid] if with_target else []):
            src.add_target(pid, "source")
        drain = threading.Thread(target=lambda: [None for _ in src.batches(stop)])
        drain.start()
        try:
            before = prog_stats(os.getpid())
            ns = t.run() / ops
            _cost(mode, os.getpid(), before)
        finally:
            stop.set()
            drain.join(30)
    return ns


def map_traced(exe: Path, ops: int) -> float:
    return _map(exe, ops, MAP_TRACED, True)


def map_other(exe: Path, ops: int) -> float:
    return _map(exe, ops, MAP_OTHER, False)


MAP_TRACED = "map: 10 QEMUs + target"
MAP_OTHER = "map: 10 QEMUs, not target"


def bpftrace(exe: Path, ops: int) -> float:
    t = Target(exe, ops)
    with tempfile.NamedTemporaryFile("w", suffix=".bt", delete=False) as f:
        f.write(BPFTRACE.replace("PID", str(t.pid)))
    p = subprocess.Popen(["bpftrace", f.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "attached" not in (p.stdout.readline() or "attached"):
            pass
        return t.run() / ops
    finally:
        _stop(p)
        os.unlink(f.name)


def strace(exe: Path, ops: int) -> float:
    t = Target(exe, ops)
    p = subprocess.Popen(["strace", "-f", "-qq", "-p", str(t.pid), "-o", "/dev/null",
                          "-e", "trace=ioctl,read,write,close"], stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # strace attaches with ptrace; it prints nothing by itself under -qq
    try:
        return t.run() / ops
    finally:
        _stop(p)


def main() -> int:
    if os.geteuid() != 0:
        print("bench_bpf: needs root (BPF, strace -p)", file=sys.stderr)
        return 2
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old_stats = stats.read_text().strip()
    stats.write_text("1")  # program run time per call; put back at the end
    try:
        return _main()
    finally:
        stats.write_text(old_stats)


def _main() -> int:
    with tempfile.TemporaryDirectory() as d:
        src, exe = Path(d) / "target.c", Path(d) / "target"
        src.write_text(TARGET_C)
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
        modes = [("bare", bare, OPS), ("floor (empty tracepoints)", floor, OPS),
                 ("migprof live", migprof, OPS), (MAP_TRACED, map_traced, OPS),
                 (MAP_OTHER, map_other, OPS), ("bpftrace", bpftrace, OPS)]
        runs: dict[str, list[float]] = {name: [] for name, _, _ in modes}
        qemus = _qemus(10)
        QEMUS[:] = [p.pid for p in qemus]
        try:
            for _ in range(ROUNDS):
                for name, fn, ops in modes:
                    runs[name].append(fn(exe, ops))
        finally:
            for p in qemus:
                p.kill()
                p.wait()
        res = {name: min(v) for name, v in runs.items()}
        res["strace"] = strace(exe, STRACE_OPS)
    base, fl = res["bare"], res["floor (empty tracepoints)"]
    print(f"target: ioctl(FIONREAD)+read(1 byte) on /dev/zero, {OPS} syscalls, best of {ROUNDS}")
    print(f"{'MODE':<28} {'NS/SYSCALL':>10} {'SYSCALLS/S':>12} {'xBARE':>7} {'xFLOOR':>7}")
    for name, ns in res.items():
        print(f"{name:<28} {ns:>10.1f} {1e9 / ns:>12,.0f} {ns / base:>7.2f} {ns / fl:>7.2f}")
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        stats_on = f.read().strip() == "1"
    if COST:
        print("BPF program time per invocation (bpf_stats; every process's syscalls count):")
        for name, v in COST.items():
            print(f"  {name:<26} {min(v):6.1f} ns")
    elif not stats_on:
        print("(sysctl kernel.bpf_stats_enabled=1 adds the in-kernel program time per call)")
    ratio = res["migprof live"] / fl
    print(f"migprof / floor = {ratio:.3f} wall clock (goal <= 1.10); strace / migprof = "
          f"{res['strace'] / res['migprof live']:.1f}")
    for mk in (MAP_TRACED, MAP_OTHER):
        print(f"{mk} / floor = {res[mk] / fl:.3f} wall clock (goal <= 1.10)")
    fk = "floor (empty tracepoints)"
    for mk in ("migprof live", MAP_TRACED, MAP_OTHER):
        if fk in COST and mk in COST:
            # each syscall runs one enter and one exit program: the extra over the floor is
            # twice the per-invocation difference; wall-clock ratios swing with the box's load
            extra = 2 * (min(COST[mk]) - min(COST[fk]))
            print(f"{mk} program cost over the floor: {extra:+.1f} ns per syscall = "
                  f"{(fl + extra) / fl:.3f} x floor at this floor ({fl:.0f} ns/syscall)")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
