"""`migprof live --domain` / `record --domain` on real libvirt domains.

Two real libvirt daemons (the lab's, one per network namespace) and a TCG domain running
the lab guest, started without trace events on its command line; migprof runs as a user
runs it (a subprocess, stdin closed) and speaks QMP through libvirt only. Bad input is one
line and exit 2, with nothing left switched on in QEMU.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from profiler.lab import qemu as lq
from profiler.lab.guest_build import build_guest
from profiler.lab.libvirt import Daemon, _short_root, domain_xml
from profiler.lab.net import LabNet
from profiler.store import read_recording

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MIGPROF = ROOT / ".venv/bin/migprof"
WATCHED = "migrate_set_state"  # off unless someone switches it on


class Host:
    """Two daemons and one running domain on the source."""

    def __init__(self, tmp: Path):
        self.tag = lq.owner_tag()
        self.name = f"{lq.NAME_PREFIX}{self.tag}-lv"
        self.net = LabNet(self.tag).__enter__()
        self.root = _short_root(self.tag)
        self.d = {s: Daemon(s, self.root / s, self.net.ns[s], a).start()
                  for s, a in (("source", self.net.src_addr), ("destination", self.net.dst_addr))}
        binary = lq.find_qemu("7.2")
        xml = tmp / "domain.xml"
        xml.write_text(domain_xml(self.name, binary, build_guest(),
                                  "dirty_mb=16 rate_mbps=50 report_ms=500", 64, None))
        self.xml = xml
        self.d["source"].virsh("define", str(xml))
        self.start()

    @property
    def uri(self) -> str:
        return self.d["source"].uri

    def start(self) -> None:
        self.d["source"].virsh("start", self.name)

    def qmp(self, cmd: str, **args) -> dict:
        body = json.dumps({"execute": cmd, **({"arguments": args} if args else {})})
        r = self.d["source"].virsh("qemu-monitor-command", self.name, body)
        return json.loads(r.stdout)["return"]

    def trace_state(self) -> str:
        return self.qmp("trace-event-get-state", name=WATCHED)[0]["state"]

    def close(self) -> None:
        for d in self.d.values():
            d.stop(self.name)
        self.net.close()
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    h = Host(tmp_path_factory.mktemp("lvlive"))
    try:
        yield h
    finally:
        h.close()


def _live(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(MIGPROF), *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


class _Run:
    """migprof in the background; its stderr lines collected as they come."""

    def __init__(self, *args: str):
        self.p = subprocess.Popen([str(MIGPROF), *args], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self._t = threading.Thread(target=lambda: self.err.extend(iter(self.p.stderr.readline, "")),
                                   daemon=True)
        self._t.start()

    def attached(self) -> bool:
        """The banner: every source is attached."""
        return any(ln.startswith("Tracing QEMU pid") for ln in self.err)

    def finish(self, timeout: float = 120) -> subprocess.CompletedProcess:
        try:
            out = self.p.stdout.read()
            self.p.wait(timeout=timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
        self._t.join(timeout=10)
        return subprocess.CompletedProcess(self.p.args, self.p.returncode, out, "".join(self.err))


def _start(*args: str) -> _Run:
    return _Run(*args)


def _wait(pred, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"still waiting for {what}"
        time.sleep(0.05)


def _one_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("migprof: error:")]
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in errors[0], errors[0]


def test_live_switches_trace_on_and_restores_it(host):
    """Trace events on through the passthrough while attached, off again after."""
    assert host.trace_state() == "disabled"
    p = _start("live", "--domain", host.name, "-c", host.uri, "--no-tui", "--no-bpf", "-d", "60")
    try:
        _wait(p.attached, "migprof attached")
        assert host.trace_state() == "enabled"
    finally:
        p.p.send_signal(2)
        r = p.finish(60)
    err = r.stderr
    assert r.returncode == 0, err
    assert host.trace_state() == "disabled"
    notes = [ln for ln in err.splitlines() if "tainted" in ln]
    assert len(notes) == 1 and "custom-monitor" in notes[0], err
    assert f"libvirt domain {host.name}" in err


def test_record_follows_a_migration(host, tmp_path):
    """`record --domain` on the source: QMP rows through libvirt, trace lines from libvirt's
    log, libvirt's job rows; it ends when the domain has migrated away (exit 0)."""
    rec = tmp_path / "mig.parquet"
    p = _start("record", "--domain", host.name, "-c", host.uri, "--no-bpf", "-o", str(rec),
               "-d", "120")
    src, dst = host.d["source"], host.d["destination"]
    try:
        _wait(p.attached, "record attached")
        src.virsh("migrate-setmaxdowntime", host.name, "300")
        src.virsh("migrate", "--live", "--p2p", "--bandwidth", "256", host.name, dst.tcp_uri,
                  f"tcp://{dst.addr}:4444", timeout=120)
    finally:
        r = p.finish(120)
    assert r.returncode == 0, r.stderr
    df, meta, _warnings = read_recording(str(rec))
    events = df["event"].astype(str)
    states = set(df.loc[events == "qmp_migration", "state"].dropna())
    assert {"setup", "active", "completed"} <= states
    assert (events == "qmp_query_migrate").any()
    assert ((events == "migrate_set_state") & (df["origin"].astype(str) == "qemu-log")).any()
    job = df[events == "libvirt_job"]
    assert "completed" in set(job["state"].dropna())
    completed = json.loads(job[job["state"] == "completed"]["detail"].iloc[-1])
    assert completed["memory_iteration"] >= 1
    assert "stopped:migrated" in set(df.loc[events == "libvirt_lifecycle", "state"].dropna())
    assert meta["live"]["domain"] == host.name
    # libvirt's view beside ours: its job rows in the line view, its statistics at the end
    assert "libvirt_job" in r.stdout
    done = [ln for ln in r.stdout.splitlines() if ln.startswith("libvirt job completed:")]
    assert len(done) == 1 and f"memory_iteration={completed['memory_iteration']}" in done[0]
    # back to the source for the tests after this one
    dst.virsh("migrate", "--live", "--p2p", host.name, src.tcp_uri, f"tcp://{src.addr}:4444",
              timeout=120)
    assert host.trace_state() == "disabled"


