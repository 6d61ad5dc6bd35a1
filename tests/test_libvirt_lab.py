"""`migprof lab --libvirt`: real migrations between two libvirt daemons, checked against libvirt.

Each scenario runs once per module as a user runs it (`migprof lab --libvirt -s NAME`,
`migprof demo --libvirt`, stdin closed): two libvirtd/virtlogd pairs in two network
namespaces, a TCG domain running the lab guest, `virsh migrate --live --p2p`. The tests
compare `migprof report` of the run directory with libvirt's own completed job
statistics (libvirt-jobinfo.json), a recording with the run directory, run QEMU 10.0
from its private prefix under libvirt, and check that no daemon, domain, namespace or
directory is left behind.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from profiler.events import validate
from profiler.lab.libvirt import agreement
from profiler.model import build_report
from profiler.pipeline import load
from profiler.sources.jsonl import read_events_jsonl
from profiler.store import read_recording

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MIGPROF = ROOT / ".venv/bin/migprof"


def _run(cmd: str, tmp: Path, scenario: str, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp / scenario
    r = subprocess.run([str(MIGPROF), cmd, "--libvirt", "-s", scenario, "-o", str(out), *args],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    return r, out


@pytest.fixture(scope="module")
def converges(tmp_path_factory):
    """`lab --libvirt` as a user runs it, with every event also in a recording."""
    tmp = tmp_path_factory.mktemp("lv")
    return _run("lab", tmp, "converges", "--json", "--record", str(tmp / "converges.parquet"))


@pytest.fixture(scope="module")
def never(tmp_path_factory):
    return _run("lab", tmp_path_factory.mktemp("lv"), "never-converges", "--json")


@pytest.fixture(scope="module")
def retry10(tmp_path_factory):
    """`demo --libvirt` on QEMU 10.0 (a private prefix, docs/libvirt.md) with a cancel and
    a retry, recorded."""
    tmp = tmp_path_factory.mktemp("lv")
    return _run("demo", tmp, "cancel-retry", "--no-tui", "--qemu", "10.0", "--record",
                str(tmp / "retry.parquet"))


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


def _report_json(path: Path) -> dict:
    r = subprocess.run([str(MIGPROF), "report", "--json", str(path)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


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
    # pause (source STOP .. destination RESUME, QEMU's event stamps): under libvirt the
    # destination runs only after libvirt's Finish, which follows the source's completion
    assert m.guest_paused_ms == pytest.approx(a["guest_paused_ms"])
    assert a["downtime_ms"] <= a["guest_paused_ms"] + 1
    # the destination QEMU sends RESUME inside `cont`, before its reply
    assert a["cont_reply_ms"] >= a["guest_paused_ms"]
    # libvirt's downtime is its source daemon's stamp of STOP to its destination daemon's
    # stamp after `cont` returned: by libvirt's code, whatever its daemons' delays, it lies
    # between the bounds QEMU's monitor trace sets (profiler/model/libvirt.py). How close it
    # comes to our figures depends on those delays: bench/bench_libvirt_downtime.py
    assert a["libvirt_low_ms"] is not None and a["libvirt_high_ms"] is not None, a
    assert a["libvirt_low_ms"] < job["downtime"] < a["libvirt_high_ms"], (job["downtime"], a)
    assert a["libvirt_low_ms"] < a["cont_reply_ms"] + 1 and a["cont_reply_ms"] - 1 < a["libvirt_high_ms"]
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
    # guest RAM allocated at start-up on both sides, as the plain lab's -mem-prealloc: the
    # command line libvirt logged (prealloc of the RAM backend, or -mem-prealloc)
    for side in ("source", "destination"):
        lines = (out / f"{side}.log").read_text(errors="replace").splitlines()
        start = next(i for i, ln in enumerate(lines) if "qemu-system" in ln)
        end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\"))
        cmd = " ".join(lines[start:end + 1])  # libvirt logs it one argument a line
        assert re.search(r'-mem-prealloc|"prealloc":true|prealloc=(on|yes)', cmd), cmd[-2000:]
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
    lines = r.stdout.splitlines()
    at = [i for i, ln in enumerate(lines) if ln.startswith("libvirt (libvirt-jobinfo.json)")]
    assert len(at) == 1, r.stdout
    block = "\n".join(lines[at[0]:])
    it = info["memory_iteration"]
    assert f"downtime {info['downtime']} ms: libvirt's clocks" in block
    assert "guest paused" in block and "reply to cont" in block and ": inside;" in block
    assert f"memory iterations {it} [dirty syncs {it}]" in block
    # the report's migration header shows the guest's pause beside QEMU's downtime, labelled
    head = next(ln for ln in lines if ln.startswith("Migration 1"))
    assert "(QEMU's, source)" in " ".join(lines[lines.index(head):lines.index(head) + 4])


def _guest_rate(serial: Path) -> str:
    """The guest's own last progress line (its real dirty rate), for failure messages."""
    lines = [ln for ln in serial.read_text(errors="replace").splitlines() if "mibps=" in ln]
    return lines[-1] if lines else "(no progress line)"


