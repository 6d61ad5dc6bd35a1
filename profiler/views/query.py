"""Render a query's rows: a terminal table, JSON (a list of row objects) or CSV."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import math
from typing import IO, Any

import pyarrow as pa

TERMINAL_ROWS = 1000  # more than this goes to --csv / --json


def _plain(v: Any) -> Any:
    """A JSON value: dates as ISO text, decimals as numbers, NaN/inf as null."""
    if isinstance(v, float):
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _rows(table: pa.Table):
    for batch in table.to_batches(max_chunksize=65536):
        yield from batch.to_pylist(maps_as_pydicts="lossy")


def write_json(table: pa.Table, out: IO[str]) -> None:
    """A JSON list of row objects, one row a line, streamed batch by batch."""
    out.write("[")
    first = True
    for row in _rows(table):
        out.write("\n" if first else ",\n")
        out.write(json.dumps({k: _plain(v) for k, v in row.items()}, ensure_ascii=False,
                             separators=(",", ":")))
        first = False
    out.write("\n]\n" if not first else "]\n")


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list | tuple):
        return json.dumps(_plain(v), ensure_ascii=False, separators=(",", ":"))
    v = _plain(v)
    return "" if v is None else v


def write_csv(table: pa.Table, out: IO[str]) -> None:
    """CSV with a header; nested values (maps, lists) as JSON text, null as empty."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(table.column_names)
    for row in _rows(table):
        w.writerow([_csv_cell(v) for v in row.values()])


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}" if abs(v) < 1e15 else f"{v:.4e}"
    if isinstance(v, dict | list | tuple):
        return json.dumps(_plain(v), separators=(",", ":"))
    return str(_plain(v))


def render_terminal(table: pa.Table, console=None) -> None:
    """A rich table of at most TERMINAL_ROWS rows; numbers right-aligned."""
    from rich.console import Console
    from rich.table import Table

    shown = table.slice(0, TERMINAL_ROWS)
    rows = [[_cell(v) for v in row.values()] for row in _rows(shown)]
    widths = [max([len(f.name), *(len(r[i]) for r in rows)]) for i, f in enumerate(table.schema)]
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped: whole rows, never folded to 80 columns
            console = Console(width=max(80, sum(widths) + 3 * len(widths) + 1))
    t = Table(show_header=True, header_style="bold", show_lines=False)
    for f in table.schema:
        num = pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        t.add_column(f.name, justify="right" if num else "left", overflow="fold", no_wrap=num)
    for r in rows:
        t.add_row(*r)
    console.print(t)
    more = table.num_rows - shown.num_rows
    tail = f" ({more} more not shown: use --csv or --json)" if more > 0 else ""
    console.print(f"{table.num_rows} row{'s' if table.num_rows != 1 else ''}{tail}", style="dim")
