"""`migprof query`: SQL over a fleet dataset (embedded DuckDB), or check / upgrade it."""

from __future__ import annotations

import argparse
import json
import sys

from profiler.errors import EXIT_OK, EXIT_USAGE, MigprofError

EXAMPLES = """examples:
    migprof query fleet/ "SELECT host, count(*) AS n, median(downtime_ms) FROM migrations GROUP BY host"
    migprof query fleet/ "SELECT * FROM migrations WHERE qemu_version LIKE '10.%'" --csv > m.csv
    migprof query fleet/ "DESCRIBE devices"             # the columns of a table
    migprof query fleet/ "SELECT kind, count(*) FROM checks GROUP BY ALL" --json | jq .
    migprof query fleet/ --check                        # foreign files, unfinished adds, versions
    migprof query fleet/ --upgrade                      # rewrite files an older migprof wrote
tables (views): events, recordings, migrations, checks, devices; each has host and date
    (the partition) and recording (+ migration) to join on. See docs/dataset.md.
exit status: 0 ok, 2 bad dataset or SQL (DuckDB's message), --check found problems.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("query", help="SQL over a fleet dataset (DuckDB)",
                       description="Run SQL over a migprof dataset (made with --dataset DIR): the "
                       "tables events, recordings, migrations, checks and devices are views over "
                       "its Parquet files, run on embedded DuckDB.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="the dataset directory")
    p.add_argument("sql", nargs="?", metavar="SQL", help="the statement(s); the last one's rows are printed")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="a JSON list of row objects")
    out.add_argument("--csv", action="store_true", help="CSV with a header")
    p.add_argument("--check", action="store_true",
                   help="check every file (foreign files, unfinished adds, versions, duplicates)")
    p.add_argument("--upgrade", action="store_true",
                   help="rewrite the files an older migprof wrote, then run SQL if given")
    return p


def _warn(lines) -> None:
    for w in lines:
        print(f"migprof: warning: {w}", file=sys.stderr)


def _check(args: argparse.Namespace) -> int:
    from profiler.dataset.scan import check

    c = check(args.dataset)
    _warn(c.scan.warnings)
    if args.json:
        sys.stdout.write(json.dumps(c.to_json(), indent=1) + "\n")
    else:
        s = c.scan
        print(f"{s.root}: {s.units} unit(s); " + ", ".join(
            f"{t} {c.files[t]} file(s) {c.rows[t]} row(s)" for t in c.files))
        for f in s.stale[:10]:
            print(f"older version: {f.path}")
        if s.stale:
            print(f"{len(s.stale)} file(s) at an older version: `migprof query {s.root} --upgrade`")
        if s.temp:
            print(f"{len(s.temp)} temp file(s) of an add that died (safe to delete): " + ", ".join(s.temp[:5]))
        for r, n in sorted(c.duplicates.items())[:10]:
            print(f"recording {r} is in {n} units (added twice, under two hosts or dates)")
        print("ok" if c.ok else "problems found")
    return EXIT_OK if c.ok else EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    if args.check:
        return _check(args)
    if args.upgrade:
        from profiler.dataset import upgrade

        u = upgrade(args.dataset)
        print(f"migprof: upgraded {u.units} unit(s): {u.recordings} recording(s), {u.files} file(s) "
              "rewritten", file=sys.stderr)
        _warn(f"not upgraded: {s}" for s in u.skipped)
        if not args.sql:
            return EXIT_USAGE if u.skipped else EXIT_OK
    if not args.sql:
        raise MigprofError("query: give the SQL to run (or --check / --upgrade)")
    from profiler.dataset.sql import run as run_sql
    from profiler.views import query as view

    res = run_sql(args.dataset, args.sql)
    _warn(res.warnings)
    if args.json:
        view.write_json(res.table, sys.stdout)
    elif args.csv:
        view.write_csv(res.table, sys.stdout)
    else:
        view.render_terminal(res.table)
    return EXIT_OK
