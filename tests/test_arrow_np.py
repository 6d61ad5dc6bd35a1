"""profiler.sources.arrow_np gives what pyarrow's own conversions give (pa.array, to_numpy,
fill_null, is_valid), on sliced arrays and with nulls."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiler.sources import arrow_np as AN

INTS = st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=40)


@given(INTS, st.integers(0, 5))
def test_ints_and_their_values(items: list[int | None], cut: int) -> None:
    got, want = AN.ints(items), pa.array(items, type=pa.int64())
    assert got.equals(want)
    got, want = got.slice(min(cut, len(items))), want.slice(min(cut, len(items)))
    assert np.array_equal(AN.valid(got), want.is_valid().to_numpy(zero_copy_only=False))
    assert np.array_equal(AN.filled(got), pc.fill_null(want, 0).to_numpy(zero_copy_only=False))


@given(st.lists(st.one_of(st.none(), st.text()), max_size=30))
def test_strings(items: list[str | None]) -> None:
    assert AN.strings(items).equals(pa.array(items, type=pa.large_string()))


@given(st.lists(st.booleans(), max_size=70), st.integers(0, 9))
def test_booleans_both_ways(bits: list[bool], cut: int) -> None:
    arr = AN.from_np(np.array(bits, bool), pa.bool_())
    assert arr.equals(pa.array(bits, type=pa.bool_()))
    sliced = arr.slice(min(cut, len(bits)))
    assert AN.to_np(sliced).tolist() == bits[min(cut, len(bits)):]


@pytest.mark.parametrize("typ,dt", [(pa.int64(), np.int64), (pa.uint64(), np.uint64), (pa.float64(), np.float64),
                                    (pa.int32(), np.int32)])
def test_fixed_width_with_a_mask(typ: pa.DataType, dt: type) -> None:
    vals = np.arange(10).astype(dt)
    valid = vals % 3 != 0
    assert AN.from_np(vals, typ, valid).equals(pa.array(vals, type=typ, mask=~valid))
    assert AN.to_np(AN.from_np(vals, typ).slice(4)).tolist() == vals[4:].tolist()
    assert AN.scalar(7, typ).equals(pa.scalar(7, type=typ))


def test_nulls_are_refused_where_there_is_no_value() -> None:
    with pytest.raises(ValueError, match="1 nulls"):
        AN.to_np(AN.ints([1, None]))
    assert AN.filled(pa.nulls(3, pa.int64())).tolist() == [0, 0, 0]
