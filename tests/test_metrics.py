"""Live metrics (`--metrics ADDR:PORT`): real HTTP scrapes parsed by prometheus_client's own
parsers, during real lab migrations, against the full model built over exactly the events
each scrape covers; the final scrape against `report` of the recording; Prometheus naming
conventions; a bad address."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from profiler import events as ev
from profiler import pipeline
from profiler.cli import main
from profiler.lab import qemu as lq
from profiler.metrics_server import MetricsServer, parse_addr
from profiler.model import build_report
from profiler.model.results import Report
from profiler.store import read_recording
from profiler.views.metrics import STATUSES, ReportMetrics, VmMetrics, families

DATA = Path(__file__).resolve().parent / "data"
MIGPROF = Path(sys.executable).parent / "migprof"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Key = tuple[str, frozenset]  # sample name, its labels other than vm/pid/side


def samples(text: str, openmetrics: bool) -> dict[Key, float]:
    """Every sample of an exposition, by name and labels (vm, pid and side left out)."""
    parse = parse_openmetrics if openmetrics else parse_text
    out = {}
    for fam in parse(text):
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            labels = frozenset((k, v) for k, v in s.labels.items() if k not in ("vm", "pid", "side"))
            out[(s.name, labels)] = s.value
    return out


def scrape(url: str, openmetrics: bool) -> tuple[str, dict[Key, float]]:
    req = urllib.request.Request(url, headers={"Accept": OPENMETRICS} if openmetrics else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
        ctype = r.headers["Content-Type"]
    assert ctype.startswith("application/openmetrics-text" if openmetrics else "text/plain"), ctype
    return text, samples(text, openmetrics)


def expected(rep: Report, events: int, lost: int = 0) -> dict[Key, float]:
    """What the metrics must say of a report, written out from its fields (docs/metrics.md)."""
    k = lambda name, **lb: (f"migprof_{name}", frozenset(lb.items()))  # noqa: E731
    out = {k("events_total"): events, k("lost_events_total"): lost}
    migs = rep.migrations
    for outcome in ("completed", "failed", "cancelled"):
        out[k("migrations_total", outcome=outcome)] = sum(m.outcome == outcome for m in migs)
    mig = migs[-1] if migs else None
    seen = [s.state for s in mig.states if s.side == mig.side] if mig else []
    status = "none" if mig is None else seen[-1] if seen else (
        mig.outcome if mig.outcome in ("completed", "failed", "cancelled") else "setup")
    for st in sorted({*STATUSES, status}):
        out[k("migration_status", migprof_migration_status=st)] = float(st == status)
    if mig is None:
        return out
    if mig.view == "qemu":
        out[k("migration_pass")] = mig.dirty_syncs
    if mig.checks:
        last = mig.checks[-1]
        out[k("migration_pending_bytes")] = last.pending_bytes
        for dev, v in last.devices.items():
            if any(d.name == dev and d.kind in ("ram", "vfio") for d in mig.devices):
                out[k("device_pending_bytes", device=dev,
                      kind=next(d.kind for d in mig.devices if d.name == dev))] = v
        thr = [c.threshold_bytes for c in mig.checks if c.threshold_bytes is not None]
        if thr:
            out[k("migration_threshold_bytes")] = thr[-1]
        if last.bandwidth_bytes_per_ms:
            out[k("migration_bandwidth_bytes_per_second")] = last.bandwidth_bytes_per_ms * 1000
            out[k("migration_expected_downtime_seconds")] = (
                last.pending_bytes / last.bandwidth_bytes_per_ms / 1000)
    if k("migration_bandwidth_bytes_per_second") not in out and mig.verdict.bandwidth_bytes_per_s:
        out[k("migration_bandwidth_bytes_per_second")] = mig.verdict.bandwidth_bytes_per_s
    for name, v, scale in (("migration_downtime_seconds", mig.downtime_ms, 1e-3),
                           ("migration_total_time_seconds", mig.total_ms, 1e-3),
                           ("migration_transferred_bytes", mig.transferred_bytes, 1),
                           ("migration_downtime_limit_seconds", mig.downtime_limit_ms, 1e-3)):
        if v is not None:
            out[k(name)] = v * scale
    for d in mig.devices:
        if d.name and d.kind in ("ram", "vfio"):
            for phase, v in (("precopy", d.precopy_bytes), ("stopcopy", d.stopcopy_bytes)):
                if v is not None:
                    out[k("device_transferred_bytes", device=d.name, kind=d.kind, phase=phase)] = v
            if d.downtime_ms is not None:
                out[k("device_downtime_seconds", device=d.name, kind=d.kind)] = d.downtime_ms / 1000
            if d.stopcopy_size_bytes is not None:
                out[k("device_stopcopy_size_bytes", device=d.name, kind=d.kind)] = d.stopcopy_size_bytes
    return {key: float(v) for key, v in out.items()}


def same(got: dict[Key, float], want: dict[Key, float]) -> None:
    assert set(got) == set(want), (set(got) ^ set(want))
    for key, v in want.items():
        assert got[key] == pytest.approx(v, rel=1e-9, abs=1e-12), key


# ---------------------------------------------------------------- the families, on real runs


REAL = ["real/7.2-converges", "real/10.0-downtime-raise", "real/7.2-cancel-retry",
        "real/10.0-destination-dies", "real-vfio/converges", "real-vfio/switchover-ack"]
UNITS = ("_bytes", "_seconds", "_bytes_per_second")
UNITLESS = {"migprof_migration_pass", "migprof_migration_status", "migprof_events",
            "migprof_lost_events", "migprof_migrations"}  # counts and a state set


@pytest.mark.parametrize("run", REAL)
def test_families_of_real_runs_follow_the_conventions(run: str) -> None:
    rep = pipeline.load_run(str(DATA / run)).report
    vm = VmMetrics("vm1", 4242, "source", rep, events=rep.events, lost_events=3)
    fams = families([vm])
    for f in fams:
        assert re.fullmatch(r"migprof_[a-z][a-z0-9_]*", f.name), f.name
        assert f.name in UNITLESS or f.name.endswith(UNITS), f.name
        assert not f.name.endswith("_total")  # the exposition adds it to counters
        assert (f.type == "counter") == (f.name in {"migprof_events", "migprof_lost_events",
                                                    "migprof_migrations"}), f.name
        for s in f.samples:
            assert set(s.labels) <= {"vm", "pid", "side", "device", "kind", "phase", "outcome",
                                     "migprof_migration_status"}, s
            assert s.labels.get("phase", "precopy") in ("precopy", "stopcopy")  # no units in values

    class Reg:
        def collect(self):
            return fams

    om = generate_openmetrics(Reg()).decode()
    assert om.endswith("# EOF\n") and "migprof_events_total" in om
    text = generate_latest(Reg()).decode()
    got_om, got_text = samples(om, True), samples(text, False)
    same(got_om, expected(rep, rep.events, 3))
    same(got_text, got_om)
    assert all(v.labels["vm"] == "vm1" and v.labels["pid"] == "4242"
               for f in parse_openmetrics(om) for v in f.samples)


def test_addresses() -> None:
    assert parse_addr("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_addr("[::1]:0") == ("::1", 0)
    assert parse_addr(":9464") == ("0.0.0.0", 9464)
    assert parse_addr("localhost:80") == ("localhost", 80)


@pytest.fixture
def busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def test_bad_address_is_one_line_exit_2(busy_port: int, tmp_path: Path, capsys) -> None:
    """Port in use, a host that does not resolve, one it cannot bind, no port: one line,
    exit 2, before anything is attached or recorded."""
    rec = tmp_path / "r.parquet"
    for addr, msg in ((f"127.0.0.1:{busy_port}", "cannot listen there (Address already in use)"),
                      ("nosuchhost.invalid:9464", "unknown host 'nosuchhost.invalid'"),
                      ("192.0.2.1:9464", "cannot listen there (Cannot assign requested address)"),
                      ("127.0.0.1", "expected ADDR:PORT"), ("127.0.0.1:70000", "expected ADDR:PORT")):
        rc = main(["live", "--any-process", "-p", str(os.getpid()), "--no-bpf", "--no-tui",
                   "--metrics", addr, "--record", str(rec)])
        err = capsys.readouterr().err
        assert rc == 2, err
        (only,) = err.strip().splitlines()
        assert only.startswith(f"migprof: error: --metrics {addr}: ") and msg in only, err
        assert not list(tmp_path.iterdir())


def test_server_stops_and_frees_its_port() -> None:
    srv = MetricsServer("127.0.0.1:0", lambda: families([VmMetrics("v", 1, "source", None)]))
    url = srv.url
    _, got = scrape(url, True)
    assert got[("migprof_migration_status", frozenset({("migprof_migration_status", "none")}))] == 1
    srv.close(None)
    srv.close(None)  # idempotent
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    MetricsServer(f"127.0.0.1:{port}", lambda: []).close()  # the port is free again


# ---------------------------------------------------------------- a real lab migration


class Scraper(threading.Thread):
    """Scrapes ``url`` until stopped, both formats in turn; keeps every scrape."""

    def __init__(self, url: str):
        super().__init__(name="scraper", daemon=True)
        self.url, self.stop, self.got = url, threading.Event(), []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.got.append(scrape(self.url, openmetrics=i % 2 == 0)[1])
            except OSError:  # refused or cut: the session ended and took the server with it
                break
            i += 1
            self.stop.wait(0.15)


def events_of(s: dict[Key, float]) -> int:
    return int(s[("migprof_events_total", frozenset())])


@pytest.mark.slow
def test_scrapes_during_a_lab_migration_equal_the_model(tmp_path: Path, capsys) -> None:
    """The lab's own sources through a session with the metrics sink and server: every
    scrape equals the full model over exactly the events it says it covers, and a scrape
    once every event is in equals `report` of the run's recording."""
    from profiler.lab import scenarios
    from profiler.lab.follow import finish_recording, lab_session, open_recording, recording_meta
    from profiler.lab.run import Lab, LabConfig, run_guarded
    from profiler.session import CallbackSink, FrameSink, RecordingSink

    out, rec = tmp_path / "run", tmp_path / "run.parquet"
    cfg = LabConfig(scenarios.get("downtime-raise"), out, accel="tcg", net="loopback")
    final: list[dict[Key, float]] = []
    with run_guarded(), Lab(cfg) as lab:
        writer = open_recording(rec, recording_meta(lab, "lab"))
        model = ReportMetrics("lab", lab.procs["source"].pid, "source")
        frames = FrameSink()
        server = MetricsServer("127.0.0.1:0", model.collect)
        # after every feed, before the server stops: the figures over the whole run
        probe = CallbackSink(on_close=lambda _h: final.append(scrape(server.url, True)[1]))
        scraper = Scraper(server.url)
        session, driver = lab_session(lab, [RecordingSink(writer, close_writer=False), model,
                                            frames, probe, server])
        scraper.start()
        try:
            session.run()
            res = driver.result()
        finally:
            scraper.stop.set()
            scraper.join()
            finish_recording(writer, out)
            writer.close()
    assert res.status == "completed" and writer.error is None
    df = frames.frame()
    active = [s for s in scraper.got if s.get(("migprof_migration_status", frozenset(
        {("migprof_migration_status", "active")}))) == 1]
    assert len(active) >= 3, [events_of(s) for s in scraper.got]  # several during pre-copy
    assert any(("migprof_migration_pending_bytes", frozenset()) in s for s in active)
    for s in scraper.got:
        n = events_of(s)
        same(s, expected(build_report(df.iloc[:n], inputs=["live"]), n))
    # the final figures: every event, and the numbers `report` gives for the recording
    (last,) = final
    assert events_of(last) == len(df) == len(read_recording(rec)[0])
    capsys.readouterr()
    assert main(["report", "--json", str(rec)]) == 0
    (m,) = json.loads(capsys.readouterr().out)["migrations"]
    k = lambda name: (f"migprof_{name}", frozenset())  # noqa: E731
    assert last[k("migration_downtime_seconds")] == pytest.approx(m["downtime_ms"] / 1000)
    assert last[k("migration_total_time_seconds")] == pytest.approx(m["total_ms"] / 1000)
    assert last[k("migration_transferred_bytes")] == m["transferred_bytes"]
    assert last[k("migration_pass")] == m["dirty_syncs"]
    assert last[k("migration_pending_bytes")] == m["checks"][-1]["pending_bytes"]
    assert last[("migprof_migration_status", frozenset({("migprof_migration_status", "completed")}))] == 1
    assert last[("migprof_migrations_total", frozenset({("outcome", "completed")}))] == 1
    same(last, expected(build_report(df, inputs=["live"]), len(df)))


