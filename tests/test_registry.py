"""The event registry: one new row makes a new event, end to end; the tables derived from it.

A test-only event (``migprof_test_pending``, the shape of ``migrate_pending_estimate``, with
the role of an estimate check) is added to ``registry.ROWS`` and the derived caches are
cleared; it must then parse from bare and prefixed log lines, from a simpletrace record
and from a USDT record, be switched on by ``live`` and the lab, and reach the model as
convergence checks.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from profiler import events as ev
from profiler import registry
from profiler.model import build_report
from profiler.pipeline import load
from profiler.sources import qemu_event_names
from profiler.sources import simpletrace as st
from profiler.sources.qemu_log import parse_bytes
from profiler.sources.trace_formats import formats

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_event_names.py"
CONVERGING = ROOT / "tests" / "data" / "synthetic" / "migrations" / "v8.1-converging.log"

TEST_EVENT = "migprof_test_pending"
TEST_ROW = registry.trace(
    "8.0", registry.SRC, "check.estimate", "size=bytes pre=pre_bytes post=post_bytes",
    'migprof_test_pending(uint64_t size, uint64_t pre, uint64_t post) '
    '"test pending size %" PRIu64 " (pre = %" PRIu64 " post=%" PRIu64 ")"')
BODY = "test pending size 5242880 (pre = 5242880 post=0)"


@pytest.fixture
def new_row(monkeypatch: pytest.MonkeyPatch):
    """The registry with TEST_ROW added (caches cleared before and after)."""
    monkeypatch.setattr(registry, "ROWS", (*registry.ROWS, TEST_ROW))
    registry.clear_caches()
    yield TEST_ROW
    monkeypatch.undo()
    registry.clear_caches()


def _fields(row) -> tuple[int, int, int]:
    return int(row["bytes"]), int(row["pre_bytes"]), int(row["post_bytes"])


def test_without_the_row_a_bare_line_is_not_an_event() -> None:
    """The trap the row closes: an unknown name in a bare line is not a trace line."""
    res = parse_bytes(f"{TEST_EVENT} {BODY}\n".encode())
    assert res.events == 0 and res.skipped == 1
    assert TEST_EVENT not in registry.events_to_enable({TEST_EVENT, "migrate_set_state"})


def test_new_row_parses_bare_and_prefixed_lines(new_row) -> None:
    lines = (f"{TEST_EVENT} {BODY}\n"
             f"4242@1700000000.000100:{TEST_EVENT} {BODY}\n"
             f"2025-01-01T00:00:00.000200Z {TEST_EVENT} {BODY}\n")
    res = parse_bytes(lines.encode())
    assert (res.events, res.skipped, res.malformed) == (3, 0, 0), res.warnings
    df = res.frame
    assert (df["event"] == TEST_EVENT).all()
    assert [_fields(r) for _, r in df.iterrows()] == [(5242880, 5242880, 0)] * 3
    assert df["t_ns"].isna().tolist() == [True, False, False]
    assert int(df["t_ns"].iloc[2]) == 1_735_689_600_000_200_000
    assert int(df["tid"].iloc[1]) == 4242


def test_new_row_parses_a_simpletrace_record(new_row) -> None:
    data = (st.encode_header() + st.encode_mapping(7, TEST_EVENT)
            + st.encode_event(7, 5_000_000_000, 99, [5242880, 5242880, 0]))
    res = st.parse_simpletrace(data, file="trace-99")
    assert res.records == 1 and res.malformed == 0, res.warnings
    row = res.frame.iloc[0]
    assert row["event"] == TEST_EVENT and _fields(row) == (5242880, 5242880, 0)


def test_new_row_decodes_from_usdt(new_row) -> None:
    """The USDT path: the probe is wanted, its variant chosen by the note's argument sizes,
    and a record as the BPF program writes it (qemu_usdt.bpf.c) decoded into columns."""
    from profiler.sources.usdt import USDT_DTYPE, Probe, choose_variant, decode, wanted_events

    assert TEST_EVENT in wanted_events()
    variant = choose_variant(TEST_EVENT, (8, 8, 8), formats()[TEST_EVENT])
    assert variant is not None
    recs = np.zeros(1, USDT_DTYPE)
    recs["ts_ns"], recs["tgid"], recs["tid"], recs["id"], recs["nargs"] = 1_000, 99, 100, 0, 3
    recs["args"][0, :3] = [5242880, 5242880, 0]
    df = decode(recs, [Probe(0, TEST_EVENT, variant, (8, 8, 8))], offset_ns=0, side="source")
    ev.validate(df, "usdt")
    assert df["event"].tolist() == [TEST_EVENT] and _fields(df.iloc[0]) == (5242880, 5242880, 0)
    assert df["raw"].iloc[0] == f"{TEST_EVENT}(size=5242880, pre=5242880, post=0)"


def test_new_row_is_switched_on_by_live_and_the_lab(new_row, monkeypatch: pytest.MonkeyPatch) -> None:
    from profiler.lab import qemu as lq
    from profiler.qmpctl import wanted_trace_events

    binary = lq.find_qemu()
    real = lq.available_trace_events(binary)
    # a QEMU built with the new event: the binary's own list plus its name
    monkeypatch.setattr(lq, "available_trace_events", lambda b: real | {TEST_EVENT})
    lab = lq.select_trace_events(binary)
    live = wanted_trace_events(real | {TEST_EVENT})
    assert TEST_EVENT in lab and TEST_EVENT in live
    assert "migrate_set_state" in lab and "migration_transferred_bytes" not in live


def test_new_row_reaches_the_model_as_checks(new_row) -> None:
    """A real 8.1 migration whose estimate checks print as the test event: with the row, the
    report has the same checks (kind estimate) as the original log's."""
    original = CONVERGING.read_text()
    assert "migrate_pending_estimate estimate pending size" in original
    renamed = original.replace("migrate_pending_estimate estimate pending size",
                               f"{TEST_EVENT} test pending size")
    before = build_report(load([str(CONVERGING)]).events)
    res = parse_bytes(renamed.encode(), side="source")
    assert res.malformed == 0 and res.skipped == 0
    after = build_report(res.frame)
    (m0,), (m1,) = before.migrations, after.migrations
    estimates = [c for c in m0.checks if c.kind == "estimate"]
    assert estimates and [c for c in m1.checks if c.kind == "estimate"] == estimates
    assert m1.checks == m0.checks and m1.verdict == m0.verdict


