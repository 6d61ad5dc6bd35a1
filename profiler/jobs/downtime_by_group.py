"""spark-submit job: the per-group downtime table of a migprof dataset.

Reads the dataset's ``migrations`` table as it is on disk (hive partitions ``host=``/
``date=``) and computes, per value of ``--by`` (qemu_version, host or device_driver),
the same table as ``migprof query DATASET`` with ``downtime_by_group_sql`` (docs/dataset.md):
migrations, with_downtime, downtime_ms_p50, downtime_ms_p95 (exact, linearly interpolated
percentiles), downtime_ms_mean, downtime_ms_max. Standalone: it needs pyspark only.

    spark-submit profiler/jobs/downtime_by_group.py DATASET --by qemu_version
    spark-submit --master local[2] profiler/jobs/downtime_by_group.py DATASET --by host --json
    spark-submit profiler/jobs/downtime_by_group.py s3a://bucket/fleet --by device_driver --out out/
"""

from __future__ import annotations

import argparse
import json
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

BY = ("qemu_version", "host", "device_driver")
COLUMNS = ("group", "migrations", "with_downtime", "downtime_ms_p50", "downtime_ms_p95",
           "downtime_ms_mean", "downtime_ms_max")


# the columns read (types as docs/dataset.md gives them); host and date are the partitions,
# named here so Spark takes them as text (a host named 0042 is no number) instead of guessing
SCHEMA = T.StructType([
    T.StructField("recording", T.StringType()),
    T.StructField("outcome", T.StringType()),
    T.StructField("qemu_version", T.StringType()),
    T.StructField("device_driver", T.StringType()),
    T.StructField("downtime_ms", T.DoubleType()),
    T.StructField("host", T.StringType()),
    T.StructField("date", T.StringType()),
])


def read_migrations(spark: SparkSession, dataset: str) -> DataFrame:
    """The migrations table as on disk: files named *.parquet (Spark skips the temp files of
    an add, which start with a dot); a foreign Parquet file's rows have no recording id."""
    path = dataset.rstrip("/") + "/migrations"
    df = spark.read.schema(SCHEMA).option("pathGlobFilter", "*.parquet").parquet(path)
    return df.where(F.col("recording").isNotNull()).withColumn("date", F.to_date("date"))


def downtime_by_group(spark: SparkSession, dataset: str, by: str = "qemu_version",
                      outcome: str = "completed") -> DataFrame:
    """One row per group, null group last; ``outcome`` 'all' takes every migration."""
    if by not in BY:
        raise ValueError(f"--by {by!r}: one of {', '.join(BY)}")
    df = read_migrations(spark, dataset)
    if outcome != "all":
        df = df.where(F.col("outcome") == outcome)
    return (df.groupBy(F.col(by).alias("group"))
            .agg(F.count(F.lit(1)).alias("migrations"),
                 F.count("downtime_ms").alias("with_downtime"),
                 F.expr("percentile(downtime_ms, 0.5)").alias("downtime_ms_p50"),
                 F.expr("percentile(downtime_ms, 0.95)").alias("downtime_ms_p95"),
                 F.avg("downtime_ms").alias("downtime_ms_mean"),
                 F.max("downtime_ms").alias("downtime_ms_max"))
            .orderBy(F.col("group").asc_nulls_last()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="downtime_by_group.py", description=__doc__.splitlines()[0])
    p.add_argument("dataset", help="the dataset directory (any path Spark reads)")
    p.add_argument("--by", choices=BY, default="qemu_version")
    p.add_argument("--outcome", default="completed", help="completed (default), failed, ... or all")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list of row objects")
    out.add_argument("--out", metavar="DIR", help="write the table as one CSV file into DIR")
    args = p.parse_args(argv)
    spark = SparkSession.builder.appName("migprof-downtime-by-group").getOrCreate()
    table = downtime_by_group(spark, args.dataset, args.by, args.outcome)
    if args.out:
        table.coalesce(1).write.mode("overwrite").option("header", True).csv(args.out)
    elif args.json:
        json.dump([r.asDict() for r in table.collect()], sys.stdout)
        sys.stdout.write("\n")
    else:
        table.show(truncate=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
