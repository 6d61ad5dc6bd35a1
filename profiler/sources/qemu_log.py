"""Parse the QEMU ``log`` trace back end (every prefix, QEMU 7.2 to 10.2) into schema frames.

Lines are never handled one by one in Python: the file is read in chunks of bytes and
each chunk is scanned with numpy, every line at once (``bytescan``: prefix, event name,
then each event's body grammar from ``trace_formats``, eight bytes per step; grammars
with a string before other fields go through Arrow's RE2); only rare lines (the proposed
``prog(tid:thread):`` prefix, bodies the vectorised passes cannot settle) go through
``re``. Memory grows with the events kept: a chunk's lines are dropped once its events
are extracted, and ``keep`` limits the rows to the events a caller reads.

Line prefixes (qemu-trace.md section 4, landscape.md section 4.1):

* ``TID@SEC.USEC:event body``            QEMU 6.0-10.0 with ``-msg timestamp=on``
* ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z event body``   QEMU 10.1+ with ``-msg timestamp=on``
* ``event body``                          no timestamps (default)
* ``[ISO ][[guest] ]prog(TID:thread): event body``  proposed unconditional thread info
* ``PID@NS event body``                   SystemTap ``qemu-trace-stap`` log tapset
"""

from __future__ import annotations

import gzip
import os
import re
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from profiler import events
from profiler.deferred import pd
from profiler.errors import InputError
from profiler.sources import arrow_np as AN
from profiler.sources import bytescan as BS
from profiler.sources.qemu_event_names import known_event_names
from profiler.sources.trace_formats import (
    HEX,
    INT,
    STR,
    Spans,
    Variant,
    as_signed64,
    fill_columns,
    formats,
)

CHUNK_BYTES = 12 << 20  # fewer chunks, less per-chunk work; 3 chunks in flight at most (~240 MB peak)
WORKERS = 2
MAX_WARNINGS = 50

_STR_COLS = ("device", "state", "detail")

# Destination-only events (side detection) and source-only ones.
_DEST_PREFIXES = ("loadvm_", "process_incoming_", "vfio_load_")
_SRC_PREFIXES = ("migrate_pending",)

_PROG_RE = re.compile(
    rb"(?:(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d{1,9}))?Z )?"
    rb"(?:\[[^\]\n]*\] )?[^\s(]+\((?P<tid>\d+):[^)\n]*\): (?P<name>[A-Za-z0-9_]+)(?: |\r?$)")


@dataclass
class ParseResult:
    """What one input yielded: kept events, and counts that always add up.

    ``lines == events + malformed + skipped``; malformed lines are kept in ``frame``
    with their raw text and no fields. ``dropped`` counts the events and malformed lines
    left out of ``frame`` because the caller asked only for some events (``keep``).
    """

    frame: pd.DataFrame
    lines: int = 0
    skipped: int = 0
    malformed: int = 0
    warnings: list[str] = field(default_factory=list)
    side: str = "unknown"
    file: str | None = None
    event_names: set[str] = field(default_factory=set)
    dropped: int = 0

    @property
    def events(self) -> int:
        """Well-formed events (in ``frame`` or dropped)."""
        return len(self.frame) - self.malformed + self.dropped


