"""Device health findings (profiler/model/findings.py) beside the verdict.

On REAL VFIO migrations (tests/data/real-vfio: mtty in the nested lab) the findings must say
what the logs show, read here with plain regexes; on the REAL lab runs without VFIO they must
stay silent. What no real run here produces (a stall, missing stop-copy bytes, PRE_COPY data
that grows again, an ERROR state, a switch-over before the ACK) comes from the SYNTHETIC
tests/data/synthetic/health, written from QEMU 10.0's format strings by its make.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from profiler import pipeline
from profiler.cli import main
from profiler.model import build_report

DATA = Path(__file__).resolve().parent / "data"
SYNTH = DATA / "synthetic" / "health"
STAMP = re.compile(r"^\d+@(\d+\.\d+):(\S+)")
EVIDENCE = re.compile(r"^(.+):(\d+): ")


def report(d: Path):
    loaded = pipeline.load([str(d)])
    return build_report(loaded.events, meta=loaded.meta)


def by_kind(m) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in m.findings:
        out.setdefault(f.kind, []).append(f)
    return out


def check_evidence(f) -> None:
    """Every file:line evidence points at a line that holds what it quotes."""
    assert f.evidence
    for e in f.evidence:
        hit = EVIDENCE.match(e)
        if hit is None:
            continue  # a row without a file (event at time)
        path, line = hit.group(1), int(hit.group(2))
        text = Path(path).read_text().splitlines()[line - 1]
        quoted = e[hit.end():].split()[0]
        assert quoted in text, f"{e!r} vs {text!r}"


def stamps(path: Path, event: str) -> list[tuple[float, str]]:
    out = []
    for ln in path.read_text().splitlines():
        m = STAMP.match(ln)
        if m and m.group(2) == event:
            out.append((float(m.group(1)), ln))
    return out


def test_synthetic_fixture_is_what_make_py_writes(tmp_path: Path) -> None:
    before = {p.name: p.read_text() for p in SYNTH.iterdir() if p.suffix in (".log", ".jsonl")}
    script = (SYNTH / "make.py").read_text().replace("HERE = Path(__file__).resolve().parent",
                                                     f"HERE = Path({str(tmp_path)!r})")
    (tmp_path / "make.py").write_text(script)
    subprocess.run([sys.executable, str(tmp_path / "make.py")], check=True, capture_output=True)
    assert {n: (tmp_path / n).read_text() for n in before} == before


def test_synthetic_every_finding() -> None:
    (m,) = report(SYNTH).migrations
    k = by_kind(m)
    assert set(k) == {"stopcopy-missing", "data-fd-stall", "state-error", "state-unconfirmed",
                      "switchover-before-ack", "precopy-reinit", "load-vs-save"}
    for fs in k.values():
        for f in fs:
            check_evidence(f)
    (miss,) = k["stopcopy-missing"]
    assert "8388608" in miss.message and "1048576 bytes" in miss.message and miss.severity == "warning"
    (stall,) = k["data-fd-stall"]
    assert "250 ms" in stall.message and "PRE_COPY" in stall.message
    assert stall.device == "0000:3b:00.1"  # the BPF row's fd14 joined to the device
    (reinit,) = k["precopy-reinit"]
    assert "2097152" in reinit.message and "REINIT" in reinit.message and reinit.severity == "info"
    (ack,) = k["switchover-before-ack"]
    src = SYNTH / "source.log"
    low = stamps(src, "migration_thread_low_pending")[0][0]
    acked = stamps(src, "source_return_path_thread_switchover_acked")[0][0]
    t0 = stamps(src, "migrate_set_state")[0][0]
    assert f"{(low - t0) * 1000:.1f} ms" in ack.message and f"{(acked - t0) * 1000:.1f} ms" in ack.message
    (unc,) = k["state-unconfirmed"]
    assert "asked for STOP" in unc.message and "ERROR" in unc.message
    (lvs,) = k["load-vs-save"]
    assert "21.0 ms" in lvs.message and "3.0 ms" in lvs.message and lvs.severity == "warning"


def test_real_multifd_load_starvation() -> None:
    """The destination's multifd load thread waited for buffers idx 0 and 1: the wait is
    each `starved` line to the `incoming` line of the same idx."""
    (m,) = report(DATA / "real-vfio" / "multifd").migrations
    (f,) = by_kind(m)["multifd-load"]
    dst = DATA / "real-vfio" / "multifd" / "destination.log"
    idx = re.compile(r"idx (\d+)")
    inc = {idx.search(ln).group(1): t for t, ln in stamps(dst, "vfio_load_state_device_buffer_incoming")}
    starved = [(idx.search(ln).group(1), t) for t, ln in stamps(dst, "vfio_load_state_device_buffer_starved")]
    wait = sum(inc[i] - t for i, t in starved) * 1000
    (t_start, _), (t_end, _) = (stamps(dst, "vfio_load_bufs_thread_start")[0], stamps(dst, "vfio_load_bufs_thread_end")[0])
    assert f"ran {(t_end - t_start) * 1000:.1f} ms" in f.message
    assert f"waited {wait:.1f} ms" in f.message and "idx 0, 1" in f.message
    check_evidence(f)


@pytest.mark.parametrize("name", ["converges", "switchover-ack", "multifd", "downtime-raised"])
def test_real_mtty_is_healthy(name: str) -> None:
    """mtty sends 72 of its 96 stop-copy bytes (24 went in pre-copy), never stalls, confirms
    every state, and QEMU waited for the ACK: only load/save (and multifd) information."""
    (m,) = report(DATA / "real-vfio" / name).migrations
    assert set(by_kind(m)) <= {"load-vs-save", "multifd-load"}
    for f in m.findings:
        check_evidence(f)
    lvs = by_kind(m).get("load-vs-save", [])
    assert [f.device for f in lvs] == [d.name for d in m.devices if d.kind == "vfio" and d.side == "source"]


def test_no_vfio_no_findings() -> None:
    for d in sorted((DATA / "real").iterdir()):
        if d.is_dir():
            for m in report(d).migrations:
                assert m.findings == (), d


def test_report_json_carries_findings() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["report", "--json", str(SYNTH)]) == 0
    (m,) = json.loads(out.getvalue())["migrations"]
    assert {f["kind"] for f in m["findings"]} >= {"stopcopy-missing", "precopy-reinit"}
    assert set(m["findings"][0]) == {"kind", "device", "severity", "message", "evidence"}
