"""SQL over a dataset on embedded DuckDB: each table a view over its checked files."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from profiler.dataset import schema as S
from profiler.dataset.scan import Scan, scan
from profiler.errors import MigprofError

BY = ("qemu_version", "host", "device_driver")  # compare --by, the Spark job's groups


class SQLError(MigprofError):
    """DuckDB refused the SQL (its message, on one line)."""


@dataclass(frozen=True, slots=True)
class Result:
    table: pa.Table
    warnings: tuple[str, ...] = ()


def named_tables(sql: str) -> tuple[str, ...]:
    """The dataset tables a statement names (as words): only their footers are checked."""
    return tuple(t for t in S.TABLES if re.search(rf"\b{t}\b", sql, re.IGNORECASE))


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def view_sql(table: str, files: Iterable[Path]) -> str | None:
    """The SELECT behind a table's view: its files as one hive-partitioned Parquet scan,
    host and date first (None when the table has no file yet)."""
    paths = [str(p) for p in files]
    if not paths:
        return None
    return (f"SELECT host, date, * EXCLUDE (host, date) FROM read_parquet("
            f"[{', '.join(_quote(p) for p in paths)}], hive_partitioning = true, "
            "hive_types = {'host': VARCHAR, 'date': DATE})")


def connect(s: Scan) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a view for each table ``s`` checked (its columns and no
    rows when it has no file yet)."""
    # no progress bar on stderr for a long query: the output is the rows, or one error line
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    for t in s.checked:
        body = view_sql(t, (f.path for f in s.files[t]))
        if body is None:  # an empty dataset still has every table, with its columns
            empty = S.schema_of(t).empty_table()
            con.register(f"_empty_{t}", empty)
            body = (f"SELECT CAST(NULL AS VARCHAR) AS host, CAST(NULL AS DATE) AS date, * "
                    f"FROM _empty_{t}")
        con.execute(f"CREATE VIEW {t} AS {body}")
    return con


def _message(e: duckdb.Error) -> str:
    """DuckDB's message on one line (the LINE/caret lines only make sense in a terminal)."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    keep = [x for x in lines if not x.startswith("LINE ") and set(x) != {"^"}]
    return "; ".join(keep) or type(e).__name__


def open_dataset(root: str | Path, tables: Iterable[str] = S.TABLES) -> tuple[duckdb.DuckDBPyConnection, Scan]:
    """Scan the dataset (checking ``tables``' files), refuse stale versions, connect."""
    s = scan(root, tables)
    err = s.stale_error()
    if err is not None:
        raise err
    return connect(s), s


def run(root: str | Path, sql: str) -> Result:
    """Run ``sql`` over the dataset at ``root``; the last statement's rows as Arrow.

    Raises InputError for a bad dataset and SQLError with DuckDB's message for bad SQL.
    """
    con, s = open_dataset(root, named_tables(sql))
    try:
        rel = con.sql(sql)
        table = rel.to_arrow_table() if rel is not None else pa.table({})
    except duckdb.Error as e:
        raise SQLError(f"query: {_message(e)}") from None
    finally:
        con.close()
    return Result(table, tuple(s.warnings))


def downtime_by_group_sql(by: str, outcome: str = "completed") -> str:
    """The per-group downtime table in DuckDB SQL (the Spark job computes the same)."""
    if by not in BY:
        raise MigprofError(f"--by {by!r}: one of {', '.join(BY)}")
    where = "" if outcome == "all" else f"WHERE outcome = {_quote(outcome)}"
    return (f'SELECT {by} AS "group", count(*) AS migrations, count(downtime_ms) AS with_downtime, '
            "quantile_cont(downtime_ms, 0.5) AS downtime_ms_p50, "
            "quantile_cont(downtime_ms, 0.95) AS downtime_ms_p95, "
            "avg(downtime_ms) AS downtime_ms_mean, max(downtime_ms) AS downtime_ms_max "
            f'FROM migrations {where} GROUP BY 1 ORDER BY 1 NULLS LAST')


@dataclass(frozen=True, slots=True)
class CompareTables:
    """What compare reads of a dataset: the migrations matching a condition, their devices,
    their checks (only when asked: the HTML page's curves), and the scan's warnings."""

    migrations: pa.Table
    devices: pa.Table
    checks: pa.Table | None = None
    warnings: tuple[str, ...] = ()


def compare_tables(root: str | Path, where: str | None = None, *, checks: bool = False) -> CompareTables:
    """The migrations matching ``where`` (a SQL condition on the migrations view's columns,
    host and date included), in (host, date, recording, migration) order, and their devices
    (and checks), with the columns groups.group_samples reads."""
    from profiler.dataset import groups

    cond = f"WHERE ({where})" if where and where.strip() else ""
    mcols = ", ".join(dict.fromkeys(("host", "date", "recording", "migration", "outcome", "view",
                                     *groups.BY, *groups.METRICS)))
    dcols = ", ".join(f"d.{c}" for c in ("recording", "migration", "device", "kind", *groups.DEVICE_METRICS))
    ccols = ", ".join(f"c.{c}" for c in groups.CURVE_COLUMNS)
    semi = "SEMI JOIN taken m ON {0}.recording = m.recording AND {0}.migration = m.migration"
    con, s = open_dataset(root, ("migrations", "devices", *(("checks",) if checks else ())))
    try:  # the migrations read once (a fleet's thousands of small files cost per read)
        con.execute(f"CREATE TEMP TABLE taken AS SELECT {mcols} FROM migrations {cond} "
                    "ORDER BY host, date, recording, migration")
        mig = con.sql("SELECT * FROM taken ORDER BY host, date, recording, migration").to_arrow_table()
        dev = con.sql(f"SELECT {dcols} FROM devices d {semi.format('d')}").to_arrow_table()
        chk = (con.sql(f"SELECT {ccols} FROM checks c {semi.format('c')}").to_arrow_table()
               if checks else None)
    except duckdb.Error as e:
        raise SQLError(f"--where: {_message(e)}") from None
    finally:
        con.close()
    return CompareTables(mig, dev, chk, tuple(s.warnings))