class _Acc:
    """Per-input accumulator: chunk tables, counts, capped warnings."""

    def __init__(self, file: str | None, first_line: int = 1) -> None:
        self.file = file
        self.first_line = first_line
        self.tables: list[dict] = []
        self.line_warnings: list[tuple[int, str]] = []  # (0-based line in the chunk, text)
        self.lines = 0
        self.skipped = 0
        self.malformed = 0
        self.dropped = 0
        self.warnings: list[str] = []
        self.names: set[str] = set()

    def merge(self, other: _Acc) -> None:
        """Append a chunk parsed with line numbers counted from 0."""
        off = self.first_line + self.lines
        for t in other.tables:
            for col in ("seq", "line"):
                kind, vals, valid = t[col]
                t[col] = (kind, vals + off, valid)
        for r, msg in other.line_warnings:
            self.warn(off + r, msg)
        self.tables += other.tables
        self.lines += other.lines
        self.skipped += other.skipped
        self.malformed += other.malformed
        self.dropped += other.dropped
        self.warnings += other.warnings[: max(0, MAX_WARNINGS - len(self.warnings))]
        self.names |= other.names

    def warn(self, line: int, msg: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(f"{self.file or '<bytes>'}:{line}: {msg}")


# ---------------------------------------------------------------------------
# line prefixes and event names (every line of a chunk at once)

KIND_BARE, KIND_TID, KIND_STAP, KIND_ISO = 0, 1, 2, 3
SAMPLE = 64  # lines whose layout and event name are read first, to try on all lines at once


def _word_mask(spec: dict[int, int]) -> tuple[np.uint64, np.uint64]:
    """(mask, value) that test bytes at offsets within one word."""
    m = v = 0
    for i, c in spec.items():
        m |= 0xFF << (8 * i)
        v |= c << (8 * i)
    return np.uint64(m), np.uint64(v)


def _template(text: str) -> list[tuple[np.uint64, np.uint64, np.uint64]]:
    """Per word of a fixed layout (``d`` = a digit, any other character itself): (digit
    bits, separator mask, separator value)."""
    out = []
    for j in range(0, len(text), 8):
        part = text[j:j + 8]
        dig = sum(0x80 << (8 * i) for i, c in enumerate(part) if c == "d")
        m, v = _word_mask({i: ord(c) for i, c in enumerate(part) if c != "d"})
        out.append((np.uint64(dig), m, v))
    return out


def _fits(b: BS.Buf, p: np.ndarray, tmpl: list) -> np.ndarray:
    """Do the bytes at each ``p`` follow the layout ``tmpl`` (``_template``)?"""
    ok = np.ones(len(p), bool)
    for j, (dig, m, v) in enumerate(tmpl):
        w = b.at(p, 8 * j)
        ok &= ((BS.digit_bits(w) & dig) == dig) & ((w & m) == v)
    return ok


_ISO = _template("dddd-dd-ddTdd:dd:dd")


class _Lines:
    """What the prefix and name scan found, one entry per line of a chunk: the prefix
    ``kind`` and its digit counts (``d1``, ``d2``: before and after the ``@``; ``d2`` is the
    fraction's digits for ISO), where the event name starts (``ns``) and ends (``ne``),
    whether the line is a trace candidate (``valid``), and its name ``key``. Times and ids
    are read later, for the rows kept only (``_times``)."""

    def __init__(self, s: np.ndarray, e: np.ndarray) -> None:
        n = len(s)
        self.s, self.e = s, e
        self.kind = np.zeros(n, np.int8)
        self.d1 = np.zeros(n, np.int64)
        self.d2 = np.zeros(n, np.int64)
        self.ns = s.copy()
        self.ne = s.copy()
        self.valid = np.zeros(n, bool)
        self.key = np.zeros(n, np.uint64)
        self.done = np.zeros(n, bool)  # settled by ``_common_lines``
        self.prog: dict[int, tuple[int | None, bool]] = {}  # row -> (tid, time kept)


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _tid_stap(b: BS.Buf, L: _Lines, r: np.ndarray) -> None:
    """``TID@SEC.USEC:`` and ``PID@NS `` on rows ``r``, one digit run at a time."""
    a, s = b.a, L.s[r]
    d1 = BS.run(b, s, BS.digit_bits, 20)
    at = (d1 >= 1) & (d1 <= 18) & (a[s + d1] == 0x40)  # at most 18 digits before the @
    r, s, d1 = r[at], s[at], d1[at]
    k0 = s + d1 + 1
    d2 = BS.run(b, k0, BS.digit_bits, 20)
    nxt = a[k0 + d2]
    k1 = k0 + d2 + 1
    tid = (d2 >= 1) & (d2 <= 18) & (nxt == 0x2E)
    tid[tid] = (BS.run(b, k1[tid], BS.digit_bits, 7) == 6) & (a[k1[tid] + 6] == 0x3A)
    stap = (d2 >= 1) & (d2 <= 19) & (nxt == 0x20)
    L.kind[r[tid]] = KIND_TID
    L.ns[r[tid]] = k1[tid] + 7
    L.kind[r[stap]] = KIND_STAP
    L.ns[r[stap]] = k1[stap]
    got = tid | stap
    L.d1[r[got]] = d1[got]
    L.d2[r[got]] = d2[got]


def _sample(rows: np.ndarray) -> np.ndarray:
    return rows[np.unique(np.linspace(0, len(rows) - 1, min(len(rows), SAMPLE)).astype(np.int64))]


def _layouts(b: BS.Buf, L: _Lines, rows: np.ndarray) -> np.ndarray:
    """Lines in the ``TID@SEC.USEC:`` layouts most of the sample has (the same digit counts:
    one thread, seconds of the same length), checked against that layout a word at a time;
    returns the rows left for the digit-by-digit scan."""
    sample = _sample(rows)
    _tid_stap(b, L, sample)
    tid = sample[L.kind[sample] == KIND_TID]
    if not len(tid):
        return rows
    pairs, counts = np.unique(L.d1[tid] * 64 + L.d2[tid], return_counts=True)
    rest = rows
    for pair in pairs[np.argsort(-counts)][:2].tolist():
        d1, d2 = divmod(pair, 64)
        ok = _fits(b, L.s[rest], _template("d" * d1 + "@" + "d" * d2 + ".dddddd:"))
        got = rest[ok]
        L.kind[got] = KIND_TID
        L.d1[got] = d1
        L.d2[got] = d2
        L.ns[got] = L.s[got] + d1 + d2 + 9
        rest = rest[~ok]
    return rest


def _prefixes(b: BS.Buf, L: _Lines, rows: np.ndarray) -> None:
    """Read the prefix of each line in ``rows``: ``TID@SEC.USEC:``, ``PID@NS `` (SystemTap),
    ISO-8601 or none."""
    rest = _layouts(b, L, rows)
    rest = rest[L.kind[rest] == KIND_BARE]
    if len(rest):
        _tid_stap(b, L, rest)
    # YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z<space>
    cand = rest[(L.kind[rest] == KIND_BARE) & (L.e[rest] - L.s[rest] >= 21)]
    if len(cand):
        a = b.a
        cand = cand[_fits(b, L.s[cand], _ISO)]
        ss = L.s[cand]
        dot = a[ss + 19] == 0x2E
        nf = np.zeros(len(ss), np.int64)
        if dot.any():
            nf[dot] = BS.run(b, ss[dot] + 20, BS.digit_bits, 10)
        q = ss + 19 + np.where(dot, nf + 1, 0)
        ok = (~dot | ((nf >= 1) & (nf <= 9))) & (q + 1 < L.e[cand]) & (a[q] == 0x5A) & (a[q + 1] == 0x20)
        cand = cand[ok]
        L.kind[cand] = KIND_ISO
        L.d2[cand] = nf[ok]
        L.ns[cand] = q[ok] + 2


def _times(b: BS.Buf, L: _Lines, rows: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """t_ns, tid and pid (values, valid) of ``rows`` from their prefixes."""
    k = len(rows)
    t, t_ok = np.zeros(k, np.int64), np.zeros(k, bool)
    tid, tid_ok = np.zeros(k, np.int64), np.zeros(k, bool)
    pid = np.zeros(k, np.int64)
    kind, s, d1, d2 = L.kind[rows], L.s[rows], L.d1[rows], L.d2[rows]
    for kd in (KIND_TID, KIND_STAP):
        i = np.flatnonzero(kind == kd)
        if not len(i):
            continue
        lead = BS.decimal(b, s[i], d1[i]).view(np.int64)
        k0 = s[i] + d1[i] + 1
        sec = BS.decimal(b, k0, d2[i])
        if kd == KIND_TID:
            tid[i], tid_ok[i] = lead, True
            usec = BS.decimal(b, k0 + d2[i] + 1, np.full(len(i), 6))
            sec = sec * np.uint64(1_000_000_000) + usec * np.uint64(1000)
        else:
            pid[i] = lead
        t[i], t_ok[i] = sec.view(np.int64), True
    i = np.flatnonzero(kind == KIND_ISO)
    if len(i):
        ss, nf = s[i], d2[i]
        two = np.full(len(i), 2)
        y = BS.decimal(b, ss, np.full(len(i), 4)).astype(np.int64)
        mo, d, hh, mi, sec = (BS.decimal(b, ss + o, two).astype(np.int64) for o in (5, 8, 11, 14, 17))
        frac = BS.decimal(b, ss + 20, nf).astype(np.int64) * (10 ** (9 - nf))
        good = (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= 31) & (hh <= 23) & (mi <= 59) & (sec <= 60)
        tt = (_days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + sec) * 1_000_000_000 + frac
        t[i[good]], t_ok[i[good]] = tt[good], True
    if L.prog:
        where = {int(r): j for j, r in enumerate(rows.tolist()) if int(r) in L.prog}
        for r, j in where.items():
            ptid, timed = L.prog[r]
            tid[j], tid_ok[j] = ptid or 0, ptid is not None
            t_ok[j] &= timed
    return {"t": (t, t_ok), "tid": (tid, tid_ok), "pid": (pid, kind == KIND_STAP)}


_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_NAME_RE = re.compile(rb"[A-Za-z0-9_]{1,127}")


def _tokens(b: BS.Buf, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Length (up to 128) and 64-bit key of the word (bytes ``!``..``~``) at each ``p``:
    equal words, equal keys (a collision among a chunk's few hundred names is out of reach)."""
    n = np.zeros(len(p), np.int64)
    h = np.zeros(len(p), np.uint64)
    act = np.arange(len(p))
    q = p
    for _ in range(16):
        if not len(act):
            break
        w = b.at(q)
        c = BS.lead(BS.graph_bits(w))
        x = (h[act] ^ (w & _MASKS[c])) * _MIX
        h[act] = x ^ (x >> np.uint64(29))
        n[act] += c
        more = c == 8
        act = act[more]
        q = q[more] + 8
    return n, h ^ (n.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))


def _key(word: bytes) -> np.uint64:
    """``_tokens``' key of one word."""
    return _tokens(BS.Buf(word + b" "), np.zeros(1, np.int64))[1][0]


def _factorize(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(code of each key, distinct keys in order of appearance): a hash table in Arrow's C++
    (pandas may still be importing on another thread, see ``profiler.deferred``)."""
    d = AN.from_np(keys, pa.uint64()).dictionary_encode()
    return AN.to_np(d.indices), AN.to_np(d.dictionary)


def _names(b: BS.Buf, L: _Lines, rows: np.ndarray) -> None:
    """The event name of each line in ``rows``: the word after the prefix, when it is a name
    followed by a space or the line end. The sample's common names are tried on every line
    as literals first; the rest are read word by word."""
    ln = np.zeros(len(L.s), np.int64)
    sample = _sample(rows)
    sl, sk = _tokens(b, L.ns[sample])
    rest = rows
    keys, first, counts = np.unique(sk, return_index=True, return_counts=True)
    for j in np.argsort(-counts)[:3].tolist():
        if counts[j] < len(sample) // 8:
            break
        r = sample[first[j]]
        word = bytes(b.a[L.ns[r]: L.ns[r] + sl[first[j]]])
        if not _NAME_RE.fullmatch(word):
            continue
        ok = BS.literal(b, L.ns[rest], word + b" ")
        got = rest[ok]
        ln[got] = len(word)
        L.key[got] = keys[j]
        rest = rest[~ok]
    if len(rest):
        ln[rest], L.key[rest] = _tokens(b, L.ns[rest])
    ne = L.ns[rows] + ln[rows]
    L.ne[rows] = ne
    valid = (ln[rows] > 0) & (ln[rows] < 128) & ((ne == L.e[rows]) | (b.a[ne] == 0x20))
    # a word of other printable characters is no name: checked once per distinct word
    vrows = rows[valid]
    codes, uniq = _factorize(L.key[vrows])
    if len(uniq):
        first = np.empty(len(uniq), np.int64)
        first[codes[::-1]] = vrows[::-1]
        good = np.array([bool(_NAME_RE.fullmatch(bytes(b.a[L.ns[r]: L.ne[r]]))) for r in first.tolist()])
        valid[valid] = good[codes]
    L.valid[rows] = valid


def _prog_lines(data, b: BS.Buf, L: _Lines, rows: np.ndarray) -> None:
    """The proposed ``prog(tid:thread):`` prefix: rare, one regex per line holding ``): ``
    that the other prefixes did not settle."""
    need = rows[~L.valid[rows] | (L.kind[rows] == KIND_ISO) | (L.kind[rows] == KIND_BARE)]
    if not len(need):
        return
    a = b.a[: b.n]
    c = np.flatnonzero(a[:-2] == 0x29)
    c = c[(a[c + 1] == 0x3A) & (a[c + 2] == 0x20)]
    if not len(c):
        return
    li = np.searchsorted(L.s, c, side="right") - 1
    li = np.unique(li[c + 2 < L.e[li]])
    li = li[np.isin(li, need)]
    got = []
    for r in li.tolist():
        m = _PROG_RE.match(data, int(L.s[r]), int(L.e[r]))
        if not m:
            continue
        L.ns[r] = m.start("name")
        L.ne[r] = m.end("name")
        L.valid[r] = True
        tid = int(m["tid"])
        L.prog[r] = (tid if tid < (1 << 63) else None, bool(m["iso"]))
        got.append(r)
    if got:
        got_rows = np.array(got, np.int64)
        L.key[got_rows] = _tokens(b, L.ns[got_rows])[1]


_PREFIX_RE = (r"(?:\d{1,18}@\d{1,18}\.\d{6}:|\d{1,18}@\d{1,19} "
              r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z )?")
_LINE_RE: dict[str, str | None] = {}


def _line_pattern(name: str, variants: list[Variant]) -> str | None:
    """An RE2 pattern for a whole, well-formed line of event ``name`` (any prefix but
    ``prog(tid:thread):``, a space, then a body of one of its variants), or None when a
    variant's grammar is empty (the line may end right after the name)."""
    if name not in _LINE_RE:
        bodies = [v.regex.pattern.removeprefix("^").removesuffix("$") for v in variants]
        if any(not v.tokens for v in variants) or not all(bodies):
            _LINE_RE[name] = None
        else:
            alts = "|".join(re.sub(r"\(\?P<[A-Za-z0-9_]+>", "(?:", x) for x in bodies)
            _LINE_RE[name] = f"(?s)^{_PREFIX_RE}{re.escape(name)} (?:{alts})\\r?\\n?\\z"
    return _LINE_RE[name]


def _common_lines(b: BS.Buf, L: _Lines, known: frozenset[str], keep: Collection[str],
                  fmts: dict[str, list[Variant]]) -> dict[int, str]:
    """Settle the lines of the sample's most common events that the caller does not keep
    with one RE2 match per event over every line (prefix, name and body at once, in C):
    they only need counting. Marks them ``done`` (well-formed, name ``key``); returns
    key -> name of those events."""
    n = len(L.s)
    sample = _sample(np.arange(n))
    _prefixes(b, L, sample)
    _names(b, L, sample)
    keys, first, counts = np.unique(L.key[sample[L.valid[sample]]], return_index=True, return_counts=True)
    vs = sample[L.valid[sample]]
    names: dict[int, str] = {}
    lines = None
    for j in np.argsort(-counts).tolist():
        if counts[j] < len(sample) // 8:
            break
        r = vs[first[j]]
        name = bytes(b.a[L.ns[r]: L.ne[r]]).decode("ascii")
        pat = _line_pattern(name, fmts[name]) if name in known and name in fmts and name not in keep else None
        if pat is None:
            continue
        if lines is None:  # every line with its newline, without a copy
            offs = np.append(L.s, b.n)
            lines = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offs),
                                                                  pa.py_buffer(b.a[: b.n])])
        hit = AN.to_np(pc.match_substring_regex(lines, pat)) & ~L.done
        key = _key(name.encode())
        names[int(key)] = name
        L.done |= hit
        L.valid |= hit
        L.key[hit] = key
    return names


