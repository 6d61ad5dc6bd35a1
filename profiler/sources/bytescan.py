"""Vectorised reads of many text lines at once: numpy over 8-byte words (no Python per line).

A ``Buf`` wraps a chunk of bytes padded with zeros, and reads the unaligned 64-bit word at
any offset. Every function here takes an array of offsets (one per line or field) and
answers for all of them at once: how many bytes of a class start there (digits, hex digits,
name characters), the number they spell, whether a literal follows. Bytes are compared
eight at a time inside a word ("SIMD within a register": each byte's top bit carries its
answer), so a 20-digit number costs three word reads, not twenty byte reads.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

PAD = 4096  # zero bytes after the data: reads that run past a line (up to PAD - 8) stay inside

_ONES = np.uint64(0x0101010101010101)
_HIGH = np.uint64(0x8080808080808080)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_U8 = np.uint64(8)


class Buf:
    """A chunk of bytes and its word view; ``n`` = data bytes (``PAD`` zeros follow)."""

    def __init__(self, data: bytes | bytearray | memoryview | None = None, *,
                 array: np.ndarray | None = None, n: int = 0) -> None:
        """A copy of ``data``, or ``array`` itself (its first ``n`` bytes are the data, and
        at least ``PAD`` zero bytes follow)."""
        if array is None:
            n = len(data)
            array = np.zeros(n + PAD, np.uint8)
            array[:n] = np.frombuffer(data, np.uint8)
        self.n = n
        self.a = array
        # the 8 bytes at every offset, little-endian (first byte lowest), unaligned reads
        self.w = np.ndarray((len(array) - 7,), dtype="<u8", buffer=array, strides=(1,))


    def at(self, p: np.ndarray, k: int = 0) -> np.ndarray:
        """The word at each offset ``p + k`` (at most ``n + PAD - 8``)."""
        return (self.w[k:] if k else self.w)[p]


def _rng(w: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Top bit set in each byte of ``w`` that lies in [lo, hi] (ASCII ranges; bytes >= 0x80
    never match). The additions cannot carry across bytes: the top bits are cleared first."""
    y = w & _LOW7
    ge = (y + np.uint64((0x80 - lo) * 0x0101010101010101)) & _HIGH
    gt = (y + np.uint64((0x7F - hi) * 0x0101010101010101)) & _HIGH
    return ge & ~gt & ~(w & _HIGH)


def _eq(w: np.ndarray, c: int) -> np.ndarray:
    return _rng(w, c, c)


_ZEROS = np.uint64(0x3030303030303030)
_TEN = np.uint64(0x7676767676767676)  # 0x80 - 10 per byte


def digit_bits(w: np.ndarray) -> np.ndarray:
    """Top bit set in each digit byte, exact up to the first byte that is not one: after it
    a carry may turn a digit into a non-digit, never the reverse. Callers count leading
    digits or require all of a word's digits (where the first non-digit settles it)."""
    t = w ^ _ZEROS  # digits -> 0..9
    return ~((t + _TEN) | t) & _HIGH


def hex_bits(w: np.ndarray) -> np.ndarray:
    return _rng(w, 0x30, 0x39) | _rng(w, 0x41, 0x46) | _rng(w, 0x61, 0x66)


def name_bits(w: np.ndarray) -> np.ndarray:
    """[A-Za-z0-9_]"""
    return _rng(w, 0x30, 0x39) | _rng(w, 0x41, 0x5A) | _rng(w, 0x61, 0x7A) | _eq(w, 0x5F)


def graph_bits(w: np.ndarray) -> np.ndarray:
    """printable and not a space: ``!``..``~``"""
    return _rng(w, 0x21, 0x7E)


_ONE = np.uint64(1)
_SEVEN = np.uint64(7)
_TOP = np.uint64(56)


def lead(bits: np.ndarray) -> np.ndarray:
    """Number of leading (lowest) bytes whose top bit is set in ``bits``, 0..8."""
    miss = ~bits & _HIGH
    low = miss & (~miss + _ONE)  # the top bit of the first byte not in the class (0: none)
    # the top bits below it, one per byte, summed into the top byte by the multiply
    return ((((low - _ONE) & _HIGH) >> _SEVEN) * _ONES >> _TOP).astype(np.int64)


def run(buf: Buf, p: np.ndarray, cls, cap: int) -> np.ndarray:
    """Length of the run of ``cls`` bytes starting at each ``p``, counting at most ``cap``
    (words are read only while some run goes on)."""
    n = np.zeros(len(p), np.int64)
    act = np.arange(len(p))
    q = p
    done = 0
    while len(act) and done < cap:
        c = lead(cls(buf.at(q)))
        n[act] += c
        more = c == 8
        act = act[more]
        q = q[more] + 8
        done += 8
    return np.minimum(n, cap)


