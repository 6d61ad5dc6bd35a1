"""`migprof top` and `migprof live -p A -p B` on real QEMU 7.2 processes and a real lab migration.

Other jobs may run QEMUs on this machine: top is told (``-n``) to keep to the QEMUs each
test starts, whose names are known before they start. Every wait is on a state (a row
appearing, a status), bounded only so a broken run fails instead of hanging.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
MIGPROF = [sys.executable, "-m", "profiler.cli"]
QEMU = "/usr/bin/qemu-system-x86_64"
TAG = f"migprof-test-top-{os.getpid()}"


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


class Top:
    """`migprof top --json` in the background; its lines are read as they come."""

    def __init__(self, *args: str):
        self.p = subprocess.Popen([*MIGPROF, "top", "--json", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        self.seen = 0  # lines looked at by until()
        self.err = ""
        self._t = threading.Thread(target=self._read)
        self._t.start()
        self._e = threading.Thread(target=self._read_err)
        self._e.start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.append(json.loads(line))

    def _read_err(self) -> None:
        for line in self.p.stderr:  # line by line: a test may wait for one (metrics on URL)
            self.err += line

    def until(self, cond, what: str, timeout: float = 90.0) -> dict:
        """The first line after the last one looked at for which ``cond(vms by pid)`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while self.seen < len(self.lines):
                line = self.lines[self.seen]
                self.seen += 1
                if cond({v["pid"]: v for v in line["vms"]}):
                    return line
            if self.p.poll() is not None and self.seen == len(self.lines):
                break
            time.sleep(0.05)
        raise AssertionError(f"never: {what}; last line {self.lines[-1:]}; stderr {self.err[-2000:]}")

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        rc = self.p.wait(90)
        self._t.join(10)
        self._e.join(10)
        return rc


def _prog_ids_of(pid: int) -> set[int]:
    ids = set()
    d = Path(f"/proc/{pid}/fdinfo")
    for fd in os.listdir(d):
        try:
            text = (d / fd).read_text()
        except OSError:
            continue
        ids |= {int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("prog_id:")}
    return ids


@pytest.fixture
def qemus(tmp_path):
    procs: list[subprocess.Popen] = []

    def start(name: str, *extra: str) -> subprocess.Popen:
        p = subprocess.Popen([QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S",
                              "-name", f"{TAG}-{name}", *extra], cwd=tmp_path,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_top_finds_qemus_as_they_come_and_go(qemus, tmp_path):
    """No QEMU at first; two start (one with QMP and a -D log), one ends; Ctrl-C ends top
    with a final line and nothing of its BPF set left in the kernel."""
    from profiler.sources.bpf import loaded_prog_ids
    from profiler.sources.qmp_probe import probe

    top = Top("-n", TAG, "0.3")
    try:
        top.until(lambda vms: True, "a first line")
        mine = _prog_ids_of(top.p.pid)
        assert len(mine) == 7  # one set for every QEMU, loaded before any is there
        a = qemus("a", "-qmp", "unix:a.qmp,server=on,wait=off", "-D", "a.log")
        b = qemus("b", "-incoming", "defer")
        line = top.until(lambda vms: a.pid in vms and b.pid in vms, "both rows")
        vms = {v["pid"]: v for v in line["vms"]}
        assert (vms[a.pid]["label"], vms[a.pid]["side"]) == (f"{TAG}-a", "source")
        assert (vms[b.pid]["label"], vms[b.pid]["side"]) == (f"{TAG}-b", "destination")
        assert vms[a.pid]["status"] == "none" and vms[a.pid]["verdict"] == "idle"
        # what feeds each: the shared BPF set, and brief query-migrate probes where the QEMU
        # has a monitor; an idle QEMU's monitor stays free for its operator
        top.until(lambda vms: {"bpf", "qmp-probe"} <= set(vms[a.pid]["sources"]), "a's monitor probed")
        assert "qmp-probe" not in {s for v in top.lines[-1]["vms"] if v["pid"] == b.pid for s in v["sources"]}
        for _ in range(5):  # another client, while top keeps probing, gets its answers
            answer = probe(str(tmp_path / "a.qmp"), timeout=5)
            assert answer.reply is not None and answer.status == "none", answer.problem
        assert _prog_ids_of(top.p.pid) == mine  # no new program for a new QEMU
        b.kill()
        b.wait()
        top.until(lambda vms: vms.get(b.pid, {}).get("status") == "gone", "b gone")
    finally:
        rc = top.stop()
    assert rc == 0, top.err
    assert top.lines[-1]["final"] is True
    deadline = time.monotonic() + 10
    while mine & loaded_prog_ids() and time.monotonic() < deadline:
        time.sleep(0.1)  # programs are freed after an RCU grace period
    assert not (mine & loaded_prog_ids())
    assert "Detaching..." in top.err


def test_top_lines_count_and_banner(qemus):
    """`--no-tui INTERVAL COUNT`: bcc's banner on stderr, COUNT blocks and a final one, exit 0."""
    a = qemus("lines")
    r = subprocess.run([*MIGPROF, "top", "--no-tui", "-n", TAG, "0.2", "3"], cwd=ROOT,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("Tracing every QEMU on this host (BPF tracepoint")
    assert "Hit Ctrl-C to end." in r.stderr
    blocks = r.stdout.strip().split("\n\n")
    assert len(blocks) == 4 and "final: 1 QEMU, 0 migrating" in blocks[-1]
    for b in blocks:
        head, header, *rows = b.splitlines()
        assert header.split()[:3] == ["PID", "VM", "SIDE"] and "PEND(MiB)" in header
        assert [ln.split()[:2] for ln in rows] == [[str(a.pid), f"{TAG}-lines"[:14]]]


def test_top_follows_a_lab_migration_to_the_report(tmp_path):
    """A real lab migration (never converging, cancelled after 8 s) while top runs: the
    source's row goes through active with a growing pass to cancelled, and its final
    figures are those `migprof report` gives for the run."""
    from profiler.cli import main

    out = tmp_path / "run"
    lab = subprocess.Popen(["sh", "-c", f"read go; exec {sys.executable} -m profiler.cli lab "
                            f"-s never-converges --timeout 8 --accel tcg -o {out}"], cwd=ROOT,
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    tag = f"migprof-lab-{_b36(lab.pid)}-"
    top = Top("-n", f"^{tag}", "0.5", "--metrics", "127.0.0.1:0")
    try:
        top.until(lambda vms: True, "a first line")
        lab.stdin.write("go\n")
        lab.stdin.flush()

        def source(vms):
            return next((v for v in vms.values() if v["side"] == "source"), None)

        first = top.until(lambda vms: (s := source(vms)) and s["status"] == "active"
                          and (s["pass_no"] or 0) >= 1, "the source migrating")
        passes = source({v["pid"]: v for v in first["vms"]})["pass_no"]
        # --metrics: a real scrape while it migrates shows the source VM active at its pass
        url = re.search(r"metrics on (\S+)", top.err).group(1)
        src = source({v["pid"]: v for v in first["vms"]})
        with urllib.request.urlopen(url, timeout=10) as r:
            fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        mine = {"vm": src["label"], "pid": str(src["pid"]), "side": "source"}
        states = {s.labels["migprof_migration_status"]: s.value for s in fams["migprof_migration_status"].samples
                  if {k: s.labels.get(k) for k in mine} == mine}
        assert states["active"] == 1 and sum(states.values()) == 1, states
        scraped = [s.value for s in fams["migprof_migration_pass"].samples if s.labels == mine]
        assert scraped and scraped[0] >= passes
        top.until(lambda vms: (s := source(vms)) and s["status"] == "active"
                  and s["pass_no"] > passes, "a later pass")
        top.until(lambda vms: (s := source(vms)) and s["status"] == "cancelled", "cancelled")
        assert lab.wait(120) == 0, lab.stderr.read()
    finally:
        if lab.poll() is None:
            lab.kill()
            lab.wait()
        assert top.stop() == 0, top.err
    row = source({v["pid"]: v for v in top.lines[-1]["vms"]})
    assert top.lines[-1]["final"] and row["verdict"] == "cancelled"
    report = tmp_path / "report.json"
    with open(report, "w") as f:
        old, sys.stdout = sys.stdout, f
        try:
            assert main(["report", str(out), "--json"]) == 0
        finally:
            sys.stdout = old
    mig = json.loads(report.read_text())["migrations"][-1]
    last = mig["checks"][-1]
    assert (row["status"], row["pass_no"]) == (mig["outcome"], mig["dirty_syncs"])
    assert row["total_ms"] == mig["total_ms"] and row["downtime_ms"] == mig["downtime_ms"]
    assert row["pending_bytes"] == last["pending_bytes"]
    assert row["threshold_bytes"] == last["threshold_bytes"]
    assert row["bandwidth_bytes_per_s"] == pytest.approx(last["bandwidth_bytes_per_ms"] * 1000)
    assert row["summary"] == mig["verdict"]


def test_live_takes_several_qemus_and_keeps_them_apart(qemus, tmp_path):
    """`live -p A -p B --record`: one BPF set, each QEMU's QMP and log; lines and summary by
    pid; the recording holds both, told apart by pid; the run ends when both have exited."""
    from profiler.pipeline import load

    a = qemus("la", "-qmp", "unix:la.qmp,server=on,wait=off")
    b = qemus("lb", "-qmp", "unix:lb.qmp,server=on,wait=off", "-incoming", "defer")
    for name in ("la.qmp", "lb.qmp"):
        while not (tmp_path / name).exists():
            time.sleep(0.02)
    rec = tmp_path / "both.parquet"
    live = subprocess.Popen([*MIGPROF, "live", "-p", str(a.pid), "-p", str(b.pid), "--no-tui",
                             "--record", str(rec)], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = live.stderr.readline()
    assert "Hit Ctrl-C to end." in banner and f"pid {a.pid}" in banner and f"pid {b.pid}" in banner
    time.sleep(1.0)  # its monitors answer a few polls
    for p in (a, b):
        p.terminate()
        p.wait()
    out, err = live.communicate(timeout=60)  # ends by itself: both QEMUs have exited
    assert live.returncode == 0, err
    assert out.splitlines()[0].split()[:3] == ["PID", "TIME(s)", "SIDE"]
    assert f"=== QEMU pid {a.pid} ({TAG}-la, source)" in out
    assert f"=== QEMU pid {b.pid} ({TAG}-lb, destination)" in out
    assert f"QEMU pid {a.pid} exited" in err and f"QEMU pid {b.pid} exited" in err
    df = load([str(rec)]).events
    sides = df.groupby(df["pid"].astype("Int64"))["side"].agg(lambda s: set(s.astype(str)))
    assert sides.to_dict() == {a.pid: {"source"}, b.pid: {"destination"}}


def test_live_bad_target_lists(qemus):
    """One line each, exit 2, before anything is attached."""
    a, b = qemus("x"), qemus("y")
    for args, msg in (
            (["-p", str(a.pid), "-p", str(a.pid)], f"QEMU pid {a.pid} is given twice"),
            (["-p", str(a.pid), "-p", str(b.pid), "--trace-log", "x.log"],
             "--trace-log names one QEMU's log: give one QEMU with it"),
            (["-p", str(a.pid), "-p", "1"], "pid 1 is not QEMU"),
            ([], "which QEMU? give -p PID, --qmp SOCKET or --domain NAME")):
        r = subprocess.run([*MIGPROF, "live", *args, "--no-tui", "-d", "1"], cwd=ROOT,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert lines[0].startswith(f"migprof: error: {msg}"), r.stderr
