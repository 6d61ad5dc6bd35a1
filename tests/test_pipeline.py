"""pipeline.load: dispatch by content, one timeline for source + destination, bad input."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from profiler import events
from profiler.errors import EXIT_USAGE, InputError
from profiler.pipeline import load, sniff
from profiler.sources import simpletrace as st

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "tests" / "data" / "real"
RUN_72 = REAL / "7.2-converges"
RUN_10 = REAL / "10.0-converges"


def test_lab_run_directory_lands_on_one_timeline() -> None:
    L = load([str(RUN_10)])
    df = L.events
    events.validate(df)
    assert L.malformed == 0 and L.skipped == 0
    assert set(df["side"]) == {"source", "destination"}
    assert {"qemu-log", "qmp"} <= set(df["origin"])
    assert L.meta["run"]["scenario"] == "converges"
    t = df["t_ns"].dropna()
    assert t.is_monotonic_increasing
    # the two logs overlap in time: one migration seen from both ends
    src = df[(df["side"] == "source") & (df["origin"] == "qemu-log")]["t_ns"]
    dst = df[(df["side"] == "destination") & (df["origin"] == "qemu-log")]["t_ns"]
    assert src.min() <= dst.max() and dst.min() <= src.max()
    assert [i["kind"] for i in L.inputs] == ["qemu-log", "qemu-log", "jsonl"]


def test_source_and_destination_logs_given_together_merge() -> None:
    L = load([str(RUN_72 / "destination.log"), str(RUN_72 / "source.log")])
    df = L.events
    assert set(df["side"]) == {"source", "destination"}
    assert df["t_ns"].is_monotonic_increasing
    n_src = len((RUN_72 / "source.log").read_text().splitlines())
    n_dst = len((RUN_72 / "destination.log").read_text().splitlines())
    assert len(df) == n_src + n_dst == L.lines


def test_sides_override_detection(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("migrate_set_state new state active\n")
    assert set(load([str(p)]).events["side"]) == {"unknown"}
    assert set(load([str(p)], sides=["destination"]).events["side"]) == {"destination"}
    with pytest.raises(InputError, match="unknown side"):
        load([str(p)], sides=["left"])


def test_gzip_log_in_run_dir(tmp_path: Path) -> None:
    d = tmp_path / "run"
    shutil.copytree(RUN_72, d)
    (d / "source.log.gz").write_bytes(gzip.compress((d / "source.log").read_bytes()))
    (d / "source.log").unlink()
    L = load([str(d)])
    assert L.malformed == 0 and "source" in set(L.events["side"])
    assert any(i["path"].endswith("source.log.gz") for i in L.inputs)


def test_simpletrace_dispatch(tmp_path: Path) -> None:
    p = tmp_path / "trace-1234"
    p.write_bytes(st.encode_header() + st.encode_mapping(0, "migrate_set_state")
                  + st.encode_event(0, 10, 1234, ["active"]))
    assert sniff(str(p)) == "simpletrace"
    L = load([str(p)])
    assert list(L.events["state"]) == ["active"] and set(L.events["origin"]) == {"simpletrace"}


def test_jsonl_rows(tmp_path: Path) -> None:
    p = tmp_path / "rows.jsonl"
    p.write_text(json.dumps({"t_ns": 5, "event": "qmp_migration", "state": "active", "origin": "qmp",
                             "side": "source"}) + "\n" + "not json\n"
                 + json.dumps({"t_ns": 3, "event": "lab_mark", "detail": "{}"}) + "\n")
    L = load([str(p)])
    assert list(L.events["event"]) == ["lab_mark", "qmp_migration"]
    assert L.malformed == 1 and any(":2:" in w for w in L.warnings)


def test_recording_dispatch(tmp_path: Path) -> None:
    from profiler import store

    src = load([str(RUN_72 / "source.log")]).events
    p = tmp_path / "rec.parquet"
    store.frame_to_table(src).to_pandas()  # the store's own conversion must accept our frames
    import pyarrow.parquet as pq

    pq.write_table(store.frame_to_table(src), p)
    assert sniff(str(p)) == "parquet"
    try:
        L = load([str(p)])
    except InputError as e:  # the store may insist on its own metadata; then it must say so
        assert str(p) in str(e)
    else:
        assert len(L.events) == len(src)


@pytest.mark.parametrize(("make", "msg"), [
    (lambda d: d / "missing.log", "no such file"),
    (lambda d: (d / "empty.log").write_bytes(b"") or d / "empty.log", "empty file"),
    (lambda d: (d / "junk.bin").write_bytes(bytes(range(256)) * 8) and d / "junk.bin", "binary"),
    (lambda d: (d / "qemu.log").write_text("qemu-system-x86_64: warning: x\nhello\n") and d / "qemu.log",
     "no QEMU trace lines"),
    (lambda d: (d / "sub").mkdir() or d / "sub", "directory holds no traces"),
])
def test_unusable_inputs_name_the_file(tmp_path: Path, make, msg: str) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError, match=msg) as ei:
        load([str(path)])
    assert str(path) in str(ei.value)
    assert ei.value.exit_code == EXIT_USAGE


def test_partly_bad_input_keeps_what_is_sound(tmp_path: Path) -> None:
    bad = tmp_path / "gone.log"
    log = tmp_path / "src.log"
    log.write_text("1@1.000000:migrate_set_state new state active\n"
                   "1@1.000001:migrate_pending_exact exact pending size x (pre = 1 post=0)\n"
                   "qemu: other output\n")
    L = load([str(bad), str(log)])
    assert len(L.events) == 2 and L.malformed == 1 and L.skipped == 1
    assert L.warnings[0].startswith(str(bad))
    assert any(w.startswith(f"{log}:2:") for w in L.warnings)


def test_truncated_simpletrace_keeps_records_with_a_warning(tmp_path: Path) -> None:
    p = tmp_path / "trace-9"
    rec = st.encode_event(0, 10, 9, ["setup"])
    p.write_bytes(st.encode_header() + st.encode_mapping(0, "migrate_set_state") + rec + rec[:-3])
    L = load([str(p)])
    assert len(L.events) == 1
    assert any("truncated" in w and str(p) in w for w in L.warnings)


def test_nothing_given() -> None:
    with pytest.raises(InputError):
        load([])


def test_frame_types_survive_concat_with_other_sources() -> None:
    L = load([str(REAL / "7.2-cancel-retry")])
    df = L.events
    events.validate(df)
    assert isinstance(df["event"].dtype, pd.CategoricalDtype)
    assert df["event"].isin(["qmp_migration", "migrate_set_state"]).any()


@pytest.mark.parametrize("run", ["7.2-cancel-retry", "10.0-downtime-raise", "10.0-no-timestamps"])
def test_timeline_order_is_events_sort_timeline(run: str) -> None:
    from profiler.pipeline import sort_timeline
    from profiler.sources.qemu_log import read_log

    d = REAL / run
    src = read_log(d / "source.log").frame
    dst = read_log(d / "destination.log").frame
    for frame in (src, dst, events.concat([src, dst]), events.concat([dst, src])):
        pd.testing.assert_frame_equal(sort_timeline(frame), events.sort_timeline(frame))