def test_rows_are_checked() -> None:
    bad = registry.trace("8.0", registry.SRC, None, "nosuch=bytes", 'x_event(int size) "%d"')
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "ROWS", (*registry.ROWS, bad))
        registry.clear_caches()
        with pytest.raises(ValueError, match="'nosuch' is not an argument"):
            registry.rows()
    registry.clear_caches()
    with pytest.raises(ValueError, match="not a trace-events line"):
        registry.trace("8.0", registry.SRC, None, "", "x_event int size")


def test_side_role_and_version_tables_follow_the_rows() -> None:
    assert registry.only("status") == "migrate_set_state"
    assert registry.check_kinds() == {"migrate_pending": "pending", "migrate_pending_estimate": "estimate",
                                      "migrate_pending_exact": "exact"}
    assert "migrate_pending_estimate" in registry.side_only(registry.SRC)
    assert "loadvm_state_setup" in registry.side_only(registry.DST)
    assert "migrate_set_state" not in registry.side_only(registry.SRC) | registry.side_only(registry.DST)
    assert dict(registry.introduced())["vmstate_downtime_save"] == (8, 2)
    assert "migrate_pending" not in dict(registry.introduced())  # printed by 7.2 already


# ---------------------------------------------------------------------------- name table


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"_table_{path.stem}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generator_reads_trace_events_of_trees_and_tarballs(tmp_path: Path) -> None:
    tree = tmp_path / "qemu-9.9"
    (tree / "hw" / "foo").mkdir(parents=True)
    (tree / "migration").mkdir()
    (tree / "hw" / "foo" / "trace-events").write_text(
        "# See docs/devel/tracing.rst for syntax documentation.\n\n"
        "# foo.c\n"
        'foo_reset(int id) "id %d"\n'
        'disable foo_hot_path(uint64_t addr) "addr 0x%" PRIx64\n'
        "# not_an_event(int x) \"%d\"\n")
    (tree / "migration" / "trace-events").write_text('migration_fixture_sync(void) ""\n')
    other = tmp_path / "other"
    (other / "ui").mkdir(parents=True)
    (other / "ui" / "trace-events").write_text('vcpu ui_fixture_event(int x) "x %d"\n')
    tarball = tmp_path / "qemu-other.tar.xz"
    with tarfile.open(tarball, "w:xz") as tf:
        tf.add(other, arcname="qemu-other")
    out = tmp_path / "names.py"
    subprocess.run([sys.executable, str(SCRIPT), "--fresh", "-o", str(out), str(tree), str(tarball)],
                   check=True, capture_output=True, text=True, cwd=tmp_path)
    mod = _module(out)
    names = mod.table_names()
    assert {"foo_reset", "foo_hot_path", "migration_fixture_sync", "ui_fixture_event"} <= names
    assert "not_an_event" not in names
    assert registry.trace_names() <= names
    assert mod.SOURCES == ("qemu-9.9: 2 trace-events files, 3 names",
                           "qemu-other.tar.xz: 1 trace-events files, 1 names")
    # a second run without sources keeps every name (none is ever dropped)
    subprocess.run([sys.executable, str(SCRIPT), "-o", str(out)], check=True, capture_output=True)
    assert _module(out).table_names() == names


def test_generator_refuses_a_source_without_trace_events(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, str(SCRIPT), "--fresh", "-o", str(tmp_path / "n.py"),
                        str(tmp_path / "empty")], capture_output=True, text=True)
    assert r.returncode != 0 and "no trace-events file" in r.stderr


