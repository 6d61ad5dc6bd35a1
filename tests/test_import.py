"""`migprof import`: real QEMU logs and lab run directories into recordings."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REAL

from profiler import events as ev
from profiler import pipeline, store
from profiler.cli import main
from profiler.model.results import to_json
from profiler.pipeline import load


@pytest.mark.parametrize("run", ["7.2-converges", "10.0-downtime-raise", "7.2-cancel-retry",
                                 "10.0-no-timestamps", "7.2-destination-dies"])
def test_import_run_dir_keeps_every_event(run: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r.parquet"
    assert main(["import", str(REAL / run), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().err
    ref = load([str(REAL / run)])
    df, meta, warnings = store.read_recording(out)
    assert warnings == []
    ev.validate(df)
    assert len(df) == len(ref.events)
    assert df["event"].astype(str).value_counts().to_dict() == ref.events["event"].astype(str).value_counts().to_dict()
    assert meta["qemu_version"].startswith(run.split("-")[0])
    assert meta["imported_from"] == [str(REAL / run)]
    assert meta["run"]["scenario"]
    # the stored summary is the report of the run directory itself
    stored, fresh = pipeline.cached_run(str(out)), pipeline.load_run(str(REAL / run))
    assert stored.from_summary and not fresh.from_summary
    assert to_json(stored.report)["migrations"] == to_json(fresh.report)["migrations"]


def test_import_two_logs_one_recording(tmp_path: Path) -> None:
    out = tmp_path / "both.parquet"
    run = REAL / "10.0-converges"
    assert main(["import", str(run / "source.log"), str(run / "destination.log"), "-o", str(out)]) == 0
    df, meta, _ = store.read_recording(out)
    assert set(df["side"].astype(str)) == {"source", "destination"}
    assert set(df["origin"].astype(str)) == {"qemu-log"}
    assert meta["sources"] == ["qemu-log"]


def test_recording_reimports_as_itself(tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert main(["import", str(REAL / "7.2-converges"), "-o", str(a)]) == 0
    assert main(["import", str(a), "-o", str(b)]) == 0
    assert len(store.read_recording(a)[0]) == len(store.read_recording(b)[0])


@pytest.mark.parametrize("content", [b"", b"just some text\nno trace here\n", b"\x00\x01\x02" * 100])
def test_import_unusable_input_exits_2(content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.log"
    bad.write_bytes(content)
    out = tmp_path / "out.parquet"
    assert main(["import", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("migprof: error: ") and str(bad) in err[-1]
    assert not out.exists() and not out.with_name(out.name + store.PARTIAL_SUFFIX).exists()


def test_import_to_unwritable_place_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["import", str(REAL / "7.2-converges"), "-o", str(blocker / "sub" / "r.parquet")]) == 2
    assert "migprof: error:" in capsys.readouterr().err