# ---------------------------------------------------------------------------
# event bodies


_U64_MAX_10 = np.uint64(1844674407370955161)


def _slow_int(b: BS.Buf, q: int, stop: int, hex_: bool) -> tuple[int, int | None]:
    """(end, value or None when over 64 bits) of a digit run too long for the word reads."""
    digits = b"0123456789abcdefABCDEF" if hex_ else b"0123456789"
    end = q
    while end < stop and b.a[end] in digits:
        end += 1
    v = int(bytes(b.a[q:end]), 16 if hex_ else 10)
    return end, (v if v < (1 << 64) else None)


def _read_int(b: BS.Buf, p: np.ndarray, end: np.ndarray, kind: str, values: bool, packed: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """An integer field at each ``p``: ``-?(0x[hex]+|[0-9]+)`` (``INT``) or ``[hex]+``
    (``HEX``). Returns (position after it, found, int64 value, value fits in 64 bits).

    Plain decimals of up to 7 digits (most fields) are read from one word; signs, hex and
    longer numbers take a second pass over their rows only."""
    m = len(p)
    w = b.at(p)
    cnt = BS.lead(BS.digit_bits(w))
    if kind == INT:
        hexish = (w & np.uint64(0xDFFF)) == 0x5830  # 0x / 0X
        plain = (cnt > 0) & (cnt < 8) & ~hexish
    else:
        plain = np.zeros(m, bool)
    if packed:  # strings side by side: the next one may begin with digits
        cnt = np.minimum(cnt, np.maximum(end - p, 0))
    after = p + cnt
    found = plain & (cnt > 0)
    v = BS.dec8(w, cnt) if values else None
    slow = np.flatnonzero(~plain)
    if len(slow):
        a2, f2, v2, fits2 = _read_int_slow(b, p[slow], end[slow], kind, values)
        after[slow], found[slow] = a2, f2
        if values:
            v[slow] = v2.view(np.uint64)
            fits = np.ones(m, bool)
            fits[slow] = fits2
            return after, found, v.view(np.int64), fits
    if not values:
        return after, found, None, None
    return after, found, v.view(np.int64), np.ones(m, bool)


def _read_int_slow(b: BS.Buf, p: np.ndarray, end: np.ndarray, kind: str, values: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``_read_int`` for any integer: sign, ``0x``, runs past one word, past 64 bits."""
    m = len(p)
    if kind == INT:
        neg = b.a[p] == 0x2D
        p = p + neg
        zx = (b.a[p] == 0x30) & ((b.a[p + 1] | 0x20) == 0x78) & (p + 2 < end)
        q = p + 2 * zx
    else:
        neg = np.zeros(m, bool)
        zx = np.ones(m, bool)
        q = p
    cnt = np.zeros(m, np.int64)
    hx = np.flatnonzero(zx)
    dc = np.flatnonzero(~zx)
    if len(hx):
        cnt[hx] = BS.run(b, q[hx], BS.hex_bits, 24)
    if len(dc):
        cnt[dc] = BS.run(b, q[dc], BS.digit_bits, 24)
    cnt = np.minimum(cnt, np.maximum(end - q, 0))
    found = cnt > 0
    after = q + cnt
    if not values:
        long = np.flatnonzero(found & (cnt >= 24))
        for r in long.tolist():
            after[r] = _slow_int(b, int(q[r]), int(end[r]), bool(zx[r]))[0]
        return after, found, None, None
    v = np.zeros(m, np.uint64)
    fits = found.copy()
    if len(hx):
        k = cnt[hx]
        v[hx] = BS.hexadecimal(b, q[hx], np.minimum(k, 16))
        fits[hx[k > 16]] = False
    if len(dc):
        k = cnt[dc]
        v[dc] = BS.decimal(b, q[dc], np.minimum(k, 19))
        twenty = dc[k == 20]
        if len(twenty):
            last = b.a[q[twenty] + 19].astype(np.uint64) - np.uint64(48)
            v19 = v[twenty]
            fits[twenty] = (v19 < _U64_MAX_10) | ((v19 == _U64_MAX_10) & (last <= 5))
            v[twenty] = v19 * np.uint64(10) + last
        fits[dc[k > 20]] = False
    # runs past the word reads (leading zeros) or past 64 bits: one by one, exactly
    long = np.flatnonzero(found & np.where(zx, cnt > 16, cnt > 20))
    for r in long.tolist():
        after[r], val = _slow_int(b, int(q[r]), int(end[r]), bool(zx[r]))
        fits[r] = val is not None
        v[r] = np.uint64(val or 0)
    sv = v.view(np.int64)
    return after, found, np.where(neg, -sv, sv), fits


def _fast_grammar(v: Variant) -> bool:
    """Literals, integers, and strings that end the body or a literal follows: read with
    word scans (other grammars, with pointers or floats, go to RE2)."""
    toks = v.tokens
    return all(t[0] in ("lit", INT, HEX) or (t[0] == STR and (k == len(toks) - 1 or toks[k + 1][0] == "lit"))
               for k, t in enumerate(toks))


def _find_literal(b: BS.Buf, p: np.ndarray, end: np.ndarray, lit: bytes, last: bool) -> np.ndarray:
    """Where a string field that starts at each ``p`` ends: at the first place ``lit`` (the
    literal after it) occurs, or, when that literal ends the body, where it must start
    (``end - len(lit)``); -1 where it does not occur."""
    n = len(lit)
    if last:
        at = end - n
        ok = (at >= p) & BS.literal(b, np.maximum(at, 0), lit)
        return np.where(ok, at, -1)
    found = np.full(len(p), -1, np.int64)
    offs, data = BS.slices(b, p, end - n + 1)  # where the literal may start
    c = np.flatnonzero(data == lit[0])
    if len(c):
        row = np.searchsorted(offs, c, side="right") - 1
        at = p[row] + (c - offs[row])
        hit = BS.literal(b, at, lit)
        row, at = row[hit], at[hit]
        first = np.flatnonzero(np.diff(row, prepend=-1))  # candidates are in row, then place, order
        found[row[first]] = at[first]
    return found


def _int_column(vals: np.ndarray, fits: np.ndarray) -> pa.Array:
    return AN.from_np(vals, pa.int64(), fits)


def _scan_variant(b: BS.Buf, v: Variant, pos: np.ndarray, end: np.ndarray, values: bool,
                  seen: dict | None = None) -> tuple[np.ndarray, dict[str, pa.Array | Spans]]:
    """Match bodies [pos, end) against one variant: (ok mask, the matched rows' args; no
    args when ``values`` is False, only the match). ``seen`` carries the state after each
    token run from one variant to the next for the same rows (an event's variants mostly
    begin alike), so a shared beginning is read once."""
    if not _fast_grammar(v):
        return _scan_variant_re2(b, v, pos, end, values)
    p = pos
    ok = np.ones(len(pos), bool)
    ints: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    strs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    toks = v.tokens
    k0 = 0
    if seen is not None:  # the longest beginning read before
        for k in range(len(toks) - 1, 0, -1):
            got = seen.get((values, toks[:k]))
            if got is not None:
                p, ok, ints, strs = got[0], got[1].copy(), dict(got[2]), dict(got[3])
                k0 = k
                break
    for k in range(k0, len(toks)):
        t = toks[k]
        if t[0] == "lit":
            lit = t[1].encode()
            ok &= BS.literal(b, p, lit)
            p = p + len(lit)
        elif t[0] == STR:
            if k == len(toks) - 1:
                strs[t[1]] = (p, end)
                p = end
            else:  # up to the first place the next literal occurs (no backtracking)
                stop = np.where(ok, _find_literal(b, p, end, toks[k + 1][1].encode(), k + 2 == len(toks)), -1)
                ok &= stop >= 0
                strs[t[1]] = (p, stop)
                p = np.where(ok, stop, end + 1)
        else:
            p, found, val, fits = _read_int(b, p, end, t[0], values)
            ok &= found
            if values:
                ints[t[1]] = (val, fits)
        if seen is not None and k + 1 < len(toks):
            seen[(values, toks[:k + 1])] = (p, ok.copy(), dict(ints), dict(strs))
        if not ok.any():
            return ok, {}
    ok &= p == end
    if not values:
        return ok, {}
    rows = slice(None) if ok.all() else np.flatnonzero(ok)
    args: dict[str, pa.Array | Spans] = {}
    for name, (val, fits) in ints.items():
        args[name] = _int_column(val[rows], fits[rows])
    for name, (start, stop) in strs.items():  # copied later, once per column (``_Cols.arrays``)
        args[name] = Spans(np.ascontiguousarray(start[rows]), np.ascontiguousarray(stop[rows]))
    return ok, args


_RE2: dict[tuple, str] = {}


def _re2_pattern(v: Variant) -> str:
    """The variant's regex for Arrow's RE2 (same syntax; ``(?s)`` for ``re.DOTALL``)."""
    pat = _RE2.get(v.tokens)
    if pat is None:
        pat = _RE2[v.tokens] = "(?s)" + v.regex.pattern
    return pat


def _scan_variant_re2(b: BS.Buf, v: Variant, pos: np.ndarray, end: np.ndarray, values: bool
                      ) -> tuple[np.ndarray, dict[str, pa.Array | Spans]]:
    """Grammars with pointers, floats or a string before a number: Arrow's RE2 over the
    bodies, which backtracks like the variant's regex."""
    bodies = _slices(b, pos, end)
    pat = _re2_pattern(v)
    if not values:
        return AN.to_np(pc.match_substring_regex(bodies, pat)), {}
    got = pc.extract_regex(bodies, pat)
    ok = AN.to_np(got.is_valid())
    if not ok.any():
        return ok, {}
    got = got.filter(AN.from_np(ok, pa.bool_()))
    args: dict[str, pa.Array | Spans] = {}
    for t in v.tokens:
        if t[0] == STR:
            args[t[1]] = got.field(t[1])
        elif t[0] in (INT, HEX):
            texts = got.field(t[1]).cast(pa.large_string())
            offs = np.frombuffer(texts.buffers()[1], np.int64)[texts.offset: texts.offset + len(texts) + 1]
            tb = BS.Buf(memoryview(texts.buffers()[2]) if texts.buffers()[2] is not None else b"")
            _, _, val, fits = _read_int(tb, offs[:-1], offs[1:], t[0], True, packed=True)
            args[t[1]] = _int_column(val, fits)
    return ok, args


def _regex_args(v: Variant, body: str) -> dict[str, object] | None:
    """Args of one body by the variant's regex (the last resort: a body none of the
    vectorised passes read, e.g. one with non-ASCII digits)."""
    m = v.regex.match(body)
    if not m:
        return None
    out: dict[str, object] = {}
    kinds = {t[1]: t[0] for t in v.tokens if t[0] != "lit"}
    for name, text in m.groupdict().items():
        kind = kinds.get(name)
        if kind in (INT, HEX):
            neg = text.startswith("-")
            t = text[1:] if neg else text
            val = int(t, 16) if kind == HEX or t[:2].lower() == "0x" else int(t)
            val = -val if neg else val
            out[name] = as_signed64(val) if -(1 << 63) <= val < (1 << 64) else None
        elif kind == STR:
            out[name] = text
    return out


def _regex_rows(v: Variant, data: bytes, pos: np.ndarray, end: np.ndarray,
                left: np.ndarray) -> tuple[np.ndarray, dict[str, pa.Array], np.ndarray]:
    """Rows ``left`` (bodies ``data[pos:end]``) read by the variant's regex, one by one:
    (the rows it matched, their args as columns, the rows it did not match)."""
    hits, found, rest = [], [], []
    for j in left:
        a = _regex_args(v, bytes(data[pos[j]: end[j]]).decode("utf-8", "replace"))
        if a is None:
            rest.append(j)
        else:
            hits.append(j)
            found.append(a)
    kinds = {t[1]: t[0] for t in v.tokens if t[0] in (INT, HEX, STR)}
    args = {nm: (AN.strings if kd == STR else AN.ints)([a.get(nm) for a in found])
            for nm, kd in kinds.items()} if found else {}
    return np.asarray(hits, np.int64), args, np.asarray(rest, np.int64)


SMALL = 48  # a group of fewer lines is read line by line (fewer steps than the array passes)
_NO_BACKTRACK: dict[tuple, re.Pattern[bytes]] = {}
_INT_RE = rb"-?(?:0[xX](?=.)(?>[0-9a-fA-F]+)|(?!0[xX].)(?>[0-9]+))"


def _no_backtrack(v: Variant) -> re.Pattern[bytes]:
    """The variant's grammar read the way the array passes read it (``_scan_variant``), for
    one line at a time: numbers and strings never give back what they took (a string ends
    at the first place the next literal occurs, or where the last literal must start)."""
    pat = _NO_BACKTRACK.get(v.tokens)
    if pat is None:
        toks, parts = v.tokens, []
        for k, t in enumerate(toks):
            if t[0] == "lit":
                parts.append(re.escape(t[1].encode()))
            elif t[0] == INT:
                parts.append(b"(?P<%s>%s)" % (t[1].encode(), _INT_RE))
            elif t[0] == HEX:
                parts.append(b"(?P<%s>(?>[0-9a-fA-F]+))" % t[1].encode())
            elif k == len(toks) - 1 or k + 2 == len(toks):
                parts.append(b"(?P<%s>.*)" % t[1].encode())
            else:
                lit = re.escape(toks[k + 1][1].encode())
                parts.append(b"(?P<%s>(?>(?:(?!%s).)*))" % (t[1].encode(), lit))
        pat = _NO_BACKTRACK[v.tokens] = re.compile(b"".join(parts), re.DOTALL)
    return pat


def _int_value(text: bytes, kind: str) -> int | None:
    """An integer field's int64 value as the array passes compute it (None: over 64 bits)."""
    neg = text.startswith(b"-")
    t = text[1:] if neg else text
    v = int(t, 16) if kind == HEX or t[:2] in (b"0x", b"0X") else int(t)
    if v >> 64:
        return None
    v = as_signed64(v)
    return as_signed64(-v) if neg else v


def _scan_rows(v: Variant, text, pos: np.ndarray, end: np.ndarray, left: np.ndarray, values: bool
               ) -> tuple[np.ndarray, dict[str, pa.Array], np.ndarray]:
    """``_scan_variant`` for a few rows, one line at a time: (the rows it matched, their args
    as columns, the rest). Grammars the array passes hand to RE2 go to the regex instead."""
    if not _fast_grammar(v):
        return _regex_rows(v, text, pos, end, left)
    pat = _no_backtrack(v)
    hits, found, rest = [], [], []
    for j in left.tolist():
        m = pat.fullmatch(text, int(pos[j]), int(end[j]))
        if m is None:
            rest.append(j)
            continue
        hits.append(j)
        if values:
            found.append(m.groupdict())
    args: dict[str, pa.Array] = {}
    if values and found:
        for t in v.tokens:
            if t[0] == STR:
                args[t[1]] = AN.strings([bytes(a[t[1]]).decode("utf-8", "replace") for a in found])
            elif t[0] in (INT, HEX):
                args[t[1]] = AN.ints([_int_value(bytes(a[t[1]]), t[0]) for a in found])
    return np.asarray(hits, np.int64), args, np.asarray(rest, np.int64)


# ---------------------------------------------------------------------------
# one chunk


def _slices(b: BS.Buf, s: np.ndarray, e: np.ndarray) -> pa.Array:
    offs, data = BS.slices(b, s, e)
    return pa.Array.from_buffers(pa.large_string(), len(s), [None, pa.py_buffer(offs), pa.py_buffer(data)])


class _Cols:
    """Column builder for the kept rows of one chunk (scatter by row)."""

    def _spans_column(self, buf: BS.Buf, pieces: list) -> pa.Array:
        """One string column from byte ranges: a single copy, nulls elsewhere."""
        s = np.zeros(self.k, np.int64)
        e = np.zeros(self.k, np.int64)
        valid = np.zeros(self.k, bool)
        for rows, sp in pieces:
            s[rows] = sp.start
            e[rows] = sp.end
            valid[rows] = True
        offs, data = BS.slices(buf, s, e)
        bitmap = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
        return pa.Array.from_buffers(pa.large_string(), self.k,
                                     [bitmap, pa.py_buffer(offs), pa.py_buffer(data)])

    def __init__(self, k: int) -> None:
        self.k = k
        self.num: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.bw: tuple[np.ndarray, np.ndarray] | None = None
        self.strs: dict[str, list[tuple[np.ndarray, pa.Array]]] = {}

    def put(self, rows: np.ndarray, cols: dict[str, pa.Array]) -> None:
        for c, arr in cols.items():
            if c in _STR_COLS:
                self.strs.setdefault(c, []).append((rows, arr))
                continue
            valid = AN.valid(arr)
            if c == "bw_bytes_per_ms":
                if self.bw is None:
                    self.bw = (np.zeros(self.k, np.float64), np.zeros(self.k, bool))
                vals, mask = self.bw
                vals[rows] = AN.filled(arr)
            else:
                if c not in self.num:
                    self.num[c] = (np.zeros(self.k, np.int64), np.zeros(self.k, bool))
                vals, mask = self.num[c]
                vals[rows] = AN.filled(arr)
            mask[rows] = valid

    def arrays(self, buf: BS.Buf | None = None) -> dict[str, object]:
        """Chunk columns: ("num", values, valid) for numbers, Arrow arrays for strings
        (``Spans`` are read from ``buf``)."""
        out: dict[str, object] = {}
        for c, (vals, mask) in self.num.items():
            out[c] = ("num", vals, mask)
        if self.bw is not None:
            out["bw_bytes_per_ms"] = ("num", self.bw[0], self.bw[1])
        for c, pieces in self.strs.items():
            if buf is not None and all(isinstance(a, Spans) for _, a in pieces):
                out[c] = self._spans_column(buf, pieces)
                continue
            pieces = [(r, _slices(buf, a.start, a.end) if isinstance(a, Spans) else a) for r, a in pieces]
            idx = np.full(self.k, -1, np.int64)
            off = 0
            arrs = []
            for rows, arr in pieces:
                idx[rows] = np.arange(off, off + len(arr))
                off += len(arr)
                arrs.append(arr.cast(pa.large_string()))
            cat = pa.concat_arrays(arrs)
            out[c] = cat.take(AN.from_np(idx, pa.int64(), idx >= 0))
        return out


def _decode_utf8(data: bytes) -> bytes:
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace").encode("utf-8")


def _parse_chunk(data: bytes | BS.Buf, acc: _Acc, known: frozenset[str],
                 keep: Collection[str] | None = None) -> None:
    """Parse whole lines in ``data`` (bytes, or a ``Buf`` read straight from a file; the
    last line may lack its newline) into ``acc``; line numbers count from 0 within the
    chunk (``_Acc.merge`` shifts them). With ``keep``, only events of those names become
    rows (the others are still checked and counted: ``acc.dropped``)."""
    if isinstance(data, BS.Buf):
        b = data
        if b.n and b.a[: b.n].max() >= 0x80:
            b = BS.Buf(_decode_utf8(b.a[: b.n].tobytes()))
    elif not data:
        return
    else:
        b = BS.Buf(data if data.isascii() else _decode_utf8(bytes(data)))  # invalid UTF-8 replaced
    text = memoryview(b.a)[: b.n]  # the chunk as bytes, for the few lines read one by one
    L = _Lines(*BS.line_bounds(b))
    n = len(L.s)
    acc.lines += n
    if not n:
        return
    fmts = formats()
    rows = np.arange(n)
    settled: dict[int, str] = {}
    if keep is not None:
        settled = _common_lines(b, L, known, keep, fmts)
        rows = np.flatnonzero(~L.done)
    _prefixes(b, L, rows)
    _names(b, L, rows)
    _prog_lines(text, b, L, rows)

    cand = np.flatnonzero(L.valid)
    codes, uniq = _factorize(L.key[cand])
    first = np.empty(len(uniq), np.int64)
    first[codes[::-1]] = cand[::-1]  # the first row of each name
    dict_names = [settled.get(int(u)) or bytes(text[L.ns[r]: L.ne[r]]).decode("ascii")
                  for u, r in zip(uniq.tolist(), first.tolist(), strict=True)]
    is_known = np.array([nm in known for nm in dict_names], bool)
    strong = (L.kind[cand] == KIND_TID) | (L.kind[cand] == KIND_STAP)
    keep_c = (strong | is_known[codes]) if len(dict_names) else np.zeros(0, bool)
    kept = cand[keep_c]
    kcodes = codes[keep_c]
    acc.skipped += n - len(kept)
    if not len(kept):
        return
    out_c = np.array([keep is None or nm in keep for nm in dict_names], bool)
    out_m = out_c[kcodes]
    out = kept[out_m]
    k = len(out)
    acc.dropped += len(kept) - k
    kidx_of = np.full(n, -1, np.int64)
    kidx_of[out] = np.arange(k)

    body_start = np.minimum(L.ne + 1, L.e)
    cols = _Cols(k)
    bad: list[tuple[np.ndarray, str]] = []
    # kept rows grouped by event name
    order = np.argsort(kcodes, kind="stable")
    bounds = np.flatnonzero(np.diff(kcodes[order])) + 1
    for grp in np.split(order, bounds):
        name = dict_names[kcodes[grp[0]]]
        acc.names.add(name)
        variants = fmts.get(name)
        if not variants:
            continue
        values = bool(out_c[kcodes[grp[0]]])
        rows = kept[grp]
        rows = rows[~L.done[rows]]  # well-formed already
        pos = body_start[rows]
        end = L.e[rows]
        left = np.arange(len(rows))
        seen: dict = {}
        for v in variants:
            if not len(left):
                break
            if len(left) < SMALL:
                hits, args, left = _scan_rows(v, text, pos, end, left, values)
                if len(hits) and values:
                    cols.put(kidx_of[rows[hits]], fill_columns(name, args))
                continue
            everyone = len(left) == len(rows)  # nothing matched yet: no gathers
            ok, args = _scan_variant(b, v, pos if everyone else pos[left], end if everyone else end[left],
                                     values, seen if everyone else None)
            if ok.any():
                if values:
                    cols.put(kidx_of[rows[left[ok]]], fill_columns(name, args))
                left = left[~ok]
        if len(left):
            # last resort: the variant's regex one line at a time (a body the passes above
            # could not read, e.g. with non-ASCII digits), then it is malformed
            for v in variants:
                if not len(left):
                    break
                hits, args, left = _regex_rows(v, text, pos, end, left)
                if len(hits) and values:
                    cols.put(kidx_of[rows[hits]], fill_columns(name, args))
        if len(left):
            bad.append((rows[left], name))
    acc.malformed += sum(len(r) for r, _ in bad)
    if bad:  # warnings in line order
        rows = np.concatenate([r for r, _ in bad])
        which = np.concatenate([np.full(len(r), i) for i, (r, _) in enumerate(bad)])
        o = np.argsort(rows, kind="stable")[:MAX_WARNINGS]
        for r, i in zip(rows[o].tolist(), which[o].tolist(), strict=True):
            body = bytes(text[body_start[r]: L.e[r]]).decode("utf-8", "replace")
            acc.line_warnings.append(
                (int(r), f"malformed {bad[i][1]} line (matches no known format): {body[:160]!r}"))
    if not k:
        return

    tm = _times(b, L, out)
    tk, kt = tm["t"]
    line_no = out.astype(np.int64)
    tbl: dict[str, object] = {
        "_n": k,
        "t_ns": ("num", tk, kt),
        "clock_ns": ("num", tk, kt),
        "clock": ("cat", np.where(kt, 0, 1).astype(np.int32), ["realtime", "none"]),
        "seq": ("num", line_no, np.ones(k, bool)),
        "pid": ("num", *tm["pid"]),
        "tid": ("num", *tm["tid"]),
        "event": ("cat", kcodes[out_m].astype(np.int32), dict_names),
        "line": ("num", line_no, np.ones(k, bool)),
        "raw": _slices(b, L.s[out], L.e[out]),
    }
    tbl.update(cols.arrays(b))
    acc.tables.append(tbl)


# ---------------------------------------------------------------------------
# frames


def repeat_string(text: str, n: int) -> pa.Array:
    """A large_string array of ``n`` copies of ``text``, built with numpy."""
    b = np.frombuffer(text.encode(), np.uint8)
    offsets = np.arange(n + 1, dtype=np.int64) * len(b)
    data = np.tile(b, n) if len(b) else np.zeros(0, np.uint8)
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _category(parts: list[tuple[np.ndarray, list[str]]]) -> pd.Categorical:
    """One Categorical from per-chunk (codes, names); codes -1 = NA."""
    cats: dict[str, int] = {}
    out = []
    for codes, names in parts:
        remap = np.array([cats.setdefault(x, len(cats)) for x in names] + [-1], np.int32)
        out.append(remap[codes] if len(names) else np.full(len(codes), -1, np.int32))
    codes = np.concatenate(out) if out else np.zeros(0, np.int32)
    # sorted categories: the same input gives the same frame however it was chunked
    names = sorted(cats)
    rank = np.empty(len(names) + 1, np.int32)
    rank[[cats[x] for x in names]] = np.arange(len(names), dtype=np.int32)
    rank[-1] = -1
    codes = rank[codes]
    dt = np.int8 if len(cats) < 127 else np.int16 if len(cats) < 32000 else np.int32
    return pd.Categorical.from_codes(codes.astype(dt), categories=pd.Index(names, dtype="str"))


def _na_column(dtype: str, n: int) -> object:
    if dtype == "Int64":
        return pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, bool))
    if dtype == "Float64":
        return pd.arrays.FloatingArray(np.zeros(n, np.float64), np.ones(n, bool))
    if dtype == "category":
        return pd.Categorical.from_codes(np.full(n, -1, np.int8), categories=pd.Index([], dtype="str"))
    return pd.arrays.ArrowStringArray(pa.nulls(n, pa.large_string()))