def test_committed_table_is_the_generated_one() -> None:
    """Every registry row's name is in the committed table, and the file is exactly what the
    script writes from its names plus the registry's (else: run scripts/gen_event_names.py)."""
    gen = _module(SCRIPT)
    table = qemu_event_names.table_names()
    missing = registry.trace_names() - table
    assert not missing, f"not in the name table (run scripts/gen_event_names.py): {sorted(missing)}"
    text = Path(qemu_event_names.__file__).read_text()
    assert gen.render(table | registry.trace_names(), qemu_event_names.SOURCES) == text
    # what the Debian QEMU binaries print outside any trace-events file is still known
    assert {"qmp_enter_query_migrate", "qmp_exit_query_migrate"} <= table


# ---------------------------------------------------------------------------- schema v1


@pytest.mark.parametrize("name,run", [("7.2-converges", "real/7.2-converges"),
                                      ("vfio-converges", "real-vfio/converges")])
def test_v1_recording_reads_as_a_fresh_import(name: str, run: str) -> None:
    """A recording made by the v1 code, upgraded on read, holds what importing the same run
    with this code gives, column for column (the overloaded values in their named columns)."""
    from profiler import store

    df, meta, warnings = store.read_recording(ROOT / "tests" / "data" / "recordings" / f"{name}.v1.parquet")
    assert meta["upgraded_from"] == 1 and not warnings
    fresh = load([str(ROOT / "tests" / "data" / run)]).events
    assert len(df) == len(fresh)
    # ram_load_complete's sequence number is read since the what-if's path rate: the v1 code
    # kept the line without it
    newer = (fresh["event"].astype(str) == "ram_load_complete").to_numpy()
    assert fresh.loc[newer, "count"].notna().all() and df.loc[newer, "count"].isna().all()
    for col in ev.COLUMNS:
        a, b = df[col], fresh[col]
        if col == "file":  # imported from another working directory
            a, b = (s.astype("string").str.rsplit("/", n=1).str[-1] for s in (a, b))
        if col == "count":
            a, b = a[~newer], b[~newer]
        assert a.astype("string").fillna("<NA>").tolist() == b.astype("string").fillna("<NA>").tolist(), col
    moved = {"7.2-converges": ("compat_bytes", "dirty_pages", "dirty_syncs", "section_id"),
             "vfio-converges": ("switchover_bw_bytes_per_ms", "dirty_pages", "dirty_syncs", "section_id",
                                "instance_id", "data_fd", "requested_bytes")}[name]
    for col in moved:
        assert df[col].notna().any(), col
    counted = set(df.loc[df["count"].notna(), "event"].astype(str))
    assert counted <= {ev.BPF_LOST, ev.SIMPLETRACE_DROPPED, "multifd_send_thread_end"}, counted


def test_upgrade_leaves_v2_rows_alone() -> None:
    fresh = load([str(ROOT / "tests" / "data" / "real-vfio" / "converges")]).events
    again = ev.upgrade_v1(fresh)
    assert again is fresh  # nothing to move: not even a copy


def test_v1_json_lines_are_upgraded(tmp_path: Path) -> None:
    """An events.jsonl written by the v1 code (a lab run directory) reads with v2 columns."""
    from profiler.sources.jsonl import read_events_jsonl

    p = tmp_path / "events.jsonl"
    p.write_text(
        '{"event": "qmp_migration_pass", "count": 3, "side": "source", "origin": "qmp", "t_ns": 1}\n'
        '{"event": "sockdiag_sample", "count": 900, "bytes": 800, "detail": "{\\"cwnd\\": 10}",'
        ' "side": "source", "origin": "sockdiag", "t_ns": 2}\n'
        '{"event": "bpf_lost", "count": 5, "side": "unknown", "origin": "bpf", "t_ns": 3}\n')
    for df in (read_events_jsonl(p), load([str(p)]).events):
        ev.validate(df, "jsonl")
        by = df.set_index("event")
        assert by.loc["qmp_migration_pass", "dirty_syncs"] == 3
        assert by.loc["sockdiag_sample", "detail"] == '{"bytes_sent": 900, "cwnd": 10}'
        assert by.loc["bpf_lost", "count"] == 5
        assert df.loc[df["event"] != "bpf_lost", "count"].isna().all()


def test_v1_devname_rows_lose_the_repeated_fd() -> None:
    """v1 put the returned device fd of VFIO_GROUP_GET_DEVICE_FD in count as well as ret."""
    import pandas as pd

    v1 = ev.conform(pd.DataFrame({
        "event": [ev.BPF_IOCTL, ev.BPF_IOCTL], "count": pd.array([12, 30], dtype="Int64"),
        "ret": pd.array([12, 0], dtype="Int64"),
        "detail": ["VFIO_GROUP_GET_DEVICE_FD", "SET MIG_DEVICE_STATE"]}))
    v2 = ev.upgrade_v1(v1)
    assert v2["data_fd"].tolist()[1] == 30 and pd.isna(v2["data_fd"].iloc[0])
    assert v2["ret"].tolist() == [12, 0] and v2["count"].isna().all()