@pytest.mark.slow
def test_live_metrics_on_a_lab_qemu(tmp_path: Path) -> None:
    """`migprof live --metrics` attached to a running lab QEMU (QMP and its trace log):
    real scrapes over HTTP while it migrates, each equal to the model over the events of
    the recording it makes up to the scrape's event count."""
    out = tmp_path / "run"
    lab = subprocess.Popen([str(MIGPROF), "lab", "--scenario", "never-converges", "--timeout", "12",
                            "--accel", "tcg", "--net", "loopback", "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    live = None
    try:
        sock = out / "qmp-source-attach.sock"
        end = time.monotonic() + 60
        while time.monotonic() < end and not (
                sock.exists() and b"qmp_query_migrate" in _read(out / "events.jsonl")):
            assert lab.poll() is None, lab.stderr.read().decode()
            time.sleep(0.1)
        rec = tmp_path / "live.parquet"
        live = subprocess.Popen([str(MIGPROF), "live", "--qmp", str(sock), "--no-bpf", "--no-trace",
                                 "--trace-log", str(out / "source.log"), "--no-tui", "-d", "4",
                                 "--record", str(rec), "--metrics", "127.0.0.1:0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = ""
        while "metrics on" not in line:
            line = live.stderr.readline()
            assert line or live.poll() is None, "live ended before serving"
        url = line.split("metrics on ", 1)[1].strip()
        scraper = Scraper(url)
        scraper.start()
        err = live.stderr.read()
        assert live.wait(timeout=60) == 0, err
        scraper.stop.set()
        scraper.join()
        df, meta, _ = read_recording(rec)
        assert len(scraper.got) >= 5
        assert {events_of(s) for s in scraper.got} != {0}
        for s in scraper.got:
            n = events_of(s)
            got_status = {dict(k[1])["migprof_migration_status"] for k, v in s.items()
                          if k[0] == "migprof_migration_status" and v == 1}
            if n:
                assert got_status == {"active"}
            same(s, expected(build_report(df.iloc[:n], inputs=["live"]), n))
        assert any(("migprof_migration_pending_bytes", frozenset()) in s for s in scraper.got)
        assert lab.wait(timeout=90) == 0, lab.stderr.read().decode()
    finally:
        for p in (live, lab):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM) if p is lab else p.terminate()
                p.wait(timeout=30)
    assert not [p for p, _ in lq.find_stray_qemus()]
    assert ev.QMP_QUERY_MIGRATE in set(df["event"].astype(str))


def _read(p: Path) -> bytes:
    return p.read_bytes() if p.exists() else b""


@pytest.mark.slow
def test_docs_scrape_example_runs_as_written(tmp_path: Path) -> None:
    """docs/metrics.md "Try it": the shell lines, run as written from an empty directory."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    script = re.search(r"```sh\n(.*?)```", doc[doc.index("## Try it"):], re.S).group(1)
    env = {**os.environ, "PATH": f"{MIGPROF.parent}:{os.environ.get('PATH', '')}"}
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr + (tmp_path / "live.err").read_text()
    got = samples(r.stdout + "# EOF\n", True)
    names = {k[0] for k in got}
    assert names == {"migprof_migration_status", "migprof_migration_pass",
                     "migprof_migration_pending_bytes", "migprof_migration_threshold_bytes"}, r.stdout
    assert got[("migprof_migration_status", frozenset({("migprof_migration_status", "active")}))] == 1
    assert "metrics on http://127.0.0.1:9464/metrics" in (tmp_path / "live.err").read_text()
    assert not [p for p, _ in lq.find_stray_qemus()]
