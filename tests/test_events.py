"""The event schema: conform/validate/concat keep every column and dtype."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from profiler import events


def test_empty_frame_has_schema() -> None:
    df = events.empty_frame()
    events.validate(df)
    assert list(df.columns) == list(events.COLUMNS)


def test_conform_fills_missing_and_casts() -> None:
    df = events.conform(pd.DataFrame({"event": ["migrate_set_state"], "state": ["active"], "bytes": [5]}))
    events.validate(df)
    assert df.loc[0, "bytes"] == 5
    assert df["t_ns"].isna().all()


def test_validate_names_the_bad_column() -> None:
    df = events.empty_frame().drop(columns=["device"])
    with pytest.raises(ValueError, match="device"):
        events.validate(df)


def test_concat_and_arrow_roundtrip() -> None:
    a = events.conform(pd.DataFrame({"event": ["a"], "side": ["source"], "t_ns": [2]}))
    b = events.conform(pd.DataFrame({"event": ["b"], "side": ["destination"], "t_ns": [1]}))
    c = events.sort_timeline(events.concat([a, b]))
    events.validate(c)
    assert list(c["event"]) == ["b", "a"]
    table = pa.Table.from_pandas(c, schema=events.ARROW_SCHEMA, preserve_index=False)
    assert table.num_rows == 2
    back = events.conform(table.to_pandas())
    events.validate(back)
    assert list(back["side"]) == ["destination", "source"]
