"""compare: the rule parser, the U test against scipy, metric extraction, and the CLI on
real lab runs from tests/data/real (recordings, run dirs, mixed schema and QEMU versions,
corrupt/truncated/foreign inputs, the worker pool's error path, the HTML's plotly.js)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REAL
from scipy.stats import mannwhitneyu

from profiler import events as ev
from profiler import pipeline, store
from profiler.cli import main
from profiler.errors import MigprofError
from profiler.model import compare as cmp
from profiler.model.results import Check, Device, Migration, Report, Verdict
from profiler.views.compare import to_json
from profiler.views.html import PLOTLY_JS, curves

RUN72 = REAL / "7.2-converges"
RUN100 = REAL / "10.0-converges"


# ---------------------------------------------------------------------------- rules


@pytest.mark.parametrize("text,metric,sign,amount,percent", [
    ("downtime_ms:+10%", "downtime_ms", 1, 10.0, True),
    ("total_ms:+500", "total_ms", 1, 500.0, False),
    ("bandwidth_bytes_per_s:-5%", "bandwidth_bytes_per_s", -1, 5.0, True),
    (" dirty_syncs : 2 ", "dirty_syncs", 0, 2.0, False),
    ("device.*.downtime_ms:+20%", "device.*.downtime_ms", 1, 20.0, True),
    ("device.0000:3b:00.1.stopcopy_bytes:+0.5%", "device.0000:3b:00.1.stopcopy_bytes", 1, 0.5, True),
    ("setup_ms:+.5", "setup_ms", 1, 0.5, False),
])
def test_parse_rule(text: str, metric: str, sign: int, amount: float, percent: bool) -> None:
    r = cmp.parse_rule(text)
    assert (r.metric, r.sign, r.amount, r.percent) == (metric, sign, amount, percent)


@pytest.mark.parametrize("text,msg", [
    ("downtime_ms", "expected METRIC"),
    ("downtime_ms:+ten%", "expected METRIC"),
    ("downtime_ms:+10%%", "expected METRIC"),
    (":+10%", "expected METRIC"),
    ("downtime:+10%", "unknown metric 'downtime'"),
    ("device.ram.bogus_ms:+1", "unknown metric"),
])
def test_bad_rules_are_usage_errors(text: str, msg: str) -> None:
    with pytest.raises(MigprofError, match=msg):
        cmp.parse_rule(text)


def test_unsigned_rule_takes_the_worse_direction() -> None:
    assert cmp.parse_rule("total_ms:10%").direction("total_ms") == 1
    assert cmp.parse_rule("bandwidth_bytes_per_s:10%").direction("bandwidth_bytes_per_s") == -1


# ---------------------------------------------------------------------------- U test


def test_u_test_matches_scipy() -> None:
    rng = np.random.default_rng(7)
    for k in range(400):
        n1, n2 = int(rng.integers(1, 15)), int(rng.integers(1, 15))
        if k % 3 == 0:  # ties: the normal approximation
            a, b = rng.integers(0, 4, n1).astype(float), rng.integers(0, 4, n2).astype(float)
        else:
            a, b = rng.normal(0, 1, n1), rng.normal(rng.uniform(0, 2), 1, n2)
        ref = mannwhitneyu(a, b, alternative="two-sided")
        if np.isnan(ref.pvalue):
            continue
        u, p = cmp.mann_whitney_u(a, b)
        assert u == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue, abs=1e-12)


# ---------------------------------------------------------------------------- sides


def mig(total: float, downtime: float, *, outcome: str = "completed", dev: float | None = None,
        qemu: str = "7.2") -> Migration:
    """A migration as the model gives it (what compare reads)."""
    devices = [Device("ram", "ram", precopy_bytes=1 << 20, stopcopy_bytes=4096)]
    if dev is not None:
        devices.append(Device("0000:3b:00.1", "vfio", downtime_ms=dev, read_ms=dev / 2))
    devices.append(Device("apic", "other", downtime_ms=0.01))
    return Migration(index=0, outcome=outcome, start_ns=None, setup_ms=2.0, total_ms=total,
                     downtime_ms=downtime, dirty_syncs=3, converged=True,
                     verdict=Verdict(True, 0, "converged at check 1"),
                     checks=(Check(1.0, "exact", 100, 10),), transferred_bytes=int(total * 1000),
                     devices=tuple(devices), qemu_version=qemu)


def side(label: str, migs: list[Migration]) -> cmp.Group:
    runs = [cmp.Run(f"{label}{i}", Report((m,))) for i, m in enumerate(migs)]
    return cmp.make_group(label, runs)


def test_metrics_of_a_migration() -> None:
    m = cmp.migration_metrics(mig(1000.0, 50.0, dev=20.0))
    assert m["total_ms"] == 1000.0 and m["checks_to_converge"] == 1.0
    assert m["bandwidth_bytes_per_s"] == pytest.approx(1_000_000.0)
    assert m["device.0000:3b:00.1.downtime_ms"] == 20.0 and m["read_ms"] == 10.0
    assert "device.apic.downtime_ms" not in m  # other devices only with --all-devices
    assert "device.apic.downtime_ms" in cmp.migration_metrics(mig(1.0, 1.0), None)


def test_significant_difference_and_rules() -> None:
    base = side("b", [mig(1000 + i, 50 + i) for i in range(5)])
    cand = side("c", [mig(1500 + i, 50 + i, dev=3.0) for i in range(5)])
    rules = [cmp.parse_rule(r) for r in ("total_ms:+10%", "downtime_ms:+1%", "total_ms:+1000",
                                         "bandwidth_bytes_per_s:-1%", "device.*.downtime_ms:+1%")]
    c = cmp.compare(base, cand, rules)
    by = {m.name: m for m in c.metrics}
    assert by["total_ms"].significant and by["total_ms"].p_value == pytest.approx(2 / 252)
    assert by["total_ms"].delta == 500 and by["total_ms"].delta_pct == pytest.approx(500 / 1002 * 100)
    assert by["downtime_ms"].significant is False and by["downtime_ms"].p_value == 1.0
    fired = {(r.rule, r.fired) for r in c.rules}
    assert ("total_ms:+10%", True) in fired
    assert ("downtime_ms:+1%", False) in fired
    assert ("total_ms:+1000", False) in fired
    assert ("bandwidth_bytes_per_s:-1%", False) in fired  # bandwidth is the same (sent/time)
    # the VFIO device only exists on the candidate side: left out, rule not evaluated
    assert [d.metric for d in c.left_out] == ["read_ms", "device.0000:3b:00.1.downtime_ms",
                                                  "device.0000:3b:00.1.read_ms"]
    assert any("not evaluated" in r.detail for r in c.rules if r.rule.startswith("device"))
    assert c.regression
    json.dumps(to_json(c), allow_nan=False)


def test_too_few_samples_fire_on_the_limit_alone() -> None:
    c = cmp.compare(side("b", [mig(1000, 50)] * 2), side("c", [mig(1200, 50)] * 2),
                    [cmp.parse_rule("total_ms:+10%")])
    assert c.too_few and all(m.significant is None for m in c.metrics)
    assert c.rules[0].fired and "too few samples" in c.rules[0].detail
    assert any("too few samples" in w for w in c.warnings)


def test_over_the_limit_but_not_significant_is_no_regression() -> None:
    base = side("b", [mig(v, 5) for v in (100, 300, 100, 300, 100)])
    cand = side("c", [mig(v, 5) for v in (300, 100, 300, 100, 300)])
    c = cmp.compare(base, cand, [cmp.parse_rule("total_ms:+10%")])
    assert c.metrics[0].significant is False and not c.regression
    assert "not significant" in c.rules[0].detail


def test_outcome_filter_falls_back_when_nothing_completed() -> None:
    s = side("b", [mig(100, 5, outcome="cancelled")])
    assert len(s.samples) == 1 and "no completed migration" in s.note


# ---------------------------------------------------------------------------- CLI on real runs


@pytest.fixture(scope="module")
def recs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Recordings imported from real lab runs (QEMU 7.2 and 10.0)."""
    d = tmp_path_factory.mktemp("recs")
    out = {}
    for name in ("7.2-converges", "7.2-downtime-raise", "10.0-converges"):
        out[name] = d / f"{name}.parquet"
        assert main(["import", str(REAL / name), "-o", str(out[name])]) == 0
    return out


