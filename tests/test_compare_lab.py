"""compare on real lab migrations: two bandwidths compare in the expected direction,
significantly (5 runs a side); repeated identical runs show no regression."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.cli import main

ROOT = Path(__file__).resolve().parent.parent
MIGPROF = [sys.executable, "-m", "profiler.cli"]

LOW_MIBPS, HIGH_MIBPS = 16, 128
# a guest dirtying 8 MiB at 4 MiB/s converges at both bandwidths in well under a second
LAB_ARGS = ["-s", "converges", "--net", "loopback", "--mem-mb", "64", "--dirty-mb", "8",
            "--rate-mbps", "4", "--downtime-limit", "100"]


def lab_run(out: Path, mibps: int) -> Path:
    """One real migration via `migprof lab`; one retry when the lab itself fails to start."""
    for attempt in range(2):
        res = subprocess.run([*MIGPROF, "lab", *LAB_ARGS, "--max-bandwidth", str(mibps), "-o", str(out)],
                             capture_output=True, text=True, cwd=ROOT, timeout=180)
        if res.returncode == 0 and (out / "run.json").exists():
            return out
        if attempt == 0:
            subprocess.run(["rm", "-rf", str(out)], check=False)
    raise AssertionError(f"migprof lab failed twice: {res.stderr[-2000:]}")


@pytest.fixture(scope="session")
def bandwidth_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """15 real runs as recordings: 5 at LOW, and 10 at HIGH split into two interleaved
    groups (so a change in host load over the session hits both groups alike)."""
    d = tmp_path_factory.mktemp("bw")
    plan = []
    for i in range(5):
        plan += [("low", LOW_MIBPS, i), ("high_a", HIGH_MIBPS, i), ("high_b", HIGH_MIBPS, i)]
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
    assert out["base"]["migrations"] == 5 and out["candidate"]["migrations"] == 5
    # less bandwidth: the migration takes longer and moves data slower, significantly
    assert by["total_ms"]["delta"] > 0 and by["total_ms"]["significant"] is True
    assert by["total_ms"]["p_value"] < 0.05
    assert by["bandwidth_bytes_per_s"]["delta"] < 0 and by["bandwidth_bytes_per_s"]["significant"] is True
    assert rc == 1 and out["regression"] and out["rules"][0]["fired"]
    # the other way round it is an improvement, not a regression
    rc, out = _compare(capsys, low, high, "--fail-on", "total_ms:+10%",
                       "--fail-on", "bandwidth_bytes_per_s:-10%")
    assert rc == 0 and not out["regression"]


@pytest.mark.slow
def test_repeated_identical_runs_show_no_regression(bandwidth_runs: dict[str, list[str]],
                                                    capsys: pytest.CaptureFixture) -> None:
    # alpha 0.01: with 5 a side only a complete separation (p = 2/252) counts, which
    # identical settings reach by chance less than 1 % of the time
    rc, out = _compare(capsys, bandwidth_runs["high_a"], bandwidth_runs["high_b"],
                       "--alpha", "0.01", "--fail-on", "total_ms:+25%",
                       "--fail-on", "dirty_syncs:+1", "--fail-on", "bandwidth_bytes_per_s:-25%")
    assert rc == 0 and not out["regression"], out["rules"]
    assert all(m["p_value"] is not None for m in out["metrics"])  # 5 a side: tested


@pytest.mark.slow
def test_run_dirs_and_html_on_real_runs(bandwidth_runs: dict[str, list[str]], tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    """Run directories compare like their recordings; the HTML holds 10 curves."""
    html = tmp_path / "bw.html"
    runs_low = [str(Path(p).with_suffix("")) for p in bandwidth_runs["low"]]
    rc, out = _compare(capsys, runs_low, bandwidth_runs["low"], "--html", str(html))
    assert rc == 0
    for m in out["metrics"]:
        assert m["delta"] == 0, m["name"]
    page = html.read_text()
    # one threshold line per migration and side (the pending curves share their group
    # with the box plots)
    assert page.count('"legendgroup":"base-thr"') == 5
    assert page.count('"legendgroup":"candidate-thr"') == 5