def chunks_to_frame(chunks: list[dict], *, side: str, origin: str, file: str | None) -> pd.DataFrame:
    """Concatenate chunk columns into one schema frame, without per-row work.

    A chunk is ``{"_n": rows, col: ("num", values, valid) | ("cat", codes, names) |
    pa.Array}``; columns a chunk lacks are NA there.
    """
    chunks = [c for c in chunks if c["_n"]]
    if not chunks:
        return events.empty_frame()
    n = sum(c["_n"] for c in chunks)
    data: dict[str, object] = {}
    for col, dtype in events.COLUMNS.items():
        have = [c for c in chunks if col in c]
        if col in ("side", "origin") and not have:
            data[col] = pd.Categorical.from_codes(
                np.zeros(n, np.int8), categories=pd.Index([side if col == "side" else origin], dtype="str"))
        elif col == "file" and not have and file is not None:
            data[col] = pd.arrays.ArrowStringArray(repeat_string(file, n))
        elif not have:
            data[col] = _na_column(dtype, n)
        elif dtype in ("Int64", "Float64"):
            np_t = np.int64 if dtype == "Int64" else np.float64
            vals = np.concatenate([c[col][1] if col in c else np.zeros(c["_n"], np_t) for c in chunks])
            valid = np.concatenate([c[col][2] if col in c else np.zeros(c["_n"], bool) for c in chunks])
            cls = pd.arrays.IntegerArray if dtype == "Int64" else pd.arrays.FloatingArray
            data[col] = cls(vals.astype(np_t, copy=False), ~valid)
        elif dtype == "category":
            data[col] = _category([c[col][1:] if col in c else (np.full(c["_n"], -1, np.int32), [])
                                   for c in chunks])
        else:
            arrs = [c[col].cast(pa.large_string()) if col in c else pa.nulls(c["_n"], pa.large_string())
                    for c in chunks]
            data[col] = pd.arrays.ArrowStringArray(pa.chunked_array(arrs, pa.large_string()))
    return pd.DataFrame(data, copy=False)


