"""compare on real lab migrations: two bandwidths compare in the expected direction,
significantly; repeated identical runs show no regression.

No run is retried: a lab run that fails fails the test, with its stderr. The checks hold
by design, not by luck: the two bandwidths differ by a factor of 16, so the migrations
separate completely (and then the U test's p-value is exact arithmetic); the identical
settings are compared with 8 runs a side at alpha 0.001, where a rule fires by chance
with probability under 0.1 % (a failure there is worth reading: the host's load drifted
between the groups, although they are interleaved).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from profiler.cli import main

MIGPROF = [sys.executable, "-m", "profiler.cli"]

# 8 MiB/s: bandwidth-bound, ~0.5 s for the ~4 MB this guest sends; 128 MiB/s: ~80 ms
LOW_MIBPS, HIGH_MIBPS = 8, 128
LOW_RUNS, SAME_RUNS = 5, 8
ALPHA_SAME = 0.001
# a guest re-dirtying 8 MiB at 4 MiB/s converges at both bandwidths (at 8 MiB/s in ~3 passes)
LAB_ARGS = ["-s", "converges", "--net", "loopback", "--mem-mb", "64", "--dirty-mb", "8",
            "--rate-mbps", "4", "--downtime-limit", "100"]


def lab_run(out: Path, mibps: int) -> Path:
    """One real migration via `migprof lab`."""
    res = subprocess.run([*MIGPROF, "lab", *LAB_ARGS, "--max-bandwidth", str(mibps), "-o", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert res.returncode == 0 and (out / "run.json").exists(), \
        f"migprof lab exited {res.returncode}: {res.stderr[-2000:]}"
    return out


@pytest.fixture(scope="session")
def bandwidth_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Real runs as recordings: LOW_RUNS at LOW, and 2 x SAME_RUNS at HIGH in two groups,
    interleaved (so a change in host load over the session hits every group alike)."""
    d = tmp_path_factory.mktemp("bw")
    plan = []
    for i in range(SAME_RUNS):
        plan += [("high_a", HIGH_MIBPS, i), ("high_b", HIGH_MIBPS, i)]
        plan += [("low", LOW_MIBPS, i)] if i < LOW_RUNS else []
    out: dict[str, list[str]] = {"low": [], "high_a": [], "high_b": []}
    for group, mibps, i in plan:
        run = lab_run(d / f"{group}{i}", mibps)
        rec = d / f"{group}{i}.parquet"
        assert main(["import", str(run), "-o", str(rec)]) == 0
        out[group].append(str(rec))
    return out


def _compare(capsys: pytest.CaptureFixture, base: list[str], cand: list[str], *extra: str) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main(["compare", *base, "--", *cand, "--json", *extra])
    return rc, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_bandwidths_compare_in_the_expected_direction(bandwidth_runs: dict[str, list[str]],
                                                      capsys: pytest.CaptureFixture) -> None:
    low, high = bandwidth_runs["low"], bandwidth_runs["high_a"]
    rc, out = _compare(capsys, high, low, "--fail-on", "total_ms:+10%")
    by = {m["name"]: m for m in out["metrics"]}
    assert out["base"]["migrations"] == SAME_RUNS and out["candidate"]["migrations"] == LOW_RUNS
    # what the bandwidths make certain: every low run takes longer and moves data slower
    # than every high run ...
    t, bw = by["total_ms"], by["bandwidth_bytes_per_s"]
    assert min(t["candidate"]["values"]) > max(t["base"]["values"]), t
    assert max(bw["candidate"]["values"]) < min(bw["base"]["values"]), bw
    # ... and then the U test's p-value follows: with no tied values it is exact, 2 of the
    # C(13, 5) orderings are that extreme; runs that tie to the unit (a few ms, same bytes)
    # take scipy's normal approximation with tie correction, for which full separation of
    # 8 against 5 still gives p < 0.005
    separated = 2 / math.comb(SAME_RUNS + LOW_RUNS, LOW_RUNS)
    for m in (t, bw):
        vals = m["base"]["values"] + m["candidate"]["values"]
        if len(set(vals)) == len(vals):
            assert m["p_value"] == pytest.approx(separated), m
        else:
            assert separated < m["p_value"] < 0.005, m
        assert m["significant"] is True
    assert t["delta"] > 0 and bw["delta"] < 0
    assert rc == 1 and out["regression"] and out["rules"][0]["fired"]
    # the other way round it is an improvement, not a regression
    rc, out = _compare(capsys, low, high, "--fail-on", "total_ms:+10%",
                       "--fail-on", "bandwidth_bytes_per_s:-10%")
    assert rc == 0 and not out["regression"]


@pytest.mark.slow
def test_repeated_identical_runs_show_no_regression(bandwidth_runs: dict[str, list[str]],
                                                    capsys: pytest.CaptureFixture) -> None:
    """A rule fires only on a significant difference over its limit; at alpha 0.001 with
    8 runs a side, identical settings reach significance with probability under 0.1 %."""
    rc, out = _compare(capsys, bandwidth_runs["high_a"], bandwidth_runs["high_b"],
                       "--alpha", str(ALPHA_SAME), "--fail-on", "total_ms:+25%",
                       "--fail-on", "dirty_syncs:+1", "--fail-on", "bandwidth_bytes_per_s:-25%")
    assert out["base"]["migrations"] == out["candidate"]["migrations"] == SAME_RUNS
    assert all(m["p_value"] is not None for m in out["metrics"])  # enough a side: all tested
    assert [r["rule"] for r in out["rules"]] == ["total_ms:+25%", "dirty_syncs:+1",
                                                 "bandwidth_bytes_per_s:-25%"]
    assert rc == 0 and not out["regression"], out["rules"]


@pytest.mark.slow
def test_run_dirs_and_html_on_real_runs(bandwidth_runs: dict[str, list[str]], tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    """Run directories compare like their recordings; the HTML holds every curve."""
    html = tmp_path / "bw.html"
    runs_low = [str(Path(p).with_suffix("")) for p in bandwidth_runs["low"]]
    rc, out = _compare(capsys, runs_low, bandwidth_runs["low"], "--html", str(html))
    assert rc == 0
    for m in out["metrics"]:
        assert m["delta"] == 0, m["name"]
    page = html.read_text()
    # one threshold line per migration and side (the pending curves share their group
    # with the box plots)
    assert page.count('"legendgroup":"base-thr"') == LOW_RUNS
    assert page.count('"legendgroup":"candidate-thr"') == LOW_RUNS