def test_identical_recordings_exit_0_with_rules(recs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    r = str(recs["7.2-converges"])
    rc = main(["compare", r, r, "--", r, r, "--json", "--fail-on", "total_ms:+1%",
               "--fail-on", "downtime_ms:+0"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["schema"] == "migprof.compare/1" and out["regression"] is False
    assert all(m["delta"] == 0 for m in out["metrics"])
    assert {m["name"] for m in out["metrics"]} >= {"total_ms", "downtime_ms", "dirty_syncs",
                                                   "device.ram.precopy_bytes", "bandwidth_bytes_per_s"}


def test_recording_and_its_run_dir_compare_equal(recs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    rc = main(["compare", str(RUN72), "--", str(recs["7.2-converges"]), "--json", "--no-summary"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    for m in out["metrics"]:
        assert m["base"]["values"] == m["candidate"]["values"], m["name"]


def test_regression_exits_1(recs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    a, b = str(recs["7.2-converges"]), str(recs["7.2-downtime-raise"])
    base = json.loads(_json(capsys, [a, "--", a]))["metrics"]
    b_total = {m["name"]: m for m in json.loads(_json(capsys, [b, "--", b]))["metrics"]}["total_ms"]
    a_total = {m["name"]: m for m in base}["total_ms"]
    worse, better = (b, a) if b_total["base"]["median"] > a_total["base"]["median"] else (a, b)
    assert main(["compare", better, "--", worse, "--fail-on", "total_ms:+5%"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION: total_ms:+5%" in out and "too few samples" in out
    assert main(["compare", worse, "--", better, "--fail-on", "total_ms:+5%"]) == 0


def _json(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    capsys.readouterr()
    assert main(["compare", *args, "--json"]) == 0
    return capsys.readouterr().out


def test_different_qemu_versions_say_what_was_left_out(recs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    rc = main(["compare", str(recs["7.2-converges"]), "--", str(recs["10.0-converges"]), "--json"])
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert rc == 0
    assert out["base"]["qemu_versions"][0].startswith("7.2")
    assert out["candidate"]["qemu_versions"][0].startswith("10.0")
    left = {d["metric"]: d for d in out["left_out"]}
    # QEMU 7.2 has no vmstate_downtime_save: per-device downtime exists on 10.0 only
    assert left["device.ram.downtime_ms"]["only_in"] == "candidate"
    assert "QEMU 7.2" in left["device.ram.downtime_ms"]["reason"]
    assert "left out" in cap.err and "device.*.downtime_ms" in cap.err
    assert "total_ms" in {m["name"] for m in out["metrics"]}


def test_markdown_and_html(recs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    html = tmp_path / "c.html"
    rc = main(["compare", str(recs["7.2-converges"]), "--", str(recs["10.0-converges"]),
               "--markdown", "--html", str(html)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| metric | base | candidate | delta | test |" in out and "| `total_ms` |" in out
    page = html.read_text()
    assert "Convergence: pending bytes" in page and "plotly" in page.lower()
    assert not re.findall(r"<script[^>]*\bsrc=", page)  # plotly.js inline: works offline
    data = page.split('id="migprof-compare">')[1].split("</script>")[0]
    assert "migprof.compare/1" in data
    # both sides' curves are in the figure
    assert page.count('"legendgroup":"base"') >= 1 and page.count('"legendgroup":"candidate"') >= 1


def _v0_from(rec: Path, out: Path) -> None:
    """Rewrite a real recording in the v0 prototype layout (see store._upgrade_v0)."""
    df, meta, _ = store.read_recording(rec)
    df = df.drop(columns=["clock", "clock_ns"]).rename(
        columns={"t_ns": "ts_ns", "event": "name", "bytes": "value", "raw": "text"})
    df["side"] = df["side"].astype("string").replace({"source": "src", "destination": "dst"}).astype("category")
    t = pa.Table.from_pandas(df, preserve_index=False)
    t = t.replace_schema_metadata({store.VERSION_KEY: b"0", store.META_KEY: json.dumps(meta).encode()})
    pq.write_table(t, out)


def test_mixed_schema_versions(recs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    v0 = tmp_path / "v0.parquet"
    _v0_from(recs["7.2-converges"], v0)
    rc = main(["compare", str(v0), "--", str(recs["7.2-converges"]), "--json", "--fail-on", "total_ms:+0"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["base"]["schema_versions"] == [0] and out["candidate"]["schema_versions"] == [ev.SCHEMA_VERSION]
    by = {m["name"]: m for m in out["metrics"]}
    for name in ("total_ms", "downtime_ms", "dirty_syncs", "device.ram.precopy_bytes"):
        assert by[name]["delta"] == 0, name


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "foreign", "text", "missing", "newer"])
def test_bad_input_exits_2_with_one_line(kind: str, recs: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    good = recs["7.2-converges"]
    bad = tmp_path / f"{kind}.parquet"
    data = good.read_bytes()
    if kind == "corrupt":
        bad.write_bytes(data[:100] + bytes(200) + data[300:])
    elif kind == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "foreign":
        pq.write_table(pa.table({"x": [1.0, 2.0]}), bad)
    elif kind == "text":
        bad.write_text("hello, not a trace\n" * 3)
    elif kind == "newer":
        t = pq.read_table(good)
        md = dict(t.schema.metadata)
        md[store.VERSION_KEY] = str(ev.SCHEMA_VERSION + 1).encode()
        pq.write_table(t.replace_schema_metadata(md), bad)
    rc = main(["compare", str(good), "--", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("migprof: error: ") and str(bad) in err[-1], err


def test_truncated_stream_recording_still_compares(recs: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """A recorder killed after the migration: every complete batch is compared, with a warning."""
    df, meta, _ = store.read_recording(recs["7.2-converges"])
    w = store.RecordingWriter(tmp_path / "k.parquet", meta, finalise=False)
    w.write(df)
    w.flush()
    w._sink.close()  # as SIGKILL leaves it: no end-of-stream marker
    rc = main(["compare", str(recs["7.2-converges"]), "--", str(w.partial_path), "--json"])
    cap = capsys.readouterr()
    assert rc == 0 and "not closed" in cap.err
    assert all(m["delta"] == 0 for m in json.loads(cap.out)["metrics"])


@pytest.mark.parametrize("argv,msg", [
    (["a.parquet", "b.parquet"], "separate the sides with '--'"),
    (["a.parquet", "--"], "each side needs at least one input"),
    (["--", "b.parquet"], "each side needs at least one input"),
])
def test_usage_errors_exit_2(argv: list[str], msg: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_options_after_the_inputs(recs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    r = str(recs["7.2-converges"])
    assert main(["compare", r, "--json", "--", r, "--fail-on", "total_ms:+1%"]) == 0
    assert json.loads(capsys.readouterr().out)["rules"][0]["rule"] == "total_ms:+1%"
    assert main(["compare", r, "--", r, "--bogus"]) == 2


def test_a_directory_of_recordings_is_one_run_each(recs: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    d = tmp_path / "base"
    d.mkdir()
    for i in range(3):
        shutil.copy(recs["7.2-converges"], d / f"r{i}.parquet")
    (d / "notes.txt").write_text("not a recording")
    assert main(["compare", str(d), "--", str(recs["7.2-converges"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["base"]["runs"] == 3 and out["base"]["migrations"] == 3


def test_stale_summary_is_not_used(recs: dict[str, Path], tmp_path: Path) -> None:
    """A summary made by other model code is ignored and the report is rebuilt."""
    p = tmp_path / "stale.parquet"
    shutil.copy(recs["7.2-converges"], p)
    assert pipeline.cached_run(str(p)) is not None
    t = pq.read_table(p)
    md = dict(t.schema.metadata)
    s = json.loads(md[store.SUMMARY_KEY])
    s["model_key"] = "0" * 16
    s["report"]["migrations"][0]["total_ms"] = 1e9
    md[store.SUMMARY_KEY] = json.dumps(s).encode()
    pq.write_table(t.replace_schema_metadata(md), p)
    assert pipeline.cached_run(str(p)) is None
    run = pipeline.load_run(str(p))
    assert not run.from_summary and run.report.migrations[0].total_ms < 1e9


def test_html_curves_use_check_times(recs: dict[str, Path]) -> None:
    run = pipeline.load_run(str(recs["7.2-converges"]))
    c = curves(cmp.make_group("b", [run]))
    assert len(c) == 1 and c[0].x_is_time
    assert len(c[0].t_ms) == len(run.report.migrations[0].checks) > 0
    assert pd.Series(c[0].t_ms).is_monotonic_increasing


def test_html_shares_one_plotly_script(recs: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    """--plotly directory: every page in a directory loads the one plotly.min.js beside it,
    written by the first page and left alone by the next (inline stays the default)."""
    from plotly.offline import get_plotlyjs

    a, b = str(recs["7.2-converges"]), str(recs["10.0-converges"])
    inline = tmp_path / "inline.html"
    assert main(["compare", a, "--", b, "--html", str(inline)]) == 0
    pages = tmp_path / "pages"
    pages.mkdir()
    assert main(["compare", a, "--", b, "--html", str(pages / "one.html"), "--plotly", "directory"]) == 0
    js = pages / PLOTLY_JS
    assert f"wrote {js}" in capsys.readouterr().err
    assert js.read_text() == get_plotlyjs()
    first = js.stat()
    assert main(["compare", b, "--", a, "--plotly", "directory", "--html", str(pages / "two.html")]) == 0
    assert f"wrote {js}" not in capsys.readouterr().err
    assert (js.stat().st_ino, js.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    for name in ("one.html", "two.html"):
        page = (pages / name).read_text()
        assert re.findall(r'<script[^>]*\bsrc="([^"]+)"', page) == [PLOTLY_JS]
        assert get_plotlyjs()[:2000] not in page
        assert "Convergence: pending bytes" in page and 'id="migprof-compare"' in page
        assert len(page) < len(inline.read_text()) - len(get_plotlyjs()) // 2
    # a page whose directory cannot be written: one line, exit 2
    assert main(["compare", a, "--", b, "--html", str(js / "x.html"), "--plotly", "directory"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([x for x in err if x.startswith("migprof: error:")]) == 1 and str(js) in err[-1]
    assert sorted(p.name for p in pages.iterdir()) == ["one.html", PLOTLY_JS, "two.html"]


# ---------------------------------------------------------------------------- the worker pool


def _corrupt(good: Path, out: Path) -> Path:
    data = good.read_bytes()
    out.write_bytes(data[:100] + bytes(200) + data[300:])
    return out


def test_unusable_input_in_a_worker_exits_2_with_one_line(recs: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """Inputs rebuilt in worker processes (-j 2, 4+ inputs, --no-summary): a damaged
    recording among them is named in one line, exit 2, nothing on stdout; with two, the
    first in the order given, whichever worker finished first."""
    good = [str(recs[n]) for n in ("7.2-converges", "7.2-downtime-raise", "10.0-converges")]
    bad1 = _corrupt(recs["7.2-converges"], tmp_path / "bad1.parquet")
    bad2 = tmp_path / "bad2.log"
    bad2.write_text("no trace here\n")
    for argv, named in (([*good, "--", str(bad1), *good], bad1),
                        ([*good, str(bad2), "--", *good, str(bad1)], bad2)):
        rc = main(["compare", *argv, "--no-summary", "--jobs", "2"])
        cap = capsys.readouterr()
        assert rc == 2 and cap.out == ""
        err = cap.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"migprof: error: {named}: "), err


def _fake_load_run(kind: str, victim: str):
    """A load_run that fails on ``victim`` as a model bug (``raise``) or the OOM killer
    (``kill``) would. Test double: no real input makes the model raise or kills its
    process (one that did would be a bug to fix); the workers are forked, so they
    inherit it."""
    import os
    import signal

    real = pipeline.load_run

    def fake_load_run(path: str, *, use_summary: bool = True):
        if path == victim:
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("boom")
        return real(path, use_summary=use_summary)

    return fake_load_run


@pytest.mark.parametrize("kind,says", [("raise", "cannot build its report (RuntimeError: boom)"),
                                       ("kill", "the process loading it died")])
def test_failing_worker_names_its_input_and_keeps_the_sound_runs(
        kind: str, says: str, recs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """A worker that raises or dies: the loader still returns every sound input's run (a
    dead worker's other inputs are loaded again, one process each) and names the victim;
    the command says so in one line, exit 2, no traceback."""
    paths = [str(recs[n]) for n in ("7.2-converges", "7.2-downtime-raise", "10.0-converges")] * 2
    victim = str(RUN72)
    paths.insert(2, victim)
    monkeypatch.setattr(pipeline, "load_run", _fake_load_run(kind, victim))
    loaded = pipeline.load_runs(paths, jobs=2, use_summary=False)
    failed = [r for r in loaded if isinstance(r, pipeline.LoadFailure)]
    assert [f.path for f in failed] == [victim] and says in failed[0].message
    sound = [r for r in loaded if not isinstance(r, pipeline.LoadFailure)]
    assert [r.input for r in sound] == [p for p in paths if p != victim]
    want = {p: to_json_of(pipeline.load_run(p, use_summary=False)) for p in set(paths) - {victim}}
    assert all(to_json_of(r) == want[r.input] for r in sound)

    rc = main(["compare", *paths[:3], "--", *paths[3:], "--no-summary", "--jobs", "2"])
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == ""
    err = cap.err.strip().splitlines()
    assert err == [f"migprof: error: {failed[0].message}"], err


def to_json_of(run: cmp.Run) -> list:
    from profiler.model.results import to_json as report_json

    return report_json(run.report)["migrations"]