def detect_side(names: set[str], path: str | None) -> str:
    """source/destination from the events seen, else from the file name, else unknown."""
    has_dest = any(n.startswith(_DEST_PREFIXES) for n in names)
    has_src = any(n.startswith(_SRC_PREFIXES) for n in names)
    if has_dest and not has_src:
        return events.Side.DESTINATION
    if has_src:
        return events.Side.SOURCE
    if path:
        base = Path(path).name.lower()
        if re.search(r"(^|[^a-z])(dst|dest|destination|target|incoming)([^a-z]|$)", base):
            return events.Side.DESTINATION
        if re.search(r"(^|[^a-z])(src|source)([^a-z]|$)", base):
            return events.Side.SOURCE
    return events.Side.UNKNOWN


def _finish(acc: _Acc, side: str | None, path: str | None) -> ParseResult:
    s = side or detect_side(acc.names, path)
    frame = chunks_to_frame(acc.tables, side=str(s), origin=events.Origin.QEMU_LOG, file=acc.file)
    warnings = list(acc.warnings)
    if acc.malformed > len([w for w in warnings if "malformed" in w]):
        warnings.append(f"{acc.file or '<bytes>'}: {acc.malformed} malformed trace lines in all "
                        f"(first {MAX_WARNINGS} shown)")
    return ParseResult(frame=frame, lines=acc.lines, skipped=acc.skipped, malformed=acc.malformed,
                       warnings=warnings, side=str(s), file=acc.file, event_names=set(acc.names),
                       dropped=acc.dropped)


