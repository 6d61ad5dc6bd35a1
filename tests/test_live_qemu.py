"""`migprof live` attached to a real QEMU (7.2, /usr/bin) migrating a tiny guest.

Two QMP monitors per source QEMU: one for migprof, one the test drives. Checks: the QMP
stream arrives and its last query-migrate agrees with the test's own; QEMU's trace events
(switched on by migprof over QMP, log pointed at a file by HMP) arrive; SIGINT mid-run ->
rc 0, a complete recording, no migprof BPF program left in the kernel; trace events put
back; QEMU exiting ends migprof by itself; bad targets give one line and exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
MIGPROF = [sys.executable, "-m", "profiler.cli"]
QEMU = "/usr/bin/qemu-system-x86_64"


class Qmp:
    """A minimal synchronous QMP client for the test's own monitor."""

    def __init__(self, path: Path, timeout: float = 10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(str(path))
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, _cmd: str, **args):
        self.f.write(json.dumps({"execute": _cmd, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise RuntimeError(f"{_cmd}: {msg['error']}")

    def close(self) -> None:
        self.s.close()


def _qemu(tmp: Path, name: str, *extra: str) -> subprocess.Popen:
    args = [QEMU, "-machine", "q35", "-accel", "kvm", "-accel", "tcg", "-m", "64", "-display", "none",
            "-nodefaults", "-name", f"migprof-test-{name}",
            "-qmp", f"unix:{tmp / (name + '.qmp')},server=on,wait=off",
            "-qmp", f"unix:{tmp / (name + '.test.qmp')},server=on,wait=off", *extra]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.err", "w"))


@pytest.fixture
def pair(tmp_path):
    """A running source QEMU and a destination waiting with -incoming."""
    mig = tmp_path / "mig.sock"
    dst = _qemu(tmp_path, "dst", "-incoming", f"unix:{mig}")
    src = _qemu(tmp_path, "src")
    procs = [src, dst]
    try:
        qs = Qmp(tmp_path / "src.test.qmp")
        qd = Qmp(tmp_path / "dst.test.qmp")
        yield {"src": src, "dst": dst, "qs": qs, "qd": qd, "mig": mig, "tmp": tmp_path}
        qs.close()
        qd.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def _start_live(pid: int, *args: str) -> tuple[subprocess.Popen, list[str]]:
    p = subprocess.Popen([*MIGPROF, "live", "-p", str(pid), "--no-tui", *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        banner.append(line)
        if "Hit Ctrl-C to end." in line:
            return p, banner
    p.kill()
    raise AssertionError(f"no banner: {banner} {p.stdout.read()}")


def _wait_completed(q: Qmp, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = q.cmd("query-migrate")
        if r.get("status") in ("completed", "failed", "cancelled"):
            return r
        time.sleep(0.1)
    raise AssertionError(f"migration did not finish: {r}")


def _trace_states(q: Qmp, names: list[str]) -> dict[str, str]:
    return {e["name"]: e["state"] for e in q.cmd("trace-event-get-state", name="*") if e["name"] in names}


def test_live_attach_sigint(pair):
    from profiler.sources.bpf import loaded_prog_ids
    from profiler.store import read_recording

    rec = pair["tmp"] / "live.parquet"
    watched = ["migrate_set_state", "vmstate_downtime_checkpoint", "savevm_state_setup"]
    before = _trace_states(pair["qs"], watched)
    assert set(before.values()) == {"disabled"}
    live, banner = _start_live(pair["src"].pid, "--record", str(rec), "--trace-log", str(pair["tmp"] / "trace.log"))
    assert "BPF tracepoint" in banner[-1], banner
    # migprof switched QEMU's migration trace events on over QMP
    assert set(_trace_states(pair["qs"], watched).values()) == {"enabled"}
    pair["qs"].cmd("migrate", uri=f"unix:{pair['mig']}")
    final = _wait_completed(pair["qs"])
    assert final["status"] == "completed"
    time.sleep(1.0)  # let the last poll and trace lines arrive
    live.send_signal(signal.SIGINT)
    out, err = live.communicate(timeout=60)
    assert live.returncode == 0, err
    assert "Traceback" not in err
    # the line view printed the status change and the trace's state changes
    assert "completed" in out
    # the recording is complete and agrees with the test's own query-migrate
    df, meta, warnings = read_recording(rec)
    assert not warnings
    q = df[df["event"] == "qmp_query_migrate"]
    assert len(q) >= 2
    last = q.iloc[-1]
    assert last["state"] == "completed"
    assert int(last["bytes"]) == final["ram"]["transferred"]
    states = df[(df["event"] == "migrate_set_state") & (df["origin"] == "qemu-log")]
    assert len(states) >= 2, (df["event"].value_counts(), err, meta.get("health"))
    assert (states["t_ns"].dropna() > 0).all()
    # trace events are put back, BPF programs gone
    assert _trace_states(pair["qs"], watched) == before
    progs = meta.get("health", {}).get("bpf", {}).get("programs") or []
    assert len(progs) == 7
    assert not (set(progs) & loaded_prog_ids())
    assert meta.get("attach") == "tracepoint"


def test_live_ends_when_qemu_exits(pair):

    live, _ = _start_live(pair["src"].pid, "--no-trace")
    pair["src"].terminate()
    pair["src"].wait(10)
    out, err = live.communicate(timeout=30)
    assert live.returncode == 0, err
    assert f"QEMU pid {pair['src'].pid} exited" in err
    assert "Traceback" not in err


def test_live_sigterm_and_duration(pair):
    live, _ = _start_live(pair["src"].pid, "--no-trace", "-d", "30")
    time.sleep(0.5)
    live.send_signal(signal.SIGTERM)
    out, err = live.communicate(timeout=30)
    assert live.returncode == 0, err
    assert "TIME(s)" in out
    # -d 1 ends it by itself (QEMU stays up): without -d this would run into the timeout and fail
    r = subprocess.run([*MIGPROF, "live", "-p", str(pair["src"].pid), "--no-tui", "--no-trace", "-d", "1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # `migprof record` is live without the TUI, into a file
    from profiler.store import read_recording

    out = pair["tmp"] / "rec.parquet"
    r = subprocess.run([*MIGPROF, "record", "-p", str(pair["src"].pid), "--no-trace", "-d", "2", "-o", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    df, meta, warnings = read_recording(out)
    assert not warnings and meta["attach"] == "tracepoint"
    assert (df["event"] == "qmp_params").any()


@pytest.mark.parametrize("args,msg", [
    (["-p", "999999999"], "no process 999999999"),
    (["-p", str(os.getpid())], "is not QEMU"),
    (["--qmp", "/nonexistent.qmp"], "no such QMP socket"),
])
def test_bad_targets(args, msg):
    r = subprocess.run([*MIGPROF, "live", "--no-tui", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert msg in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_refusing_qmp_socket(tmp_path):
    """A socket file nobody listens on: one clear line, exit 2."""
    path = tmp_path / "dead.qmp"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # bound, never listening: connect() is refused
    r = subprocess.run([*MIGPROF, "live", "--no-tui", "--qmp", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "refuses connections" in r.stderr and "Traceback" not in r.stderr


def _prog_ids_of(pid: int) -> set[int]:
    """BPF program ids held by a process's fds (fdinfo 'prog_id:')."""
    ids = set()
    d = Path(f"/proc/{pid}/fdinfo")
    for fd in os.listdir(d):
        try:
            text = (d / fd).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


def test_sigkill_leaves_nothing_attached(pair):
    """bcc attaches through fds (perf events, BPF links): a SIGKILLed migprof drops them all."""
    from profiler.sources.bpf import loaded_prog_ids

    live, _ = _start_live(pair["src"].pid, "--no-trace")
    mine = _prog_ids_of(live.pid)
    assert len(mine) == 7 and mine <= loaded_prog_ids()
    live.kill()
    live.wait(10)
    deadline = time.monotonic() + 10
    while mine & loaded_prog_ids() and time.monotonic() < deadline:
        time.sleep(0.1)  # programs are freed after an RCU grace period
    assert not (mine & loaded_prog_ids())