@pytest.mark.parametrize("uri,words", [
    ("qemu+unix:///system?socket=/nonexistent/libvirt-sock", ["libvirt is not running"]),
    ("qemu+tcp://127.0.0.1:1/system", ["refused the connection", "Connection refused"]),
])
def test_bad_connection(uri, words):
    _one_error(_live("live", "--domain", "x", "-c", uri, "--no-tui", "--no-bpf", "-d", "1"), *words)


def test_unknown_domain(host):
    _one_error(_live("live", "--domain", "nope", "-c", host.uri, "--no-tui", "--no-bpf", "-d", "1"),
               "no domain 'nope'")


def test_domain_not_running(host):
    name = f"{host.name}-off"
    host.d["source"].virsh("define", str(_renamed(host.xml, host.name, name)))
    try:
        _one_error(_live("live", "--domain", name, "-c", host.uri, "--no-tui", "--no-bpf", "-d", "1"),
                   "is not running")
    finally:
        host.d["source"].virsh("undefine", name)


def _renamed(xml: Path, old: str, new: str) -> Path:
    out = xml.with_name(f"{new}.xml")
    out.write_text(xml.read_text().replace(f"<name>{old}</name>", f"<name>{new}</name>")
                   .replace(f"{old}-serial", f"{new}-serial"))
    return out


def test_not_allowed_read_only(host):
    """A read-only connection may not use monitor passthrough: one line, nothing enabled."""
    ro = host.uri.replace("libvirt-sock", "libvirt-sock-ro")
    _one_error(_live("live", "--domain", host.name, "-c", ro, "--no-tui", "--no-bpf", "-d", "1"),
               "not allowed")
    assert host.trace_state() == "disabled"


def test_domain_ends_mid_run(host, tmp_path):
    """The domain destroyed under a recording: one line, exit 2, the rows so far kept."""
    rec = tmp_path / "cut.parquet"
    p = _start("record", "--domain", host.name, "-c", host.uri, "--no-bpf", "-o", str(rec),
               "-d", "120")
    try:
        _wait(p.attached, "record attached")
        host.d["source"].virsh("destroy", host.name)
    finally:
        r = p.finish(60)
        host.start()
    _one_error(r, "ended mid-run", "stopped:destroyed")
    df, _meta, _warnings = read_recording(str(rec))
    assert (df["event"].astype(str) == "qmp_params").any()
    # a fresh QEMU: nothing of ours is on in it
    assert host.trace_state() == "disabled"