def dec8(w: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The number spelled by the first ``k`` (0..8) digit bytes of each word."""
    d = w - np.uint64(0x3030303030303030)  # digits -> 0..9 (bytes past k may borrow: discarded)
    d = np.where(k > 0, d << (np.minimum(8 - k, 7) * 8).astype(np.uint64), np.uint64(0))
    d = ((d * np.uint64(10)) + (d >> _U8)) & np.uint64(0x00FF00FF00FF00FF)
    d = ((d * np.uint64(100)) + (d >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    d = ((d * np.uint64(10000)) + (d >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    return d


def _hex8(w: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The number spelled by the first ``k`` (0..8) hex-digit bytes of each word."""
    d = (w & np.uint64(0x0F0F0F0F0F0F0F0F)) + ((w >> np.uint64(6)) & _ONES) * np.uint64(9)
    d = np.where(k > 0, d << (np.minimum(8 - k, 7) * 8).astype(np.uint64), np.uint64(0))
    d = ((d << np.uint64(4)) + (d >> _U8)) & np.uint64(0x00FF00FF00FF00FF)
    d = ((d << _U8) + (d >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    d = ((d << np.uint64(16)) + (d >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    return d


_POW10 = np.array([10**i for i in range(20)], dtype=np.uint64)


def decimal(buf: Buf, p: np.ndarray, k: np.ndarray) -> np.ndarray:
    """uint64 value of the ``k`` (<= 19) digits at each ``p`` (k = 0 -> 0)."""
    k0 = np.minimum(k, 8)
    v = dec8(buf.at(p), k0)
    k1 = np.clip(k - 8, 0, 8)
    if (k1 > 0).any():
        v = v * _POW10[k1] + dec8(buf.at(p, 8), k1)
        k2 = np.clip(k - 16, 0, 3)
        if (k2 > 0).any():
            v = v * _POW10[k2] + dec8(buf.at(p, 16), k2)
    return v


def hexadecimal(buf: Buf, p: np.ndarray, k: np.ndarray) -> np.ndarray:
    """uint64 value of the ``k`` (<= 16) hex digits at each ``p``."""
    k0 = np.minimum(k, 8)
    v = _hex8(buf.at(p), k0)
    k1 = np.clip(k - 8, 0, 8)
    if (k1 > 0).any():
        v = (v << (k1 * 4).astype(np.uint64)) | _hex8(buf.at(p, 8), k1)
    return v


def literal(buf: Buf, p: np.ndarray, lit: bytes) -> np.ndarray:
    """Does ``lit`` (no NUL in it: the padding is zeros) start at each ``p``?"""
    ok = None
    for j in range(0, len(lit), 8):
        piece = lit[j:j + 8]
        want = np.uint64(int.from_bytes(piece, "little"))
        w = buf.at(p, j)
        if len(piece) < 8:
            w &= np.uint64((1 << (8 * len(piece))) - 1)
        ok = (w == want) if ok is None else ok & (w == want)
    return ok if ok is not None else np.ones(len(p), bool)


def line_bounds(buf: Buf) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of every line; ``end`` excludes the newline and one ``\\r`` before it. The
    last line may lack its newline."""
    data = buf.a[: buf.n]
    nl = np.flatnonzero(data == 10)
    if buf.n and (not len(nl) or nl[-1] != buf.n - 1):
        nl = np.append(nl, buf.n)
    starts = np.empty(len(nl), np.int64)
    if len(nl):
        starts[0] = 0
        starts[1:] = nl[:-1] + 1
    ends = nl.astype(np.int64)
    cr = (ends > starts) & (buf.a[np.maximum(ends - 1, 0)] == 13)
    return starts, ends - cr


def slices(buf: Buf, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets, uint8 bytes) of buf[s[r]:e[r]] for every row, for an Arrow string array."""
    lens = np.maximum(e - s, 0)
    offs = np.zeros(len(s) + 1, np.int64)
    np.cumsum(lens, out=offs[1:])
    total = int(offs[-1])
    if not total:
        return offs, np.zeros(0, np.uint8)
    if total * 4 < buf.n:  # few bytes: gather them by index
        idx = np.arange(total, dtype=np.int64) + np.repeat(s - offs[:-1], lens)
        return offs, buf.a[idx]
    # most of the chunk: mark the kept bytes and compress (no index array of 8x the bytes)
    mark = np.zeros(buf.n + 1, np.int8)
    some = lens > 0  # spans are in order and apart (lines): no start meets another's end
    mark[s[some]] = 1
    mark[e[some]] = -1
    keep = np.cumsum(mark[:-1], dtype=np.int8).view(bool)
    return offs, buf.a[: buf.n][keep]


def read_lines(f, size: int) -> Iterator[Buf]:
    """Read the binary file ``f`` in ``Buf``s of about ``size`` bytes that end at a newline
    (the last one may not), straight into their padded arrays."""
    carry = np.zeros(0, np.uint8)
    while True:
        a = np.zeros(len(carry) + size + PAD, np.uint8)
        a[: len(carry)] = carry
        got = f.readinto(memoryview(a)[len(carry): len(carry) + size])
        filled = len(carry) + (got or 0)
        if not got:
            if filled:
                yield Buf(array=a, n=filled)
            return
        nl = np.flatnonzero(a[max(len(carry), filled - 4096): filled] == 10)
        if not len(nl):
            nl = np.flatnonzero(a[len(carry): filled] == 10)
            base = len(carry)
        else:
            base = max(len(carry), filled - 4096)
        if not len(nl):  # no line end yet: read on
            carry = a[:filled].copy()
            continue
        cut = base + int(nl[-1]) + 1
        carry = a[cut:filled].copy()
        a[cut:filled] = 0
        yield Buf(array=a, n=cut)
