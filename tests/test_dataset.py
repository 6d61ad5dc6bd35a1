"""The fleet dataset: `import --dataset` of real runs, `migprof query` on DuckDB, the
derived tables against the report, atomic adds, foreign files, mixed versions, upgrade,
and the per-group samples compare takes from it."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from profiler import dataset, pipeline, store
from profiler import events as ev
from profiler.cli import main
from profiler.dataset import groups, scan, sql
from profiler.dataset import schema as S
from profiler.errors import InputError, MigprofError
from profiler.model import compare as cmp
from profiler.views.report import to_json

DATA = Path(__file__).resolve().parent / "data"
# (run directory, host): two QEMU releases, a VFIO device (mtty), two migrations in one run
RUNS = [("real/7.2-converges", "hv1"), ("real/7.2-cancel-retry", "hv1"),
        ("real/10.0-downtime-raise", "hv2"), ("real/10.0-destination-dies", "hv2"),
        ("real-vfio/converges", "hv3"), ("real-vfio/multifd", "hv3")]


def query(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    rc = main(["query", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def rows(capsys: pytest.CaptureFixture, ds: Path, q: str) -> list[dict]:
    rc, out, err = query(capsys, str(ds), q, "--json")
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset made by `migprof import --dataset` of real runs under three hosts."""
    d = tmp_path_factory.mktemp("fleet") / "ds"
    for run, host in RUNS:
        assert main(["import", str(DATA / run), "--dataset", str(d), "--host", host]) == 0
    return d


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One recording made with `migprof import` from a real run."""
    p = tmp_path_factory.mktemp("rec") / "r.parquet"
    assert main(["import", str(DATA / "real/7.2-converges"), "-o", str(p)]) == 0
    return p


def copy_ds(ds: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(ds, tmp_path / "ds"))


def _report_json(path: Path) -> dict:
    """The report of one input as `report --json` gives it (what the dataset derives from)."""
    return to_json(pipeline.load_run(str(path)).report)


def reports() -> dict[str, dict]:
    return {run: _report_json(DATA / run) for run, _ in RUNS}


def test_migrations_table_holds_the_reports_fields(ds: Path, capsys: pytest.CaptureFixture) -> None:
    got = rows(capsys, ds, "SELECT r.source_path, m.* FROM migrations m JOIN recordings r USING (recording) "
               "ORDER BY m.host, m.start_ns NULLS LAST, m.migration")
    assert len(got) == sum(len(r["migrations"]) for r in reports().values())
    by_host = {h: [r for r in got if r["host"] == h] for _, h in RUNS}
    for run, host in RUNS:
        rep = _report_json(DATA / run)
        mine = [r for r in by_host[host] if r["migration"] < len(rep["migrations"])]
        for m in rep["migrations"]:
            hit = [r for r in mine if r["migration"] == m["index"] and r["start_ns"] == m["start_ns"]
                   and r["outcome"] == m["outcome"]]
            assert len(hit) == 1, (run, m["index"])
            r = hit[0]
            for k in ("total_ms", "downtime_ms", "setup_ms", "stopcopy_ms", "dirty_syncs",
                      "transferred_bytes", "vfio_transferred_bytes", "dest_outcome", "converged",
                      "verdict", "downtime_limit_ms", "end_ns"):
                assert r[k] == m[k], (run, k)
            assert r["checks"] == (len(m["checks"]) or None)
            assert r["dirty_rate_bytes_per_s"] == m["verdict_detail"]["dirty_rate_bytes_per_s"]
    # the exact release from the recording's metadata; the VFIO lab's mdev driver
    assert {r["qemu_version"] for r in got} == {"7.2.22", "10.0.2"}
    assert {r["host"]: r["device_driver"] for r in got} == {"hv1": None, "hv2": None, "hv3": "mtty"}
    assert all(r["date"] and len(r["date"]) == 10 for r in got)


def test_checks_and_devices_tables(ds: Path, capsys: pytest.CaptureFixture) -> None:
    rep = _report_json(DATA / "real/10.0-downtime-raise")["migrations"][0]
    chk = rows(capsys, ds, "SELECT c.* FROM checks c JOIN migrations m USING (recording, migration) "
               "WHERE m.host = 'hv2' AND m.outcome = 'completed' ORDER BY c.check")
    assert [c["pending_bytes"] for c in chk] == [c["pending_bytes"] for c in rep["checks"]]
    assert [c["threshold_bytes"] for c in chk] == [c["threshold_bytes"] for c in rep["checks"]]
    assert [c["device_pending_bytes"] for c in chk] == [c["devices"] or None for c in rep["checks"]]
    vfio = rows(capsys, ds, "SELECT * FROM devices WHERE kind = 'vfio' AND host = 'hv3' ORDER BY device")
    assert vfio and {d["driver"] for d in vfio} == {"mtty"}
    src = [d for d in vfio if d["side"] == "source"]
    assert {(d["precopy_bytes"], d["stopcopy_bytes"]) for d in src} >= {(24, 72)}  # mtty's known bytes
    assert all(d["bytes_by_phase"] for d in src)


def test_events_file_of_a_unit_is_a_recording(ds: Path) -> None:
    s = scan.scan(ds)
    f = next(f for f in s.files["events"] if f.host == "hv1")
    df, meta, warnings = store.read_recording(f.path)
    ev.validate(df)
    assert warnings == [] and meta["imported_from"]
    n = pq.read_metadata(str(s.root / "recordings" / f"host={f.host}" / f"date={f.date}" / f"{f.unit}.parquet"))
    assert n.num_rows == 1
    assert len(df) == pq.read_metadata(str(f.path)).num_rows


def test_query_output_forms(ds: Path, capsys: pytest.CaptureFixture) -> None:
    q = "SELECT host, qemu_version, count(*) AS n, median(downtime_ms) AS p50 FROM migrations GROUP BY ALL ORDER BY ALL"
    js = rows(capsys, ds, q)
    assert [(r["host"], r["qemu_version"], r["n"]) for r in js] == [
        ("hv1", "7.2.22", 3), ("hv2", "10.0.2", 2), ("hv3", "10.0.2", 2)]
    rc, out, _ = query(capsys, str(ds), q, "--csv")
    assert rc == 0
    back = list(csv.DictReader(io.StringIO(out)))
    assert [(r["host"], int(r["n"])) for r in back] == [(r["host"], r["n"]) for r in js]
    rc, out, _ = query(capsys, str(ds), q)
    assert rc == 0 and "hv3" in out and out.rstrip().endswith(f"{len(js)} rows")


@pytest.mark.parametrize("q,msg", [("SELEC 1", "Parser Error"),
                                   ("SELECT nope FROM migrations", "Binder Error"),
                                   ("SELECT * FROM nosuchtable", "Catalog Error")])
def test_sql_error_is_duckdbs_message_exit_2(ds: Path, q: str, msg: str, capsys: pytest.CaptureFixture) -> None:
    rc, out, err = query(capsys, str(ds), q)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"migprof: error: query: {msg}")


def test_not_a_dataset_exit_2(rec: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = query(capsys, str(tmp_path / "missing"), "SELECT 1")
    assert rc == 2 and "missing: no such dataset directory" in err
    (tmp_path / "x.log").write_text("not a dataset")
    rc, _, err = query(capsys, str(tmp_path), "SELECT 1")
    assert rc == 2 and "not a migprof dataset" in err
    rc, _, err = query(capsys, str(tmp_path / "x.log"), "SELECT 1")
    assert rc == 2 and "not a directory" in err
    # nothing is written into a directory that is not a dataset
    with pytest.raises(InputError, match="not a migprof dataset"):
        dataset.add_recording(tmp_path, rec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.log"]


def test_empty_dataset_has_every_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scan.check_root(tmp_path / "new", create=True)
    got = rows(capsys, tmp_path / "new", "SELECT (SELECT count(*) FROM migrations) AS m, "
               "(SELECT count(*) FROM events) AS e, (SELECT count(*) FROM devices WHERE host = 'x') AS d")
    assert got == [{"m": 0, "e": 0, "d": 0}]


def test_adding_again_replaces_the_unit(ds: Path, rec: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    d = copy_ds(ds, tmp_path)
    before = scan.check(d)
    a = dataset.add_recording(d, rec, host="hv1")
    b = dataset.add_recording(d, rec, host="hv1")
    assert a.unit == b.unit and a.files == b.files
    after = scan.check(d)
    assert after.scan.units == before.scan.units  # the same events as the import: the same unit
    assert after.ok
    dataset.add_recording(d, rec, host="hv9")  # the same recording under another host
    c = scan.check(d)
    assert not c.ok and c.duplicates == {a.unit: 2}
    rc, out, _ = query(capsys, str(d), "--check")
    assert rc == 2 and f"recording {a.unit} is in 2 units" in out


def test_batch_add_is_one_unit_per_partition(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recs = []
    for run, _ in RUNS[:4]:
        p = tmp_path / (run.replace("/", "_") + ".parquet")
        assert main(["import", str(DATA / run), "-o", str(p)]) == 0
        recs.append(p)
    added = dataset.add_recordings(tmp_path / "b", recs, host="hv1", date="2026-01-02")
    assert len(added) == 1 and len(added[0].recordings) == 4 and added[0].unit.startswith("b-")
    for p in recs:
        dataset.add_recording(tmp_path / "s", p, host="hv1", date="2026-01-02")
    q = ("SELECT recording, migration, outcome, downtime_ms, total_ms, checks FROM migrations "
         "ORDER BY recording, migration")
    assert rows(capsys, tmp_path / "b", q) == rows(capsys, tmp_path / "s", q)
    n = rows(capsys, tmp_path / "b", "SELECT recording, count(*) AS n FROM events GROUP BY 1 ORDER BY 1")
    assert n == rows(capsys, tmp_path / "s", "SELECT recording, count(*) AS n FROM events GROUP BY 1 ORDER BY 1")


def test_failed_add_leaves_nothing_readers_take(ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = copy_ds(ds, tmp_path)
    n0 = rows(capsys, d, "SELECT count(*) AS n FROM migrations")[0]["n"]
    # the devices partition cannot be made (a file stands where its directory goes)
    (d / "devices" / "host=hvX").write_text("in the way")
    with pytest.raises(OSError):
        dataset.add_recording(d, next(d.glob("events/host=hv1/*/*.parquet")), host="hvX")
    assert not list(d.rglob("*.tmp"))
    assert not list(d.glob("*/host=hvX/*/*.parquet"))
    assert rows(capsys, d, "SELECT count(*) AS n FROM migrations")[0]["n"] == n0


def test_unfinished_add_and_temp_files_are_not_read(ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = copy_ds(ds, tmp_path)
    n0 = rows(capsys, d, "SELECT count(*) AS n, count(DISTINCT recording) AS r FROM migrations")[0]
    ev0 = rows(capsys, d, "SELECT count(DISTINCT recording) AS r FROM events")[0]["r"]
    # what a writer killed between its renames leaves: events and recordings renamed, the
    # rest not (migrations is renamed last)
    victim = next(d.glob("migrations/host=hv2/*/*.parquet"))
    gone = rows(capsys, d, f"SELECT count(*) AS n FROM migrations WHERE recording = '{victim.stem}'")[0]["n"]
    part = Path(victim.parent.parent.name) / victim.parent.name / victim.name
    for t in ("checks", "devices", "migrations"):
        (d / t / part).unlink()
    # and what one killed while writing leaves: a temp file
    (d / "events" / part).with_name(f".{victim.stem}x.parquet.tmp").write_bytes(b"PAR1 half written")
    assert rows(capsys, d, "SELECT count(*) AS n FROM migrations")[0]["n"] == n0["n"] - gone
    rc, out, err = query(capsys, str(d), "SELECT count(DISTINCT recording) AS r FROM events", "--json")
    assert rc == 0 and json.loads(out)[0]["r"] == ev0 - 1
    assert "missing from some tables" in err and victim.stem in err
    c = scan.check(d)
    assert c.scan.incomplete and len(c.scan.temp) == 1 and not c.ok
    # adding the recording again completes the unit
    dataset.add_recording(d, d / "events" / part, host="hv2", date=victim.parent.name.removeprefix("date="))
    assert rows(capsys, d, "SELECT count(*) AS n, count(DISTINCT recording) AS r FROM migrations")[0] == n0
    assert rows(capsys, d, "SELECT count(DISTINCT recording) AS r FROM events")[0]["r"] == ev0


def test_foreign_files_are_named_skipped_counted(ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = copy_ds(ds, tmp_path)
    part = next(d.glob("migrations/host=hv1/date=*"))
    pq.write_table(pa.table({"a": [1, 2]}), part / "foreign.parquet")
    unit = next(part.glob("*.parquet")).name
    pq.write_table(pa.table({"b": ["x"]}), d / "checks" / part.parent.name / part.name / unit)  # unit-named
    (d / "stray.parquet").write_bytes(b"PAR1")
    (part / "notes.txt").write_text("hello")
    rc, out, err = query(capsys, str(d), "SELECT count(*) AS n FROM migrations m JOIN checks c "
                         "USING (recording, migration)", "--json")
    assert rc == 0, err
    for name in ("foreign.parquet", "stray.parquet", "notes.txt", f"checks/{part.parent.name}/{part.name}/{unit}"):
        assert name in err, name
    assert "skipped 4 foreign file(s)" in err
    assert "not part of a migprof dataset" in err
    rc, out, _ = query(capsys, str(d), "--check", "--json")
    got = json.loads(out)
    assert rc == 2 and len(got["foreign"]) == 4


def _as_v0(events_file: Path) -> None:
    """Rewrite a dataset's events file as an older migprof would have: event schema v0."""
    df, meta, _ = store.read_recording(events_file)
    ids = pq.read_table(str(events_file), columns=["recording"])["recording"]
    df = df.drop(columns=["clock", "clock_ns"]).rename(
        columns={"t_ns": "ts_ns", "event": "name", "bytes": "value", "raw": "text"})
    df["side"] = df["side"].astype("string").replace({"source": "src", "destination": "dst"}).astype("category")
    t = pa.Table.from_pandas(df, preserve_index=False)
    t = t.add_column(0, "recording", ids)
    md = pq.read_schema(str(events_file)).metadata
    md = {**md, store.VERSION_KEY: b"0", store.META_KEY: json.dumps(meta).encode()}
    pq.write_table(t.replace_schema_metadata(md), str(events_file))


