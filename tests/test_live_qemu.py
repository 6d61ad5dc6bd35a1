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
    # the recording is complete and agrees with the test's own query-migrate
    df, meta, warnings = read_recording(rec)
    assert not warnings
    # the line view: each query-migrate status once, as it changed, ending where QEMU did;
    # the trace's state changes, as recorded; then the summary with the report
    view = out.splitlines()
    polled = [x.split()[-1] for x in view if " qmp query-migrate " in x]
    assert polled[-1] == final["status"] and len(polled) == len(set(polled))
    traced = [x.split()[-1] for x in view if " migrate_set_state " in x]
    rec_states = df.loc[(df["event"] == "migrate_set_state") & (df["origin"] == "qemu-log"), "state"]
    assert traced == rec_states.astype(str).tolist()
    assert "no VFIO data-fd traffic seen" in view  # a QEMU without VFIO devices
    assert f"dirty syncs {final['ram']['dirty-sync-count']}" in " ".join(out.split())
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
    assert err.count(f"QEMU pid {pair['src'].pid} exited") == 1, err  # said once
    assert "Traceback" not in err


def test_live_trace_log_gone_at_attach(tmp_path):
    """QEMU's -D log removed before live attaches (rotated away without copytruncate): live
    attaches all the same and waits for the name; once QEMU logs to it again (HMP
    logfile), the new file is read from its start. QEMU exiting ends live (exit 0, said
    once, no traceback), and the lines QEMU wrote before it exited are in the recording."""
    log, rec = tmp_path / "q.log", tmp_path / "q.parquet"
    q = _qemu(tmp_path, "logq", "-D", str(log), "-msg", "timestamp=on")
    try:
        mon = Qmp(tmp_path / "logq.test.qmp")
        log.unlink(missing_ok=True)
        live, banner = _start_live(q.pid, "--no-bpf", "--record", str(rec))
        assert f"trace {log}" in "".join(banner)
        # the test's own monitor: a trace event live leaves alone, then the log back
        mon.cmd("trace-event-set-state", name="handle_qmp_command", enable=True)
        mon.cmd("human-monitor-command", **{"command-line": f"logfile {log}"})
        for _ in range(3):
            mon.cmd("query-status")
        deadline = time.monotonic() + 30
        while "query-status" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "QEMU wrote no trace line"
            time.sleep(0.05)
        mon.close()
        q.terminate()
        q.wait(10)
        out, err = live.communicate(timeout=60)
    finally:
        if q.poll() is None:
            q.kill()
            q.wait()
    assert live.returncode == 0, err
    assert "Traceback" not in err
    assert err.count(f"QEMU pid {q.pid} exited") == 1, err
    from profiler.store import read_recording

    df, _meta, _warnings = read_recording(rec)
    cmds = df[(df["event"] == "handle_qmp_command") & (df["origin"] == "qemu-log")]
    assert (cmds["detail"].astype(str).str.contains("query-status")).sum() == 3, cmds["detail"].tolist()


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


# ---------------------------------------------------------------- a monitor someone else holds


class _Lines:
    """Collects a pipe's lines in a thread; ``wait`` blocks until one matches."""

    def __init__(self, pipe):
        import threading

        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._t.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            with self._cv:
                self.lines.append(line)
                self._cv.notify_all()
        with self._cv:
            self.lines.append(None)  # end of the stream
            self._cv.notify_all()

    def wait(self, pred, timeout: float = 120) -> str:
        with self._cv:
            ok = self._cv.wait_for(lambda: any(x is None or pred(x) for x in self.lines), timeout)
            hit = next((x for x in self.lines if x is not None and pred(x)), None)
        assert ok and hit is not None, "".join(x for x in self.lines if x)
        return hit

    def text(self) -> str:
        self._t.join(30)
        return "".join(x for x in self.lines if x)