def _split_chunks(data: bytes, size: int | None = None) -> Iterator[bytes]:
    """Pieces of ``data`` cut after a newline."""
    size = size or CHUNK_BYTES
    start = 0
    n = len(data)
    while start < n:
        stop = min(start + size, n)
        if stop < n:
            cut = data.rfind(b"\n", start, stop)
            stop = cut + 1 if cut >= start else (data.find(b"\n", stop) + 1 or n)
        yield data[start:stop]
        start = stop


Progress = Callable[[int], None]  # called with the input bytes read so far


@contextmanager
def _system_pool() -> Iterator[None]:
    """Arrow allocates from malloc while chunks are parsed: its default pool (mimalloc) keeps
    what each chunk freed, which adds ~50 MB to the peak of a large log for no speed."""
    was = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(was)


def _parse_pieces(pieces: Iterator[bytes | BS.Buf], acc: _Acc, keep: Collection[str] | None = None,
                  progress: Progress | None = None, where: Callable[[], int] | None = None) -> None:
    """Parse pieces on two threads (numpy releases the GIL in its loops), merging in order."""
    known = known_event_names()
    pending: deque[tuple[Future, _Acc, int]] = deque()
    done = 0

    def merge() -> None:
        nonlocal done
        fut, part, size = pending.popleft()
        fut.result()
        acc.merge(part)
        done += size
        if progress is not None:
            progress(where() if where is not None else done)

    with _system_pool(), ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="qemu-log") as ex:
        for piece in pieces:
            local = _Acc(acc.file)
            size = piece.n if isinstance(piece, BS.Buf) else len(piece)
            pending.append((ex.submit(_parse_chunk, piece, local, known, keep), local, size))
            while len(pending) > WORKERS:  # bounded: memory stays a few chunks
                merge()
        while pending:
            merge()