def test_never_converges_cancelled(never):
    """Certain by design, with a wide margin: the guest rewrites its whole 32 MiB set every
    sweep (~0.1-0.2 s), a pass at 64 MiB/s takes ~0.5 s, so each dirty sync finds ~32 MiB
    pending against a threshold of 64 MiB/s x 20 ms = 1.3 MB. To converge the guest would
    have to dirty under 1.3 MB in a whole pass, under ~2.6 MiB/s; on this 2-core host it
    dirties 170-250 MiB/s even at load 6 (three busy loops beside the lab; quiet: 250-400),
    a margin of 60x. The cancel comes 4 s after QEMU's migration began."""
    r, out = never
    assert r.returncode == 0, r.stderr
    rate = _guest_rate(out / "serial-source.log")
    assert json.loads(r.stdout.strip().splitlines()[-1])["status"] == "cancelled", (r.stdout, rate)
    # libvirt keeps no statistics of a cancelled job: the file says so in libvirt's terms
    assert json.loads((out / "libvirt-jobinfo.json").read_text()) == {"type": 0}
    rep = build_report(load([str(out)]).events, inputs=[str(out)])
    src = [m for m in rep.migrations if m.side == "source"]
    assert [m.outcome for m in src] == ["cancelled"], (rep.migrations, rate)
    assert src[0].converged is False, (src[0].verdict, rate)
    # the scenario's limits went through libvirt
    assert src[0].downtime_limit_ms == 20
    assert src[0].max_bandwidth_bytes_per_s == 64 * 1024 * 1024
    # no guest pause: the source never stopped for a switch-over
    assert src[0].guest_paused_ms is None
    _assert_clean(out)


def test_converges_recording_reads_back_like_the_run_directory(converges):
    r, out = converges
    assert r.returncode == 0, r.stderr
    rec = out.parent / "converges.parquet"
    df, meta, warnings = read_recording(rec)
    assert warnings == []
    validate(df, str(rec))
    # both sides through libvirt, the lab's marks, and both QEMUs' trace lines (libvirt's
    # logs of their stderr, tailed while the run went on)
    assert {"qemu-log", "qmp", "libvirt", "lab"} <= set(df["origin"].astype(str))
    assert set(df.loc[df["origin"] == "qemu-log", "side"].astype(str)) == {"source", "destination"}
    run = json.loads((out / "run.json").read_text())
    assert meta["lab"]["command"] == "lab" and meta["scenario"] == "converges"
    assert meta["libvirt"]["domain"] == run["libvirt"]["domain"]
    assert meta["libvirt_jobinfo"] == json.loads((out / "libvirt-jobinfo.json").read_text())
    assert meta["run"]["status"] == "completed"
    a, b = _report_json(rec), _report_json(out)
    assert a["migrations"] == b["migrations"] and a["events"] == b["events"]
    # the recording alone is enough for libvirt's figures beside ours
    assert agreement(rec) == agreement(out)


def test_demo_qemu10_cancel_retry(retry10):
    r, out = retry10
    assert r.returncode == 0, r.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["qemu"]["version"] == "10.0", run["qemu"]
    # libvirt started QEMU 10.0 from its private prefix, and probed it
    assert "/qemu-10.0/usr/bin/qemu-system-x86_64" in (out / "source.log").read_text(errors="replace")
    rec = out.parent / "retry.parquet"
    a, b = _report_json(rec), _report_json(out)
    assert a["migrations"] == b["migrations"] and a["events"] == b["events"]
    src = [m for m in b["migrations"] if m["side"] == "source"]
    # a loaded host may slow the guest so the first attempt completes before its cancel:
    # then there is one attempt; the report follows the attempts either way
    assert [m["outcome"] for m in src] == [x["status"] for x in run["attempts"]]
    assert src[-1]["outcome"] == "completed" and src[-1]["dest_outcome"] == "completed"
    # the retry's destination is a new QEMU libvirt made; its lines join the same log
    assert b"migprof-guest: t_ms=" in (out / "serial-destination.log").read_bytes()
    # the demo's live line view, then the final report with libvirt's figures beside ours
    assert "PEND(MiB)" in r.stdout and "Verdict:" in r.stdout
    assert "libvirt (libvirt-jobinfo.json):" in r.stdout and ": inside;" in r.stdout
    a = agreement(out)
    assert a["libvirt_low_ms"] < a["libvirt_downtime_ms"] < a["libvirt_high_ms"], a
    assert a["dirty_syncs"] == a["libvirt_memory_iteration"]
    _assert_clean(out)