def _set_dataset_version(path: Path, version: int) -> None:
    t = pq.read_table(str(path))
    md = dict(t.schema.metadata)
    info = json.loads(md[S.FILE_KEY])
    info["version"] = version
    md[S.FILE_KEY] = json.dumps(info).encode()
    pq.write_table(t.replace_schema_metadata(md), str(path))


def test_mixed_versions_are_refused_then_upgraded(ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = copy_ds(ds, tmp_path)
    q = ("SELECT m.recording, m.migration, m.downtime_ms, m.total_ms, m.dirty_syncs, "
         "(SELECT count(*) FROM events e WHERE e.recording = m.recording) AS events "
         "FROM migrations m ORDER BY 1, 2")
    before = rows(capsys, d, q)
    ev_file = next(d.glob("events/host=hv1/*/*.parquet"))
    _as_v0(ev_file)
    mig_file = next(d.glob("migrations/host=hv2/*/*.parquet"))
    _set_dataset_version(mig_file, 0)
    rc, out, err = query(capsys, str(d), q)
    assert rc == 2 and out == ""
    line = err.strip()
    assert line.startswith(f"migprof: error: {d}: mixed schema versions") and "--upgrade" in line
    assert "\n" not in line
    # a query that does not name the old tables is not held up by them
    assert rows(capsys, d, "SELECT count(*) AS n FROM recordings")[0]["n"] == len(RUNS)
    rc, _, err = query(capsys, str(d), "--upgrade")
    assert rc == 0 and "upgraded 2 unit(s)" in err
    assert rows(capsys, d, q) == before
    assert pq.read_schema(str(ev_file)).metadata[store.VERSION_KEY] == str(ev.SCHEMA_VERSION).encode()
    assert scan.check(d).ok


def _as_dataset_v1(d: Path) -> None:
    """Rewrite a dataset as migprof's dataset v1 wrote it: no migrations.view, version 1 in
    every file and in the marker."""
    for f in d.rglob("*.parquet"):
        t = pq.read_table(str(f), partitioning=None)
        if "view" in t.column_names and f.parts[-4] == "migrations":
            t = t.drop_columns(["view"])
        md = dict(t.schema.metadata)
        info = json.loads(md[S.FILE_KEY])
        md[S.FILE_KEY] = json.dumps({**info, "version": 1}).encode()
        pq.write_table(t.replace_schema_metadata(md), str(f))
    m = json.loads((d / S.MARKER).read_text())
    (d / S.MARKER).write_text(json.dumps({**m, "version": 1}))


def test_dataset_v1_without_view_is_upgraded(ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = copy_ds(ds, tmp_path)
    q = "SELECT recording, migration, view, outcome, downtime_ms, checks FROM migrations ORDER BY 1, 2"
    before = rows(capsys, d, q)
    assert {r["view"] for r in before} == {"qemu"}
    _as_dataset_v1(d)
    assert "view" not in pq.read_schema(str(next(d.glob("migrations/*/*/*.parquet")))).names
    rc, out, err = query(capsys, str(d), q)
    assert rc == 2 and out == "" and "(dataset v1 (this migprof: v2))" in err and "--upgrade" in err
    rc, _, err = query(capsys, str(d), "--upgrade")
    assert rc == 0 and f"upgraded {len(RUNS)} unit(s)" in err
    assert rows(capsys, d, q) == before
    assert json.loads((d / S.MARKER).read_text())["version"] == S.VERSION == 2
    assert scan.check(d).ok


def test_newer_versions_are_refused(ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = copy_ds(ds, tmp_path)
    f = next(d.glob("devices/host=hv1/*/*.parquet"))
    _set_dataset_version(f, S.VERSION + 1)
    rc, _, err = query(capsys, str(d), "SELECT count(*) FROM devices")
    assert rc == 2 and str(f) in err and "is newer than this migprof reads" in err
    marker = d / S.MARKER
    marker.write_text(json.dumps({"format": S.FORMAT, "version": S.VERSION + 1}))
    rc, _, err = query(capsys, str(d), "SELECT 1")
    assert rc == 2 and "dataset version" in err and "upgrade migprof" in err


@pytest.mark.parametrize("host", ["a/b", "host=x", "", "-lead"])
def test_bad_host_is_refused(host: str, rec: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="host"):
        dataset.add_recording(tmp_path / "d", rec, host=host)
    assert not list((tmp_path / "d").glob("*/host=*"))


def test_import_dataset_needs_an_output(capsys: pytest.CaptureFixture) -> None:
    assert main(["import", str(DATA / "real/7.2-converges")]) == 2
    assert "-o FILE, --dataset DIR" in capsys.readouterr().err


# ---------------------------------------------------------------------------- compare over a dataset


def test_group_samples_are_compares_samples(ds: Path) -> None:
    t = sql.compare_tables(ds)
    assert t.warnings == () and t.checks is None
    got = groups.group_samples(t.migrations, t.devices, "qemu_version", outcome="all")
    assert [g.label for g in got] == ["7.2.22", "10.0.2"]  # release order, not text order
    runs = {run: pipeline.load_run(str(DATA / run)) for run, _ in RUNS}
    for g, prefix in zip(got, ("real/7.2", "real/10.0"), strict=True):
        want = cmp.make_group("x", [r for k, r in runs.items() if k.startswith(prefix)
                                   or (prefix == "real/10.0" and k.startswith("real-vfio"))], "all")
        key = lambda s: (s.get("total_ms"), s.get("downtime_ms"))  # noqa: E731
        assert sorted((s.metrics for s in g.samples), key=key) == sorted((w.metrics for w in want.samples), key=key)
        assert g.outcomes == want.outcomes
        assert g.selection == cmp.Selection("", "qemu_version", g.label, None)
        assert len(g.inputs) == len(want.inputs)  # one recording per run
    # compare's default: completed migrations only
    done = groups.group_samples(t.migrations, t.devices, "host")
    assert [g.label for g in done] == ["hv1", "hv2", "hv3"]
    assert [len(g.samples) for g in done] == [2, 1, 2]
    assert all(g.hosts == (g.label,) for g in done)


def test_group_samples_where_and_null_group(ds: Path) -> None:
    t = sql.compare_tables(ds, "host <> 'hv2' AND total_ms > 0", checks=True)
    got = groups.group_samples(t.migrations, t.devices, "device_driver", outcome="all",
                               checks=t.checks, dataset=str(ds), where="host <> 'hv2' AND total_ms > 0")
    assert [g.label for g in got] == ["mtty", groups.NO_VALUE]
    assert len(got[0].samples) == 2 and all("device." in " ".join(s.metrics) for s in got[0].samples)
    assert got[1].selection.key is None and got[1].selection.text.startswith("device_driver=(none) where")
    base, cand = groups.pick_sides(got)
    assert (base.label, cand.label) == ("mtty", groups.NO_VALUE)
    base, cand = groups.pick_sides(got, base=groups.NO_VALUE)
    assert (base.label, cand.label) == (groups.NO_VALUE, "mtty")
    # each sample's checks are its migration's, as the report has them (the HTML's curves)
    rep = {run: pipeline.load_run(str(DATA / run)).report for run, _ in RUNS}
    want = sorted(tuple((c.pending_bytes, c.threshold_bytes, c.t_ms) for c in m.checks)
                  for run, host in RUNS if host != "hv2" for m in rep[run].migrations if (m.total_ms or 0) > 0)
    have = sorted(tuple((c.pending_bytes, c.threshold_bytes, c.t_ms) for c in s.checks)
                  for g in got for s in g.samples)
    assert have == want and any(have)


def test_group_errors(ds: Path) -> None:
    t = sql.compare_tables(ds)
    mig, dev = t.migrations, t.devices
    three = groups.group_samples(mig, dev, "host")
    with pytest.raises(MigprofError, match="3 group"):
        groups.pick_sides(three)
    with pytest.raises(MigprofError, match="no such host"):
        groups.pick_sides(three, base="hv1", candidate="nope")
    with pytest.raises(MigprofError, match="one of"):
        groups.group_samples(mig, dev, "kernel")
    with pytest.raises(sql.SQLError, match="--where: .*Binder Error"):
        sql.compare_tables(ds, "nope = 1")


# ---------------------------------------------------------------------------- compare DATASET --by


def _compare(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["compare", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def ds2(ds: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataset of real runs with every recording added once more under host hv9: 6
    migrations of QEMU 7.2 and 8 of 10.0, enough for the U test on both sides."""
    import shutil

    d = Path(shutil.copytree(ds, tmp_path_factory.mktemp("fleet2") / "ds"))
    for f in sorted(d.glob("events/host=*/*/*.parquet")):
        dataset.add_recording(d, f, host="hv9")
    return d


def _sides() -> tuple[list[str], list[str]]:
    """The runs of ``ds2`` as file lists, each twice (as the dataset holds them)."""
    old = [str(DATA / r) for r, _ in RUNS if r.startswith("real/7.2")]
    new = [str(DATA / r) for r, _ in RUNS if not r.startswith("real/7.2")]
    return old * 2, new * 2


def _stats(m: dict) -> dict:
    """A metric's numbers, order-free (the samples come in another order from a dataset)."""
    out = {k: m[k] for k in ("name", "unit", "delta", "p_value", "significant", "note")}
    for side in ("base", "candidate"):
        st = m[side]
        out[side] = {"n": st["n"], "median": st["median"], "min": st["min"], "max": st["max"],
                     "mean": pytest.approx(st["mean"], rel=1e-12), "values": sorted(st["values"])}
    out["delta_pct"] = pytest.approx(m["delta_pct"], rel=1e-12) if m["delta_pct"] is not None else None
    return out


@pytest.mark.parametrize("outcome", ["all", "completed"])
def test_compare_dataset_equals_compare_of_the_same_runs(ds2: Path, outcome: str,
                                                         capsys: pytest.CaptureFixture) -> None:
    rules = ["--fail-on", "downtime_ms:+1%", "--fail-on", "device.*.precopy_bytes:+1%",
             "--fail-on", "bandwidth_bytes_per_s:-1%"]
    rc_d, out, err = _compare(capsys, str(ds2), "--by", "qemu_version", "--outcome", outcome,
                              "--json", *rules)
    assert rc_d in (0, 1), err
    got = json.loads(out)
    old, new = _sides()
    rc_f, out, err = _compare(capsys, *old, "--", *new, "--outcome", outcome, "--json", *rules)
    want = json.loads(out)
    assert rc_d == rc_f
    assert [_stats(m) for m in got["metrics"]] == [_stats(m) for m in want["metrics"]]
    assert any(m["p_value"] is not None for m in got["metrics"]) == (outcome == "all")  # 5+ a side: U test
    for k in ("left_out", "rules", "regression", "warnings"):
        assert got[k] == want[k], k
    for side in ("base", "candidate"):
        g, w = got[side], want[side]
        for k in ("migrations", "outcomes", "kernel_view", "note"):
            assert g[k] == w[k], (side, k)
        # the dataset names the exact release where a file compare shows a VFIO lab run's
        # trace era (its run.json gives QMP's {major, minor, micro}, which the dataset reads)
        assert set(g["qemu_versions"]) <= set(w["qemu_versions"]) and g["qemu_versions"]
        assert g["runs"] == w["runs"] // 2  # each run's recording once (under two hosts)
        assert g["hosts"] == sorted({h for r, h in RUNS if (r.startswith("real/7.2")) == (side == "base")} | {"hv9"})
        assert w["selection"] is None and w["hosts"] == []
    assert got["base"]["selection"] == {"dataset": str(ds2), "by": "qemu_version", "key": "7.2.22",
                                        "where": None}
    assert got["candidate"]["label"] == "10.0.2" and got["candidate"]["selection"]["key"] == "10.0.2"


def test_compare_dataset_outputs_say_what_the_groups_are(ds2: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    where = "host IN ('hv1', 'hv3', 'hv9')"
    args = [str(ds2), "--by", "host", "--base", "hv1", "--candidate", "hv9", "--where", where]
    rc, out, err = _compare(capsys, *args)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"dataset {ds2}: by host where {where}"
    assert lines[1].startswith(f"base host=hv1 where {where}: 2 recording(s), 2 migration(s) "
                               "compared (cancelled 1, completed 2); QEMU 7.2.22; host hv1")
    assert lines[2].startswith(f"candidate host=hv9 where {where}: 6 recording(s), 5 migration(s) "
                               "compared (cancelled 1, completed 5, failed 1); QEMU 7.2.22, 10.0.2; host hv9")
    assert "too few samples" in out
    rc, md, _ = _compare(capsys, *args, "--markdown")
    assert rc == 0 and f"- dataset {ds2}: by host where {where}" in md and "- base host=hv1" in md
    page = tmp_path / "c.html"
    rc, _, err = _compare(capsys, *args, "--html", str(page))
    assert rc == 0 and f"wrote {page}" in err
    text = page.read_text()
    assert "host=hv9" in text and "hosts" not in lines[2]
    # the curves: one per migration that made checks, as a file compare of the same runs draws
    old = [str(DATA / r) for r, h in RUNS if h == "hv1"]
    page2 = tmp_path / "f.html"
    rc, _, _ = _compare(capsys, *old, "--", *[str(DATA / r) for r, _ in RUNS], "--html", str(page2))
    assert rc == 0
    assert text.count('"type":"scatter"') == page2.read_text().count('"type":"scatter"') > 0


def test_compare_dataset_fail_on_exit_1(ds2: Path, capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = _compare(capsys, str(ds2), "--fail-on", "total_ms:+1%", "--json")
    got = json.loads(out)
    assert got["base"]["label"] == "7.2.22"  # --by qemu_version is the default
    fired = [r for r in got["rules"] if r["fired"]]
    assert rc == (1 if fired else 0) and got["regression"] == bool(fired)
    rc, out, _ = _compare(capsys, str(ds2), "--fail-on", "total_ms:+100000%", "--json")
    assert rc == 0 and not json.loads(out)["regression"]


@pytest.mark.parametrize("args,msg", [
    (["--by", "host"], "--by host gives 4 group(s) (hv1, hv2, hv3, hv9); name two with --base and --candidate"),
    (["--by", "host", "--base", "hv1", "--candidate", "nope"], "--candidate 'nope': no such host"),
    (["--where", "nope = 1"], "--where: Binder Error"),
    (["--where", "host = 'nowhere'"], "no migration matches --where"),
    (["--by", "qemu_version", "--base", "7.2.22", "--candidate", "7.2.22"], "are the same group"),
])
def test_compare_dataset_bad_input_exit_2(ds2: Path, args: list[str], msg: str,
                                          capsys: pytest.CaptureFixture) -> None:
    rc, out, err = _compare(capsys, str(ds2), *args)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and msg in err, err


def test_compare_dataset_options_need_a_dataset(ds2: Path, rec: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = _compare(capsys, str(rec), "--", str(rec), "--by", "host")
    assert rc == 2 and "--by compares a fleet dataset's groups" in err
    rc, _, err = _compare(capsys, str(rec), "--where", "true")
    assert rc == 2 and "--where needs a fleet dataset directory" in err
    rc, _, err = _compare(capsys, str(ds2 / "events"))
    assert rc == 2 and "separate the sides with '--'" in err
    rc, _, err = _compare(capsys, str(ds2), "--by", "kernel")
    assert rc == 2 and "invalid choice: 'kernel'" in err


def test_compare_dataset_kernel_view(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A kernel-view migration (BPF rows alone of a real mtty run) in a dataset: its view
    column says so, and compare leaves out what the kernel cannot see, as for files."""
    ld = pipeline.load([str(DATA / "real-vfio/converges")])
    bpf = ld.events[ld.events["origin"].astype(str).eq("bpf").to_numpy()].reset_index(drop=True)
    meta = {**ld.meta, "host": "k1", "created_ns": 1_767_000_000_000_000_000}
    kern = store.write_recording(tmp_path / "kernel.parquet", bpf, meta)
    full = tmp_path / "full.parquet"
    assert main(["import", str(DATA / "real-vfio/converges"), "-o", str(full)]) == 0
    d = tmp_path / "ds"
    dataset.add_recording(d, kern, host="k1")
    dataset.add_recording(d, full, host="q1")
    got = rows(capsys, d, "SELECT host, view, dirty_syncs, checks FROM migrations ORDER BY host, view")
    assert {r["host"]: r["view"] for r in got} == {"k1": "kernel", "q1": "qemu"}
    assert all(r["dirty_syncs"] is None for r in got if r["view"] == "kernel")
    rc, out, err = _compare(capsys, str(d), "--by", "host", "--base", "q1", "--candidate", "k1",
                            "--outcome", "all", "--json")
    assert rc == 0, err
    got = json.loads(out)
    rc, out, err = _compare(capsys, str(full), "--", str(kern), "--outcome", "all", "--json")
    want = json.loads(out)
    assert [_stats(m) for m in got["metrics"]] == [_stats(m) for m in want["metrics"]]
    # the reasons may name the QEMU release, which the dataset knows exactly (run.json)
    assert [(d["metric"], d["only_in"], d["n"]) for d in got["left_out"]] == [
        (d["metric"], d["only_in"], d["n"]) for d in want["left_out"]]
    assert got["candidate"]["kernel_view"] == want["candidate"]["kernel_view"] >= 1
    assert {d["metric"] for d in got["left_out"]} >= {"dirty_syncs", "checks"}


# ---------------------------------------------------------------------------- the docs


DOC = Path(__file__).resolve().parent.parent / "docs" / "dataset.md"


def doc_queries() -> list[list[str]]:
    import shlex

    out = []
    for line in DOC.read_text().splitlines():
        if line.startswith("migprof query fleet/ \""):
            argv = shlex.split(line.split(" | ")[0])
            out.append(argv[3:])  # SQL and options after 'migprof query fleet/'
    return out


@pytest.mark.parametrize("argv", doc_queries(), ids=lambda a: a[0][:40])
def test_doc_examples_run_as_written(argv: list[str], ds: Path, capsys: pytest.CaptureFixture) -> None:
    rc, out, err = query(capsys, str(ds), *argv)
    assert rc == 0, err
    assert out.strip()
    if "AS downtime_ms_p95" in argv[0]:  # the Spark section's query is downtime_by_group_sql
        assert rows(capsys, ds, argv[0]) == rows(capsys, ds, sql.downtime_by_group_sql("host"))


def test_docs_list_every_column() -> None:
    text = DOC.read_text()
    for name, schema in S.DERIVED.items():
        missing = [f.name for f in schema if f"`{f.name}`" not in text]
        assert not missing, (name, missing)


def test_fast_footer_read_agrees_with_pyarrow(ds: Path, tmp_path: Path) -> None:
    files = sorted(ds.rglob("*.parquet"))
    assert len(files) == 5 * len(RUNS)
    for f in files:
        md = pq.read_metadata(str(f)).metadata
        fast = scan._kv_fast(f)
        assert fast == {k: md[k] for k in (S.FILE_KEY, store.VERSION_KEY) if k in md}, f
    # no dataset key: left to pyarrow (which names what is wrong)
    pq.write_table(pa.table({"a": [1]}), tmp_path / "f.parquet")
    (tmp_path / "g.parquet").write_bytes(b"PAR1 not really")
    assert scan._kv_fast(tmp_path / "f.parquet") is None and scan._kv_fast(tmp_path / "g.parquet") is None
