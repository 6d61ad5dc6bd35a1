"""bytescan's word reads against plain Python on the same bytes (digits, hex, names, numbers,
literals, line ends, slices, chunked reading)."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as stn

from profiler.sources import bytescan as BS

ALPHABET = b"0123456789abcdefABCDEFxyz_:@. -\r\x00\x7f\x80\xff"
text = stn.binary(max_size=60).map(lambda b: bytes(ALPHABET[x % len(ALPHABET)] for x in b))


def _run(data: bytes, p: int, chars: bytes, cap: int) -> int:
    n = 0
    while p + n < len(data) and data[p + n] in chars and n < cap:
        n += 1
    return n


DIGITS = b"0123456789"
HEX = b"0123456789abcdefABCDEF"
NAME = bytes(range(48, 58)) + bytes(range(65, 91)) + bytes(range(97, 123)) + b"_"
GRAPH = bytes(range(0x21, 0x7F))


@settings(max_examples=300, deadline=None)
@given(text, stn.integers(0, 60))
def test_runs(data: bytes, at: int) -> None:
    b = BS.Buf(data + b"\n")
    p = np.array([min(at, len(data))])
    for cls, chars in ((BS.digit_bits, DIGITS), (BS.hex_bits, HEX), (BS.name_bits, NAME),
                       (BS.graph_bits, GRAPH)):
        for cap in (7, 20, 128):
            assert BS.run(b, p, cls, cap)[0] == _run(data, int(p[0]), chars, cap)


@settings(max_examples=300, deadline=None)
@given(stn.text(alphabet="0123456789", min_size=1, max_size=19), stn.binary(max_size=9))
def test_decimal(digits: str, before: bytes) -> None:
    b = BS.Buf(before + digits.encode() + b"x")
    assert int(BS.decimal(b, np.array([len(before)]), np.array([len(digits)]))[0]) == int(digits)


@settings(max_examples=300, deadline=None)
@given(stn.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=16))
def test_hexadecimal(digits: str) -> None:
    b = BS.Buf(b"#" + digits.encode() + b"g")
    assert int(BS.hexadecimal(b, np.array([1]), np.array([len(digits)]))[0]) == int(digits, 16)


@settings(max_examples=200, deadline=None)
@given(text, text.map(lambda x: x.replace(b"\x00", b"")), stn.integers(0, 60))
def test_literal(data: bytes, lit: bytes, at: int) -> None:
    """(Literals hold no NUL: the zeros after the data would match it.)"""
    b = BS.Buf(data)
    p = min(at, len(data))
    assert bool(BS.literal(b, np.array([p]), lit)[0]) == data[p:].startswith(lit)


@settings(max_examples=200, deadline=None)
@given(stn.lists(stn.binary(max_size=20).map(lambda x: x.replace(b"\n", b"")), max_size=12),
       stn.sampled_from([b"\n", b"\r\n"]), stn.booleans())
def test_line_bounds_and_slices(lines: list[bytes], nl: bytes, last_nl: bool) -> None:
    data = nl.join(lines) + (nl if last_nl and lines else b"")
    b = BS.Buf(data)
    s, e = BS.line_bounds(b)
    want = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        want = want[:-1]
    want = [w[:-1] if w.endswith(b"\r") else w for w in want]
    offs, raw = BS.slices(b, s, e)
    got = [raw[offs[i]:offs[i + 1]].tobytes() for i in range(len(s))]
    assert got == want


@settings(max_examples=100, deadline=None)
@given(stn.lists(stn.binary(max_size=40).map(lambda x: x.replace(b"\n", b"")), max_size=30),
       stn.integers(1, 64), stn.booleans())
def test_read_lines_cuts_after_newlines_only(lines: list[bytes], size: int, last_nl: bool) -> None:
    data = b"\n".join(lines) + (b"\n" if last_nl and lines else b"")
    bufs = list(BS.read_lines(io.BytesIO(data), size))
    assert b"".join(x.a[: x.n].tobytes() for x in bufs) == data
    for x in bufs[:-1]:
        assert x.a[x.n - 1] == 10
    for x in bufs:  # zeros after the data: word reads past it see no stray bytes
        assert not x.a[x.n:].any()