def parse_bytes(data: bytes, *, side: str | None = None, file: str | None = None,
                first_line: int = 1, keep: Collection[str] | None = None) -> ParseResult:
    """Parse log text held in memory; ``side`` None = detect from content/file name;
    ``keep``: only events of these names become rows (the rest are counted)."""
    acc = _Acc(file, first_line)
    _parse_pieces(_split_chunks(data), acc, keep)
    return _finish(acc, side, file)


def read_log(path: str | os.PathLike, side: str | None = None, *, keep: Collection[str] | None = None,
             progress: Progress | None = None) -> ParseResult:
    """Parse a QEMU trace log file (plain or gzip), streaming it in chunks.

    ``keep``: only events of these names become rows of the frame (the others are still
    checked and counted), so memory follows the events kept. ``progress`` is called after
    each chunk with the bytes of the file read so far (compressed bytes for a .gz).
    """
    p = str(path)
    acc = _Acc(p)
    try:
        raw = open(p, "rb")  # noqa: SIM115 (closed by the with below)
        f = raw
        if raw.read(2) == b"\x1f\x8b":
            raw.seek(0)
            f = gzip.open(raw, "rb")  # noqa: SIM115
        else:
            raw.seek(0)
    except FileNotFoundError:
        raise InputError(p, "no such file") from None
    except IsADirectoryError:
        raise InputError(p, "is a directory, expected a QEMU trace log") from None
    except OSError as e:
        raise InputError(p, e.strerror or str(e)) from None
    read_errors: list[Exception] = []
    with raw, f:
        _parse_pieces(_until_read_error(BS.read_lines(f, CHUNK_BYTES), read_errors), acc, keep, progress,
                      raw.tell)
    if read_errors:  # a cut or corrupt .gz: keep what was read
        acc.warnings.append(f"{p}: {read_errors[0]}; parsed the first {acc.lines} lines")
    return _finish(acc, side, p)


def _until_read_error(chunks: Iterator, errors: list[Exception]) -> Iterator:
    """The chunks up to a failed read, which lands in ``errors``.

    Only reading may end a file early with a warning; an error in the parser itself (an
    OSError too, e.g. from a compiler cache) must not pass for a cut file.
    """
    try:
        yield from chunks
    except (OSError, EOFError) as e:
        errors.append(e)


def wait_for(path: str, timeout_s: float = 5.0) -> bool:
    """True once ``path`` exists (used by callers that start QEMU and tail its log)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False
