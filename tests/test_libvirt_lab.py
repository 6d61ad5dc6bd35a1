"""`migprof lab --libvirt`: real migrations between two libvirt daemons, checked against libvirt.

Each scenario runs once per module as a user runs it (`migprof lab --libvirt -s NAME`,
stdin closed): two libvirtd/virtlogd pairs in two network namespaces, a TCG domain
running the lab guest, `virsh migrate --live --p2p`. The tests compare `migprof report`
of the run directory with libvirt's own completed job statistics (libvirt-jobinfo.json)
and check that no daemon, domain, namespace or directory is left behind.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from profiler.lab.libvirt import agreement
from profiler.model import build_report
from profiler.pipeline import load
from profiler.sources.jsonl import read_events_jsonl

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MIGPROF = ROOT / ".venv/bin/migprof"


def _lab(tmp: Path, scenario: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp / scenario
    r = subprocess.run([str(MIGPROF), "lab", "--libvirt", "-s", scenario, "-o", str(out), "--json"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    return r, out


def _assert_clean(run_dir: Path) -> None:
    """Nothing of the run's lab is left: daemons, QEMUs, namespaces, veths, directories."""
    run = json.loads((run_dir / "run.json").read_text())
    domain = run["libvirt"]["domain"]
    tag = re.match(r"migprof-lab-([0-9a-z]+)-lv", domain)[1]
    root = Path(run["libvirt"]["uris"]["source"].split("socket=")[1]).parents[2]
    left = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if f"guest={domain},".encode() in argv or str(root).encode() in argv:
                left.append(argv.split(b"\0")[0].decode())
    assert not left, f"processes left: {left}"
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"migprof-{tag}-" not in ns, "lab namespace left"
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert f"migprof-{tag}s" not in links, "lab veth left"
    assert not root.exists(), f"daemon directory {root} left"


@pytest.fixture(scope="module")
def converges(tmp_path_factory):
    return _lab(tmp_path_factory.mktemp("lv"), "converges")


@pytest.fixture(scope="module")
def never(tmp_path_factory):
    return _lab(tmp_path_factory.mktemp("lv"), "never-converges")


def test_converges_agrees_with_libvirt(converges):
    r, out = converges
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed"
    job = json.loads((out / "libvirt-jobinfo.json").read_text())
    # virDomainGetJobStats(COMPLETED) on the destination, keys as libvirt names them
    assert job["type"] == 3 and job["operation"] == 4, job
    assert {"time_elapsed", "downtime", "memory_iteration", "data_processed"} <= set(job)
    rep = build_report(load([str(out)]).events, inputs=[str(out)])
    src = [m for m in rep.migrations if m.side == "source"]
    assert len(src) == 1 and src[0].outcome == "completed" and src[0].dest_outcome == "completed"
    m = src[0]
    assert m.dirty_syncs == job["memory_iteration"]
    assert m.total_ms <= job["time_elapsed"]
    # the run's summary line is the same comparison
    a = agreement(out)
    assert a["dirty_syncs"] == a["libvirt_memory_iteration"] == job["memory_iteration"]
    assert a["downtime_ms"] == m.downtime_ms
    # QEMU's downtime (source: vm stopped .. migration completed) lies inside the guest's
    # pause (source STOP .. destination RESUME, QEMU's event stamps)
    assert a["downtime_ms"] <= a["guest_paused_ms"] + 1
    # libvirt stamps the pause itself: when its source daemon handles STOP (before it emits
    # suspended:migrated) and on the destination after `cont` (after QEMU's RESUME). So
    # its downtime covers at least RESUME - (our receipt of suspended:migrated), up to its
    # millisecond truncation
    ev = read_events_jsonl(out / "events.jsonl")

    def t(event: str, state: str, side: str) -> int:
        sel = ev[(ev["event"] == event) & (ev["state"] == state) & (ev["side"] == side)]
        assert len(sel), (event, state, side)
        return int(sel["t_ns"].iloc[-1])

    floor = (t("qmp_event", "RESUME", "destination")
             - t("libvirt_lifecycle", "suspended:migrated", "source")) / 1e6
    assert job["downtime"] >= floor - 3, (job["downtime"], floor)
    _assert_clean(out)


def test_converges_run_directory(converges):
    _r, out = converges
    names = {p.name for p in out.iterdir()}
    assert {"run.json", "events.jsonl", "source.log", "destination.log", "libvirt-jobinfo.json",
            "serial-source.log", "serial-destination.log"} <= names
    run = json.loads((out / "run.json").read_text())
    lv = run["libvirt"]
    assert lv["host_uuids"]["source"] != lv["host_uuids"]["destination"]
    migrate = [c for c in lv["virsh"] if "migrate" in c]
    assert migrate and {"--live", "--p2p"} <= set(migrate[0])
    # the guest went on running on the destination
    assert b"migprof-guest: t_ms=" in (out / "serial-destination.log").read_bytes()
    # trace lines from both QEMUs, read from libvirt's logs of their stderr
    loaded = load([str(out)])
    traced = loaded.events[loaded.events["origin"] == "qemu-log"]
    assert set(traced["side"].astype(str)) == {"source", "destination"}
    assert (traced["event"] == "migrate_set_state").any()
    # both sides followed through libvirt: QMP rows (passthrough polls and monitor events)
    ev = read_events_jsonl(out / "events.jsonl")
    for side in ("source", "destination"):
        rows = ev[(ev["side"] == side) & (ev["event"] == "qmp_migration")]
        assert "completed" in set(rows["state"]), side
    job = ev[ev["event"] == "libvirt_job"]
    assert {"iteration", "completed"} <= set(job["state"])
    # `migprof report RUN` shows libvirt's statistics beside ours
    info = json.loads((out / "libvirt-jobinfo.json").read_text())
    r = subprocess.run([str(MIGPROF), "report", str(out)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("libvirt (libvirt-jobinfo.json)")]
    assert len(line) == 1, r.stdout
    it = info["memory_iteration"]
    assert f"downtime {info['downtime']} ms" in line[0]
    assert f"memory iterations {it} [dirty syncs {it}]" in line[0]


def test_never_converges_cancelled(never):
    r, out = never
    assert r.returncode == 0, r.stderr
    # (a guest starved of CPU by a loaded host may dirty slowly enough to converge: the
    # summary says so)
    assert json.loads(r.stdout.strip().splitlines()[-1])["status"] == "cancelled", r.stdout
    # libvirt keeps no statistics of a cancelled job: the file says so in libvirt's terms
    assert json.loads((out / "libvirt-jobinfo.json").read_text()) == {"type": 0}
    rep = build_report(load([str(out)]).events, inputs=[str(out)])
    src = [m for m in rep.migrations if m.side == "source"]
    assert [m.outcome for m in src] == ["cancelled"], rep.migrations
    assert src[0].converged is False, src[0].verdict
    # the scenario's limits went through libvirt
    assert src[0].downtime_limit_ms == 20
    assert src[0].max_bandwidth_bytes_per_s == 64 * 1024 * 1024
    _assert_clean(out)
