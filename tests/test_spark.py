"""The dataset read by Spark as it is on disk: the spark-submit job's per-group downtime table
equals DuckDB's (`migprof query`) on the same dataset.

Needs pyspark (the test extra) and Java 17 (scripts/setup.d/70-java.sh); neither is
skipped when missing: the setup installs both. One local[2] SparkSession for the module
(the JVM start is most of the cost)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from profiler import dataset
from profiler.cli import main
from profiler.dataset import sql
from profiler.jobs import downtime_by_group as job

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
RUNS = sorted([*DATA.glob("real/*/"), *DATA.glob("real-vfio/*/")])


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every real run imported, under three hosts and two dates: single-recording units and
    batch units, a foreign Parquet file, a text file and a half-written temp file beside them."""
    tmp = tmp_path_factory.mktemp("spark")
    recs = []
    for r in RUNS:
        out = tmp / f"{r.parent.name}-{r.name}.parquet"
        assert main(["import", str(r), "-o", str(out)]) == 0
        recs.append(out)
    d = tmp / "fleet"
    for i, rec in enumerate(recs[:6]):
        dataset.add_recording(d, rec, host=f"hv{i % 3}", date="2026-11-0" + str(1 + i % 2))
    dataset.add_recordings(d, recs[6:], host="0042", date="2026-11-03")  # a host that looks like a number
    part = next(d.glob("migrations/host=hv0/date=*"))
    pq.write_table(pa.table({"downtime_ms": [1e9], "x": ["foreign"]}), part / "foreign.parquet")
    (part / "README.txt").write_text("not data")
    (part / ".deadbeef.parquet.tmp").write_bytes(b"PAR1 half")
    return d


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory):
    from pyspark.sql import SparkSession

    tmp = tmp_path_factory.mktemp("spark-local")
    s = (SparkSession.builder.master("local[2]").appName("migprof-test")
         .config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "2")
         .config("spark.local.dir", str(tmp))
         .config("spark.sql.warehouse.dir", str(tmp / "warehouse"))
         .config("spark.driver.extraJavaOptions", f"-Djava.io.tmpdir={tmp}")
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def duck(ds: Path, by: str, outcome: str = "completed") -> list[dict]:
    res = sql.run(ds, sql.downtime_by_group_sql(by, outcome))
    return [{**r, "group": r["group"]} for r in res.table.to_pylist()]


def same(a: list[dict], b: list[dict]) -> None:
    assert [r["group"] for r in a] == [r["group"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert set(x) == set(job.COLUMNS) == set(y)
        for k in job.COLUMNS:
            if isinstance(x[k], float) or isinstance(y[k], float):
                assert (x[k] is None) == (y[k] is None), (x["group"], k)
                if x[k] is not None:
                    assert math.isclose(x[k], y[k], rel_tol=1e-12), (x["group"], k, x[k], y[k])
            else:
                assert x[k] == y[k], (x["group"], k)


@pytest.mark.parametrize("by,outcome", [("qemu_version", "completed"), ("host", "completed"),
                                        ("device_driver", "completed"), ("host", "all")])
def test_spark_equals_duckdb(spark, ds: Path, by: str, outcome: str) -> None:
    got = [r.asDict() for r in job.downtime_by_group(spark, str(ds), by, outcome).collect()]
    want = duck(ds, by, outcome)
    same(got, want)
    assert sum(r["migrations"] for r in want) > 10
    if by == "host":
        assert [r["group"] for r in got] == ["0042", "hv0", "hv1", "hv2"]  # text, not the number 42
    if by == "device_driver":
        assert [r["group"] for r in got] == ["mtty", None]


def test_the_job_as_a_command(spark, ds: Path, capsys: pytest.CaptureFixture) -> None:
    # main() takes the running session (getOrCreate), as spark-submit's driver would
    assert job.main([str(ds), "--by", "qemu_version", "--json"]) == 0
    same(json.loads(capsys.readouterr().out), duck(ds, "qemu_version"))


def test_the_job_writes_csv(spark, ds: Path, tmp_path: Path) -> None:
    """`--out DIR` as on a cluster: one CSV file with a header (read back as text)."""
    import csv

    assert job.main([str(ds), "--by", "device_driver", "--out", str(tmp_path / "out")]) == 0
    (part,) = (tmp_path / "out").glob("part-*.csv")
    rows = list(csv.DictReader(part.open()))
    want = duck(ds, "device_driver")
    assert [(x["group"] or None, int(x["migrations"])) for x in rows] == [
        (w["group"], w["migrations"]) for w in want]
    assert [float(x["downtime_ms_p95"]) for x in rows] == pytest.approx(
        [w["downtime_ms_p95"] for w in want], rel=1e-12)


def test_the_job_needs_nothing_but_pyspark() -> None:
    """spark-submit ships the one file to the cluster, where migprof is not installed."""
    import ast

    tree = ast.parse((ROOT / "profiler/jobs/downtime_by_group.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    tops = {n.split(".")[0] for n in names}
    assert tops - {"__future__", "pyspark"} <= set(sys.stdlib_module_names), tops
