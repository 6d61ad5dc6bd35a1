"""`migprof report`'s lean path: only the events the model reads become rows (``keep``), the
same report, the same counts and warnings; the fast JSON text; the progress bar on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as stn

from profiler import pipeline
from profiler.model import build_report
from profiler.model.names import kept
from profiler.model.results import Report, dumpb, dumps, to_json
from profiler.sources import qemu_log
from profiler.sources.qemu_log import parse_bytes

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
RUNS = sorted(p for g in ("real", "real-vfio") for p in (DATA / g).iterdir() if p.is_dir())
LINES = [ln for p in sorted((DATA / "real").glob("*/*.log"))[:8] for ln in p.read_bytes().splitlines()[:80]]


@pytest.mark.parametrize("run", RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_lean_load_gives_the_same_report(run: Path) -> None:
    full = pipeline.load([str(run)])
    lean = pipeline.load([str(run)], keep=kept())
    assert lean.rows == full.rows == len(full.events)
    assert len(lean.events) < len(full.events)
    assert set(lean.events["event"].astype(str)) <= kept()
    assert (lean.lines, lean.skipped, lean.malformed, lean.warnings) == (
        full.lines, full.skipped, full.malformed, full.warnings)
    assert lean.inputs == full.inputs
    a = build_report(full.events, inputs=(str(run),), malformed=full.malformed, meta=full.meta)
    b = build_report(lean.events, inputs=(str(run),), malformed=lean.malformed, meta=lean.meta,
                     n_events=lean.rows)
    assert to_json(a) == to_json(b)


def _same_but_kept(data: bytes) -> None:
    whole = parse_bytes(data, file="f.log")
    lean = parse_bytes(data, file="f.log", keep=kept())
    assert (lean.lines, lean.skipped, lean.malformed, lean.events) == (
        whole.lines, whole.skipped, whole.malformed, whole.events)
    assert lean.events + lean.malformed + lean.skipped == lean.lines
    assert lean.warnings == whole.warnings and lean.event_names == whole.event_names
    want = whole.frame[whole.frame["event"].isin(kept())].reset_index(drop=True)
    got = lean.frame.reset_index(drop=True)
    assert len(got) + lean.dropped == len(whole.frame)
    for col in ("event", "clock", "side", "origin"):
        want[col], got[col] = want[col].astype(str), got[col].astype(str)
    pd.testing.assert_frame_equal(got, want)


def _mangle(ln: bytes, op: str, cut: int) -> bytes:
    if op == "cut":
        return ln[: cut % (len(ln) + 1)]
    if op == "digits":
        return ln[: cut % (len(ln) + 1)] + b"9" * 21 + ln[cut % (len(ln) + 1):]
    if op == "space":
        return ln.replace(b" ", b"  ", 1)
    if op == "cr":
        return ln + b"\r"
    return ln


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stn.lists(stn.sampled_from(LINES), min_size=1, max_size=4), stn.lists(
    stn.tuples(stn.integers(0, 3), stn.sampled_from(["keep"] * 4 + ["cut", "digits", "space", "cr"]),
               stn.integers(0, 200)), min_size=1, max_size=300))
def test_kept_rows_are_the_whole_parse_filtered(common: list[bytes], picks: list) -> None:
    """Logs dominated by a few lines (what the per-event RE2 pass settles), mangled: the kept
    rows, counts and warnings are those of the whole parse."""
    lines = [_mangle(common[i % len(common)] if i < 3 else LINES[c % len(LINES)], op, c)
             for i, op, c in picks]
    _same_but_kept(b"\n".join(lines) + b"\n")


def test_kept_rows_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"\n".join(LINES * 3) + b"\n"
    monkeypatch.setattr(qemu_log, "CHUNK_BYTES", 2048)
    _same_but_kept(data)


def test_dumps_is_json_dumps_of_to_json() -> None:
    for run in RUNS[:4]:
        L = pipeline.load([str(run)])
        rep = build_report(L.events, inputs=(str(run),))
        # the same values, in the same order (orjson may spell a float differently)
        assert list(_pairs(json.loads(dumps(rep)))) == list(_pairs(to_json(rep)))
        assert dumpb(rep) == dumps(rep).encode()
        assert dumps(rep, indent=1) == json.dumps(to_json(rep), indent=1)


def _pairs(v, path=""):
    """Every leaf of a JSON value with its path, in document order."""
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _pairs(x, f"{path}/{k}")
    elif isinstance(v, list | tuple):
        for i, x in enumerate(v):
            yield from _pairs(x, f"{path}/{i}")
    else:
        yield path, v


def test_dumps_turns_nan_and_numpy_into_what_to_json_gives() -> None:
    rep = Report(migrations=(), warnings=("w",), events=float("nan"),  # type: ignore[arg-type]
                 malformed_lines=np.int64(3), skipped_lines=np.float64(2.5))  # type: ignore[arg-type]
    assert json.loads(dumps(rep)) == to_json(rep)
    assert json.loads(dumps(rep))["events"] is None and json.loads(dumps(rep))["malformed_lines"] == 3


def test_dumps_takes_the_exact_path_for_what_orjson_refuses() -> None:
    """A non-string key or an int beyond 64 bits: orjson refuses, json takes them."""
    rep = Report(migrations=(), events=2**70, inputs=({1: "a"},))  # type: ignore[arg-type]
    assert json.loads(dumps(rep)) == json.loads(json.dumps(to_json(rep)))
    assert json.loads(dumps(rep))["events"] == 2**70


def _big_log(path: Path, size: int) -> None:
    """A log of ``size`` bytes or more: the real 7.2 source log repeated, an hour apart."""
    lines = (DATA / "real" / "7.2-converges" / "source.log").read_bytes().splitlines(keepends=True)
    out, n, rep = [], 0, 0
    while n < size:
        for ln in lines:
            tid, _, rest = ln.partition(b"@")
            sec, _, tail = rest.partition(b".")
            out.append(tid + b"@" + str(int(sec) + 3600 * rep).encode() + b"." + tail)
            n += len(ln)
        rep += 1
    path.write_bytes(b"".join(out))


def _report_with_stderr_on_a_terminal(args: list[str], tmp: Path) -> tuple[str, bytes, int]:
    """Run `migprof report ARGS` with stderr on a new pseudo-terminal, stdout a file:
    (stdout, everything written to the terminal, exit status)."""
    master, slave = pty.openpty()
    out_path = tmp / "stdout"
    with open(out_path, "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "profiler.cli", "report", *args], cwd=ROOT,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=slave)
    os.close(slave)
    tty = b""
    while True:  # read until the child closes its end (EIO on Linux)
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        tty += chunk
    os.close(master)
    rc = p.wait(timeout=120)
    return out_path.read_text(), tty, rc


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    log = tmp_path / "source.log"
    _big_log(log, 10 << 20)
    out, tty, rc = _report_with_stderr_on_a_terminal(["--json", str(log)], tmp_path)
    assert rc == 0
    assert b"reading" in tty and b"MB" in tty  # the bar: label and bytes read
    piped = subprocess.run([sys.executable, "-m", "profiler.cli", "report", "--json", str(log)],
                           cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert piped.returncode == 0 and piped.stderr == ""
    assert piped.stdout == out  # the bar never touches the report


def test_no_progress_bar_for_a_small_log(tmp_path: Path) -> None:
    out, tty, rc = _report_with_stderr_on_a_terminal(["--json", str(DATA / "real" / "7.2-converges")],
                                                     tmp_path)
    assert rc == 0 and json.loads(out)["migrations"]
    assert b"reading" not in tty


def test_every_event_a_model_module_reads_is_kept() -> None:
    """``report`` parses only ``kept()`` into rows: an event a model module reads but the
    registry gives no role would vanish from reports silently (the multifd load-thread
    finding did, before its events had roles)."""
    from profiler import events as E
    from profiler import registry
    from profiler.model import findings, kernel

    assert kept() >= findings.EVENTS
    assert set(kernel._EVENTS) <= kept()
    assert E.QMP_EVENT in kept()  # model/pause.py: the guest's STOP and RESUME
    # model/libvirt.py, beside the report of a `lab --libvirt` run
    assert {E.LIBVIRT_JOB, E.LIBVIRT_LIFECYCLE, *registry.QMP_TRACE} <= kept()
