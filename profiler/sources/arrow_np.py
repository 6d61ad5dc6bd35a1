"""numpy arrays to Arrow arrays and back through their buffers.

``pyarrow.array()`` and ``Array.to_numpy()`` first check whether their input is a pandas
object, which imports pandas. The log parser goes through here instead, so a parse never
waits on that import: ``report`` imports pandas on another thread meanwhile
(``profiler.deferred``), and only the final frame needs it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_NP = {pa.int64(): np.int64, pa.int16(): np.int16, pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint64(): np.uint64, pa.int32(): np.int32, pa.uint32(): np.uint32,
       pa.int8(): np.int8, pa.float64(): np.float64}


def _bitmap(valid: np.ndarray | None) -> pa.Buffer | None:
    return None if valid is None or valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))


def from_np(values: np.ndarray, type: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """``pa.array(values, type=type, mask=~valid)`` for a boolean or fixed-width ``type``."""
    n = len(values)
    if type == pa.bool_():
        data = pa.py_buffer(np.packbits(np.asarray(values, bool), bitorder="little"))
    else:
        data = pa.py_buffer(np.ascontiguousarray(values, dtype=_NP[type]))
    return pa.Array.from_buffers(type, n, [_bitmap(valid), data])


def to_np(arr: pa.Array) -> np.ndarray:
    """``arr.to_numpy(zero_copy_only=False)`` of a boolean or fixed-width array without nulls
    (a view of its buffer where it can be)."""
    if arr.null_count:
        raise ValueError(f"to_np: {arr.null_count} nulls in a {arr.type} array")
    return _values(arr)


def filled(arr: pa.Array) -> np.ndarray:
    """``pc.fill_null(arr, 0).to_numpy()`` of a fixed-width array (a copy when it has nulls)."""
    vals = _values(arr)
    return np.where(valid(arr), vals, 0).astype(vals.dtype, copy=False) if arr.null_count else vals


def valid(arr: pa.Array) -> np.ndarray:
    """``arr.is_valid().to_numpy()``."""
    if not arr.null_count:
        return np.ones(len(arr), bool)
    return _bits(arr.buffers()[0], arr.offset, len(arr))


def _bits(buf: pa.Buffer | None, off: int, n: int) -> np.ndarray:
    bits = np.frombuffer(buf, np.uint8) if buf is not None else np.zeros(0, np.uint8)
    return np.unpackbits(bits, bitorder="little", count=off + n)[off:].view(bool)


def _values(arr: pa.Array) -> np.ndarray:
    n, off = len(arr), arr.offset
    data = arr.buffers()[1]
    if arr.type == pa.bool_():
        return _bits(data, off, n)
    dt = np.dtype(_NP[arr.type])
    if not n or data is None:  # (an all-null array may have no data buffer)
        return np.zeros(n, dt)
    return np.frombuffer(data, dt, count=n, offset=off * dt.itemsize)


def strings(items: list[str | None]) -> pa.Array:
    """``pa.array(items, type=pa.large_string())``."""
    enc = [b"" if s is None else s.encode() for s in items]
    offs = np.zeros(len(enc) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, enc), np.int64, len(enc)), out=offs[1:])
    valid = np.fromiter((s is not None for s in items), bool, len(items))
    return pa.Array.from_buffers(pa.large_string(), len(enc),
                                 [_bitmap(valid), pa.py_buffer(offs), pa.py_buffer(b"".join(enc))])


def ints(items: list[int | None]) -> pa.Array:
    """``pa.array(items, type=pa.int64())``."""
    valid = np.fromiter((v is not None for v in items), bool, len(items))
    vals = np.fromiter((0 if v is None else v for v in items), np.int64, len(items))
    return from_np(vals, pa.int64(), valid)


def scalar(value: int | float, type: pa.DataType) -> pa.Scalar:
    """``pa.scalar(value, type)`` (an argument for ``pyarrow.compute``, which would convert a
    plain number the same way)."""
    return from_np(np.array([value]), type)[0]
