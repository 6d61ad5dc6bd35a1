"""Output into pipes and files: never folded at 80 columns, a reader that leaves (`| head`)
ends the command with exit 0 and nothing on stderr, and the TUIs refuse or step aside when
stdout is not a terminal. Every command runs as a user runs it (a process, real inputs)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REAL, ROOT
from test_live_qemu import pair  # noqa: F401  (the fixture: a real QEMU pair)

from profiler import events as ev
from profiler.views.lines import PRINTED, EventLines

MIGPROF = [sys.executable, "-m", "profiler.cli"]
RUN = str(REAL / "7.2-downtime-raise")
TWO = str(REAL / "7.2-cancel-retry")  # two migrations: a rule between them


def _migprof(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*MIGPROF, *args], cwd=ROOT, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300, **kw)


def _into_closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose reader is already gone: every write meets EPIPE, as
    after `| head` has read its lines."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([*MIGPROF, *args], cwd=ROOT, stdout=w, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, timeout=300)
    finally:
        os.close(w)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("ds") / "fleet"
    r = _migprof("import", RUN, TWO, "--dataset", str(d), "--host", "h1")
    assert r.returncode == 0, r.stderr
    return str(d)


def test_piped_report_is_not_folded_at_80_columns() -> None:
    """A pipe has no width: each header and table row stays one line; the rule between two
    migrations spans 100 columns, as on a terminal it spans the terminal."""
    out = _migprof("report", TWO).stdout
    js = json.loads(_migprof("report", "--json", TWO).stdout)
    lines = out.splitlines()
    for i, m in enumerate(js["migrations"]):
        head = next(ln for ln in lines if ln.startswith(f"Migration {i + 1} "))
        # the whole header on its line: from the outcome to the last field
        assert m["outcome"] in head and f"checks {len(m['checks'])}" in head, head
    assert any(len(ln) > 80 for ln in lines)
    assert [ln.strip() for ln in lines if set(ln.strip()) == {"─"} and len(ln.strip()) >= 100] \
        == ["─" * 100]


def test_piped_whatif_and_query_rows_are_whole(dataset: str) -> None:
    wi = _migprof("whatif", RUN).stdout.splitlines()
    weak = json.loads(_migprof("whatif", "--json", RUN).stdout)["input"]["weak"]
    assert [ln for ln in wi if ln.startswith("  weak: ")] == [f"  weak: {w}" for w in weak]
    q = "SELECT host, recording, migration, outcome, total_ms, downtime_ms, qemu_version FROM migrations"
    rows = _migprof("query", dataset, q).stdout.splitlines()
    recs = json.loads(_migprof("query", dataset, q, "--json").stdout)
    for rec in recs:  # every row on one line of the table, its id unfolded
        assert sum(rec["recording"] in ln for ln in rows) >= 1


CASES = [
    ("report", RUN), ("report", "--json", RUN), ("report", "--all-checks", TWO),
    ("compare", RUN, "--", TWO), ("compare", "--json", RUN, "--", TWO),
    ("compare", "--markdown", RUN, "--", TWO),
    ("whatif", RUN), ("whatif", "--json", RUN, "--sweep", "downtime-limit=20..2000"),
    ("import", RUN, "-o", "{tmp}/r.parquet"),  # prints nothing on stdout: unchanged
    ("lab", "--list"), ("report", "--help"),
]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a[:2]))
def test_reader_gone_exits_0_with_stderr_unchanged(args: tuple[str, ...], tmp_path: Path) -> None:
    """`migprof ... | head`: exit 0, and stderr holds what the same command says with its
    output read to the end (no BrokenPipeError, no 'Exception ignored')."""
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    ref = subprocess.run([*MIGPROF, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, timeout=300)
    got = _into_closed_pipe(*args)
    assert got.returncode == 0, got.stderr
    assert got.stderr == ref.stderr


@pytest.mark.parametrize("form", ["", "--json", "--csv"])
def test_query_reader_gone(dataset: str, form: str) -> None:
    args = ["query", dataset, "SELECT * FROM checks", *([form] if form else [])]
    got = _into_closed_pipe(*args)
    assert got.returncode == 0 and got.stderr == "", got.stderr


def test_query_maps_are_objects(dataset: str) -> None:
    """DuckDB maps, alone or inside lists and structs, print as JSON objects (the same at
    every pyarrow the floors allow: its own maps_as_pydicts came in pyarrow 20)."""
    q = "SELECT MAP {'a': 1, 'b': 2} AS m, [MAP {'x': 3}] AS l, {'s': MAP {'k': 'v'}} AS st, host FROM recordings"
    r = _migprof("query", dataset, q, "--json")
    assert json.loads(r.stdout) == [{"m": {"a": 1, "b": 2}, "l": [{"x": 3}], "st": {"s": {"k": "v"}},
                                     "host": "h1"}], r.stderr


def test_replay_without_a_terminal_says_so_and_exits_2() -> None:
    r = _migprof("replay", RUN)
    assert r.returncode == 2
    assert r.stdout == ""  # no escape codes in the pipe
    assert r.stderr.count("\n") == 1 and "stdout is not a terminal" in r.stderr
    assert "migprof report" in r.stderr  # says what to use instead


def test_replay_with_stderr_redirected_says_so() -> None:
    """Textual draws on stderr: stdout a real terminal (a pty) and stderr a file is refused
    too, rather than escape codes in the file."""
    master, slave = pty.openpty()
    try:
        r = subprocess.run([*MIGPROF, "replay", RUN], cwd=ROOT, stdin=slave, stdout=slave,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 2
    assert r.stderr.startswith("migprof: error: replay: stderr is not a terminal")
    assert "\x1b" not in r.stderr


# ---------------------------------------------------------------- live, on a real QEMU

def _trace_states(q, names: list[str]) -> dict[str, str]:
    return {e["name"]: e["state"] for e in q.cmd("trace-event-get-state", name="*")
            if e["name"] in names}


@pytest.mark.slow
def test_live_without_a_terminal_falls_back_to_the_line_view(request) -> None:
    qp = request.getfixturevalue("pair")
    r = _migprof("live", "-p", str(qp["src"].pid), "--no-bpf", "--no-trace", "-d", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == EventLines.HEADER.split()
    assert "\x1b" not in r.stdout  # no TUI escape codes in the pipe


@pytest.mark.slow
def test_live_line_view_reader_gone_mid_run(request) -> None:
    """`migprof live ... | head -1`: the reader leaves after the header; the next event line
    ends the run by itself: exit 0, nothing about the pipe on stderr, the recording whole
    up to there and QEMU's trace events put back."""
    from profiler.store import read_recording

    qp = request.getfixturevalue("pair")
    watched = ["migrate_set_state", "savevm_state_setup"]
    before = _trace_states(qp["qs"], watched)
    rec = qp["tmp"] / "live.parquet"
    p = subprocess.Popen([*MIGPROF, "live", "-p", str(qp["src"].pid), "--no-tui", "--no-bpf",
                          "--record", str(rec), "--trace-log", str(qp["tmp"] / "trace.log")],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    try:
        assert p.stdout.readline().split() == EventLines.HEADER.split()
        p.stdout.close()  # the reader is gone
        qp["qs"].cmd("migrate", uri=f"unix:{qp['mig']}")
        err = p.stderr.read()
        assert p.wait(timeout=120) == 0, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    for bad in ("Broken pipe", "BrokenPipe", "Exception ignored", "Traceback", "warning"):
        assert bad not in err, err
    df, meta, warnings = read_recording(rec)
    # the batch whose line met the closed pipe is in the recording all the same: an event
    # line, or the query-migrate status line (printed when QMP's status changes)
    printed = PRINTED | {ev.QMP_QUERY_MIGRATE}
    assert not warnings and set(df["event"].astype(str)) & printed, df["event"].value_counts()
    assert _trace_states(qp["qs"], watched) == before
