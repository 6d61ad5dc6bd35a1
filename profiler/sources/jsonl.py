"""The JSON-lines row file (a run directory's ``events.jsonl``, ``bpf.jsonl``): one schema row per line.

Written as events happen by the lab and the VFIO runner, read back by ``report`` and the
tests. Keys are ``profiler.events`` column names; missing keys are NA.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import pandas as pd

from profiler import events as ev
from profiler.errors import InputError
from profiler.events import rows_to_frame


def read_events_jsonl(path: str | Path, *, bad_lines: list[str] | None = None) -> pd.DataFrame:
    """Read a run directory's ``events.jsonl`` (one schema row per line) into a frame; rows
    written before schema v2 (older run directories) get its named columns.

    A line that is not a JSON object is an InputError naming the file and line; with
    ``bad_lines`` it is appended there as ``file:line: message`` instead and the other rows
    are kept (``migprof report`` on a damaged run directory).
    """
    p = Path(path)
    rows: list[dict[str, Any]] = []
    try:
        fh = p.open(encoding="utf-8", errors="replace" if bad_lines is not None else "strict")
    except OSError as e:
        raise InputError(p, f"cannot read: {e.strerror or e}") from e
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise InputError(p, "not a JSON object", line=n)
            except (json.JSONDecodeError, InputError) as e:
                err = e if isinstance(e, InputError) else InputError(p, f"not JSON ({e.msg})", line=n)
                if bad_lines is None:
                    raise err from None
                bad_lines.append(str(err))
                continue
            row = {k: v for k, v in row.items() if k in ev.COLUMNS}
            row.setdefault("seq", n)
            row.setdefault("file", str(p))
            row.setdefault("line", n)
            rows.append(row)
    return ev.conform(ev.upgrade_v1(rows_to_frame(rows)))


def row_to_json(row: Mapping[str, Any]) -> str:
    """One events.jsonl line: schema keys only, NA dropped."""
    out = {}
    for k, v in row.items():
        if k not in ev.COLUMNS or v is None or v is pd.NA:
            continue
        if isinstance(v, float) and v != v:
            continue
        out[k] = str(v) if isinstance(v, ev.Origin | ev.Side | ev.Clock) else v
    return json.dumps(out, sort_keys=True, default=str)


def write_frame(df: pd.DataFrame, fh: IO[str]) -> int:
    """Append a frame's rows as JSON lines; returns the rows written."""
    if not len(df):
        return 0
    obj = df.astype(object).where(df.notna(), None)
    for row in obj.to_dict("records"):
        fh.write(row_to_json(row) + "\n")
    return len(df)