def test_live_on_a_held_monitor(tmp_path):
    """Issue 11, part 0: QEMU's only QMP socket is held by the client driving its migration.

    migprof says so once, naming the holder, goes on with BPF and QEMU's -D trace log (from
    its end: never a line twice), records the migration from the log, and picks QMP up once
    the client lets go."""
    from qemu.qmp.legacy import QEMUMonitorProtocol

    from profiler.store import read_recording

    log = tmp_path / "src.log"
    rec = tmp_path / "held.parquet"
    mig = tmp_path / "mig.sock"
    dst = _qemu(tmp_path, "dst", "-incoming", f"unix:{mig}")
    src = subprocess.Popen(
        [QEMU, "-machine", "q35", "-accel", "kvm", "-accel", "tcg", "-m", "64", "-display", "none",
         "-nodefaults", "-name", "migprof-test-held", "-msg", "timestamp=on", "-D", str(log),
         "-qmp", f"unix:{tmp_path / 'src.qmp'},server=on,wait=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    live = None
    try:
        Qmp(tmp_path / "dst.test.qmp").close()  # the destination is up
        deadline = time.monotonic() + 30
        while not (tmp_path / "src.qmp").exists():
            assert time.monotonic() < deadline and src.poll() is None
            time.sleep(0.05)
        holder = QEMUMonitorProtocol(str(tmp_path / "src.qmp"))
        holder.connect()
        # the driving script traces the migration into the -D log, and its own commands
        for name in ("migrate_set_state", "migration_bitmap_sync_*", "savevm_state_*",
                     "vmstate_downtime_*", "qmp_enter_query_name"):
            holder.cmd("trace-event-set-state", name=name, enable=True)
        for _ in range(3):
            holder.cmd("query-name")  # lines logged before migprof attaches
        before = log.read_text().count("\n")
        assert before >= 3
        live = subprocess.Popen(
            [*MIGPROF, "live", "-p", str(src.pid), "--no-tui", "-d", "300", "--record", str(rec)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = _Lines(live.stdout), _Lines(live.stderr)
        err.wait(lambda x: "Hit Ctrl-C to end." in x)
        at_banner = log.read_text().count("\n")
        holder.cmd("query-name")
        holder.cmd("migrate", uri=f"unix:{mig}")
        while (final := holder.cmd("query-migrate"))["status"] not in ("completed", "failed"):
            time.sleep(0.1)
        assert final["status"] == "completed"
        # the migration's last trace lines reach the line view from the log ...
        out.wait(lambda x: "migrate_set_state" in x and x.split()[-1] == "completed")
        # ... and once the client lets go, QMP is picked up: its rows appear
        holder.close()
        out.wait(lambda x: "qmp query-migrate" in x and x.split()[-1] == "completed")
        live.send_signal(signal.SIGINT)
        assert live.wait(60) == 0, err.text()
        stderr = err.text()
        held = [x for x in stderr.splitlines() if "is held by" in x]
        assert len(held) == 1 and f"pid {os.getpid()} (" in held[0], stderr
        assert "qemu.qmp" not in stderr and "Traceback" not in stderr, stderr
        assert "is free now" in stderr
        # what migprof switched on once it had QMP is off again; the client's own stays on
        after = QEMUMonitorProtocol(str(tmp_path / "src.qmp"))
        after.connect()
        on = {e["name"]: e["state"] for e in after.cmd("trace-event-get-state", name="*")}
        after.close()
        assert on["migrate_set_state"] == "enabled" and on["migrate_pending"] == "disabled"
    finally:
        if live is not None and live.poll() is None:
            live.kill()
        for p in (src, dst):
            p.kill()
            p.wait()
    df, meta, warnings = read_recording(rec)
    assert not warnings
    # the migration, from the trace log: every line once, with its true number, none from
    # before migprof attached and none skipped after
    tr = df[df["origin"] == "qemu-log"]
    lines = log.read_text().splitlines()
    nums = tr["line"].astype(int).tolist()
    assert len(set(nums)) == len(nums)
    assert min(nums) > before and min(nums) <= at_banner + 1
    assert sorted(nums) == list(range(min(nums), max(nums) + 1))
    assert all(lines[n - 1] == raw for n, raw in zip(nums, tr["raw"], strict=True))
    states = tr.loc[tr["event"] == "migrate_set_state", "state"].tolist()
    assert states[0] == "setup" and states[-1] == "completed" and "active" in states
    # QMP: held first (by us), then connected, then rows that agree with the client's view
    conn = df[df["event"] == "qmp_event"]
    assert conn["state"].tolist()[:2] == ["qmp-held", "qmp-connected"]
    assert f"pid {os.getpid()} (" in json.loads(conn["detail"].iloc[0])["held_by"]
    q = df[df["event"] == "qmp_query_migrate"]
    assert len(q) and (q["state"] == "completed").all()
    assert int(q["bytes"].iloc[-1]) == final["ram"]["transferred"]
    assert meta["attach"] == "tracepoint" and meta["health"]["qmp"]["source_polls"] > 0
    assert meta["health"]["trace-control"]["enabled"] > 0  # switched on after the pick-up


def test_second_ctrl_c_during_the_flush_is_ignored(pair):
    """Ctrl-C: "Detaching...", then the flush; more Ctrl-C meanwhile change nothing: exit 0,
    the summary printed, the recording whole, QEMU's trace events put back."""
    from profiler.store import read_recording

    rec = pair["tmp"] / "flush.parquet"
    watched = ["migrate_set_state", "savevm_state_setup"]
    before = _trace_states(pair["qs"], watched)
    # the log in tmp_path: this QEMU's stderr is a file, so a temporary log would stay
    live, _ = _start_live(pair["src"].pid, "--record", str(rec),
                          "--trace-log", str(pair["tmp"] / "trace.log"))
    err = _Lines(live.stderr)
    live.send_signal(signal.SIGINT)
    err.wait(lambda x: "Detaching..." in x)
    extra = 0
    while live.poll() is None:  # keep interrupting until it has flushed and exited
        live.send_signal(signal.SIGINT)
        extra += 1
        time.sleep(0.01)
    out = live.stdout.read()
    stderr = err.text()
    assert live.returncode == 0, stderr
    assert extra >= 1  # at least one more Ctrl-C reached it before it was done
    assert stderr.count("Detaching...") == 1
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "no VFIO data-fd traffic seen" in out and out.lstrip().startswith("TIME(s)")
    df, meta, warnings = read_recording(rec)
    assert not warnings and meta["health"]["bpf"]["programs"]
    assert _trace_states(pair["qs"], watched) == before


def test_default_log_redirected_and_restored(tmp_path):
    """QEMU logging to stderr (no -D, stderr a pipe) and without timestamps: live points its
    log at a temporary file (HMP logfile), reads it, stamps the untimed lines as they
    arrive, and at exit points the log back at stderr and removes the file."""
    from profiler.store import read_recording

    mig = tmp_path / "mig.sock"
    dst = _qemu(tmp_path, "dst", "-incoming", f"unix:{mig}")
    src = subprocess.Popen(
        [QEMU, "-machine", "q35", "-accel", "kvm", "-accel", "tcg", "-m", "64", "-display", "none",
         "-nodefaults", "-name", "migprof-test-stderr",
         "-qmp", f"unix:{tmp_path / 'src.qmp'},server=on,wait=off",
         "-qmp", f"unix:{tmp_path / 'src.test.qmp'},server=on,wait=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    qemu_err = _Lines(src.stderr)
    rec = tmp_path / "redirect.parquet"
    live = None
    try:
        Qmp(tmp_path / "dst.test.qmp").close()
        qs = Qmp(tmp_path / "src.test.qmp")
        qs.cmd("trace-event-set-state", name="qmp_enter_query_name", enable=True)
        qs.cmd("query-name")
        qemu_err.wait(lambda x: "qmp_enter_query_name" in x)  # QEMU logs to its stderr
        t0 = time.time_ns()
        live, _ = _start_live(src.pid, "--record", str(rec))
        qs.cmd("query-name")  # into migprof's file now
        qs.cmd("migrate", uri=f"unix:{mig}")
        final = _wait_completed(qs)
        assert final["status"] == "completed"
        out = _Lines(live.stdout)
        out.wait(lambda x: "migrate_set_state" in x and x.split()[-1] == "completed")
        live.send_signal(signal.SIGINT)
        assert live.wait(60) == 0
        t1 = time.time_ns()
        # the log is back on QEMU's stderr
        qs.cmd("query-name")
        deadline = time.monotonic() + 30
        while sum("qmp_enter_query_name" in x for x in qemu_err.lines if x) < 2:
            assert time.monotonic() < deadline, "QEMU's log did not come back to stderr"
            time.sleep(0.05)
        qs.close()
    finally:
        if live is not None and live.poll() is None:
            live.kill()
        for p in (src, dst):
            p.kill()
            p.wait()
    assert sum("qmp_enter_query_name" in x for x in qemu_err.text().splitlines()) == 2
    df, meta, warnings = read_recording(rec)
    assert not warnings
    temp = meta["live"]["trace_log"]
    assert Path(temp).name.startswith(f"migprof-live-{src.pid}-") and not Path(temp).exists()
    tr = df[df["origin"] == "qemu-log"]
    assert (tr["file"] == temp).all() and (tr["event"] == "qmp_enter_query_name").sum() == 1
    states = tr.loc[tr["event"] == "migrate_set_state", "state"].tolist()
    assert states[0] == "setup" and states[-1] == "completed"
    # no timestamps in these lines: each got the time it was read, and says so
    assert tr["clock_ns"].isna().all() and (tr["clock"] == "none").all()
    assert tr["t_ns"].between(t0, t1).all()
    assert meta["health"]["qemu-trace"]["stamped_on_arrival"] == len(tr)
