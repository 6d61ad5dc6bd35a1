"""`migprof demo`: a real lab migration profiled live, then the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from profiler.cli import main
from profiler.views.lines import StatusLines


@pytest.mark.slow
def test_demo_line_view_then_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    rc = main(
        ["demo", "--no-tui", "--scenario", "downtime-raise", "--accel", "tcg", "--out", str(out)]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    lines = cap.out.splitlines()
    hdr = next(i for i, ln in enumerate(lines) if "PEND(MiB)" in ln)
    assert "THRESH(MiB)" in lines[hdr] and "PASS" in lines[hdr] and "STATE" in lines[hdr]
    live = [ln for ln in lines[hdr + 1 :] if re.match(r"\s*\d+\.\d ", ln)]
    assert len(live) >= 2  # a line per second over a ~3 s migration
    assert any(" active " in ln for ln in live)
    # pending and threshold came from the tailed trace log while it ran
    assert any(re.search(r"active\s+\d+\s+\d+\.\d\s+\d+\.\d", ln) for ln in live)
    assert "completed" in live[-1]
    assert "Migration 1" in cap.out and "Verdict" in cap.out
    fin = json.loads((out / "query-migrate-source.json").read_text())
    assert f"dirty syncs {fin['ram']['dirty-sync-count']}" in " ".join(cap.out.split())


@pytest.mark.slow
def test_demo_json(tmp_path: Path, capsys) -> None:
    rc = main(
        [
            "demo",
            "--json",
            "--scenario",
            "converges",
            "--accel",
            "tcg",
            "--net",
            "loopback",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rep = json.loads(cap.out)
    assert rep["schema"] == "migprof.report/1"
    (m,) = rep["migrations"]
    fin = json.loads((tmp_path / "run/query-migrate-source.json").read_text())
    assert m["outcome"] == "completed" and m["dirty_syncs"] == fin["ram"]["dirty-sync-count"]


def test_line_view_same_values_whatever_the_batching() -> None:
    """The line view reads only the last row of each kind per batch: the values it shows
    must not depend on how the stream was cut into batches (real lab run data)."""
    import io

    from profiler import events as ev
    from profiler.sources.jsonl import read_events_jsonl
    from profiler.sources.qemu_log import read_log

    run = Path(__file__).parent / "data/real/7.2-downtime-raise"
    log = next(p for p in (run / "source.log", run / "source.log.gz") if p.exists())
    rows = ev.sort_timeline(
        ev.concat([read_events_jsonl(run / "events.jsonl"), read_log(log, side="source").frame])
    )
    seen = set()
    for step in (1, 3, 50, len(rows)):
        v = StatusLines(io.StringIO())
        for k in range(0, len(rows), step):
            v.feed(rows.iloc[k : k + step].reset_index(drop=True))
        seen.add((v.state, v.passes, v.pending, v.threshold, v.xfer, v.mibps))
    (state,) = seen
    fin = json.loads((run / "query-migrate-source.json").read_text())
    assert state[0] == "completed"
    assert state[1] == fin["ram"]["dirty-sync-count"] and state[4] == fin["ram"]["transferred"]
    assert state[2] is not None and state[3] is not None  # pending and threshold from the log
