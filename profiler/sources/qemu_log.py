"""Parse the QEMU ``log`` trace back end (every prefix, QEMU 7.2 to 10.2) into schema frames.

Lines are never handled one by one in Python: the file is read in chunks of bytes and
each chunk is scanned with numpy (prefix, event name, then each event's body grammar
from ``trace_formats``); only rare lines (the proposed ``prog(tid:thread):`` prefix,
bodies the vectorised scanner cannot settle) go through ``re``. Memory grows with the
events kept: a chunk's lines are dropped once its events are extracted.

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
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from profiler import events
from profiler.errors import InputError
from profiler.sources import _nbscan as NB
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

CHUNK_BYTES = 16 << 20  # bigger chunks: less per-chunk work; 3 in flight at most
WORKERS = 2
MAX_WARNINGS = 50

_STR_COLS = ("device", "state", "detail")
_NUM_COLS = ("bytes", "pre_bytes", "post_bytes", "stopcopy_bytes", "init_bytes", "dirty_bytes",
             "threshold_bytes", "dur_ns", "count", "ret", "fd", "cmd", "flags")

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
    with their raw text and no fields.
    """

    frame: pd.DataFrame
    lines: int = 0
    skipped: int = 0
    malformed: int = 0
    warnings: list[str] = field(default_factory=list)
    side: str = "unknown"
    file: str | None = None
    event_names: set[str] = field(default_factory=set)

    @property
    def events(self) -> int:
        """Well-formed events (rows of ``frame`` that are not malformed)."""
        return len(self.frame) - self.malformed


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
        self.warnings += other.warnings[: max(0, MAX_WARNINGS - len(self.warnings))]
        self.names |= other.names

    def warn(self, line: int, msg: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(f"{self.file or '<bytes>'}:{line}: {msg}")


# ---------------------------------------------------------------------------
# body scanning


_OPS = {"lit": NB.OP_LIT, INT: NB.OP_INT, HEX: NB.OP_HEX, STR: NB.OP_STR}


@dataclass
class _Program:
    """A variant's grammar compiled for ``_nbscan.scan_bodies``."""

    ops: np.ndarray
    slot: np.ndarray
    lit: np.ndarray
    litoff: np.ndarray
    litlen: np.ndarray
    ints: list[str]
    strs: list[str]


_PROGRAMS: dict[int, _Program | None] = {}


def _program(v: Variant) -> _Program | None:
    """None when the grammar has fields the scanner does not read (pointers, floats)."""
    key = id(v)
    if key in _PROGRAMS:
        return _PROGRAMS[key]
    prog = None
    if v.simple_scannable and all(
            not (t[0] == STR and k + 1 < len(v.tokens) and v.tokens[k + 1][0] != "lit")
            for k, t in enumerate(v.tokens)):
        ops, slot, lits, ints, strs = [], [], [], [], []
        for t in v.tokens:
            ops.append(_OPS[t[0]])
            if t[0] == "lit":
                slot.append(len(lits))
                lits.append(t[1].encode())
            elif t[0] == STR:
                slot.append(len(strs))
                strs.append(t[1])
            else:
                slot.append(len(ints))
                ints.append(t[1])
        litlen = np.array([len(x) for x in lits] or [0], np.int64)
        litoff = np.zeros(len(litlen), np.int64)
        litoff[1:] = np.cumsum(litlen)[:-1]
        prog = _Program(np.array(ops, np.int8), np.array(slot, np.int64),
                        np.frombuffer(b"".join(lits) or b"\0", np.uint8).copy(), litoff, litlen, ints, strs)
    _PROGRAMS[key] = prog
    return prog


def _slices(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> pa.Array:
    offs, data = NB.copy_slices(buf, s, e)
    return pa.Array.from_buffers(pa.large_string(), len(s), [None, pa.py_buffer(offs), pa.py_buffer(data)])


def _scan_variant(buf: np.ndarray, v: Variant, pos: np.ndarray, end: np.ndarray
                  ) -> tuple[np.ndarray, dict[str, pa.Array]] | None:
    """Match one variant's grammar on spans [pos, end): ok mask and the matched rows' args."""
    prog = _program(v)
    if prog is None:
        return None
    ok, ival, ivalid, sst, sen = NB.scan_bodies(buf, pos, end, prog.ops, prog.slot, prog.lit,
                                                prog.litoff, prog.litlen, len(prog.ints), len(prog.strs))
    rows = slice(None) if ok.all() else np.flatnonzero(ok)  # all match: no gathers
    args: dict[str, pa.Array] = {}
    for k, name in enumerate(prog.ints):
        valid = ivalid[rows, k]
        args[name] = pa.array(np.ascontiguousarray(ival[rows, k]), type=pa.int64(),
                              mask=None if valid.all() else ~valid)
    for k, name in enumerate(prog.strs):  # copied later, once per column (``_Cols.arrays``)
        args[name] = Spans(np.ascontiguousarray(sst[rows, k]), np.ascontiguousarray(sen[rows, k]))
    return ok, args


def _regex_args(v: Variant, body: str) -> dict[str, object] | None:
    """Args of one body by the variant's regex (grammars the scanner does not read)."""
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
        a = _regex_args(v, data[pos[j]: end[j]].decode("utf-8", "replace"))
        if a is None:
            rest.append(j)
        else:
            hits.append(j)
            found.append(a)
    kinds = {t[1]: t[0] for t in v.tokens if t[0] in (INT, HEX, STR)}
    args = {nm: pa.array([a.get(nm) for a in found], type=pa.large_string() if kd == STR else pa.int64())
            for nm, kd in kinds.items()} if found else {}
    return np.asarray(hits, np.int64), args, np.asarray(rest, np.int64)


# ---------------------------------------------------------------------------
# one chunk


class _Cols:
    """Column builder for the kept rows of one chunk (scatter by row)."""

    def _spans_column(self, buf: np.ndarray, pieces: list) -> pa.Array:
        """One string column from byte ranges: a single compiled copy, nulls elsewhere."""
        s = np.zeros(self.k, np.int64)
        e = np.zeros(self.k, np.int64)
        valid = np.zeros(self.k, bool)
        for rows, sp in pieces:
            s[rows] = sp.start
            e[rows] = sp.end
            valid[rows] = True
        offs, data = NB.copy_slices(buf, s, e)
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
            valid = arr.is_valid().to_numpy(zero_copy_only=False)
            if c == "bw_bytes_per_ms":
                if self.bw is None:
                    self.bw = (np.zeros(self.k, np.float64), np.zeros(self.k, bool))
                vals, mask = self.bw
                vals[rows] = pc.fill_null(arr, 0.0).to_numpy(zero_copy_only=False)
            else:
                if c not in self.num:
                    self.num[c] = (np.zeros(self.k, np.int64), np.zeros(self.k, bool))
                vals, mask = self.num[c]
                vals[rows] = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False)
            mask[rows] = valid

    def arrays(self, buf: np.ndarray | None = None) -> dict[str, object]:
        """Chunk columns: ("num", values, valid) for numbers, Arrow arrays for strings
        (``Spans`` are read from ``buf``, so call this before the buffer is reused)."""
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
            out[c] = cat.take(pa.array(idx, mask=idx < 0))
        return out


def _decode_utf8(data: bytes) -> bytes:
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace").encode("utf-8")


def _name_hash(seg: bytes) -> int:
    h = 0xCBF29CE484222325
    for c in seg:
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _scan(data: bytes | bytearray) -> tuple:
    """Find the newlines and run the prefix scanner over every line (compiled)."""
    buf = np.frombuffer(data, np.uint8)
    nl, high = NB.find_newlines(buf)
    cap = len(nl)
    out = [np.empty(cap, t) for t in (np.int64, np.int64, np.int8, np.int64, np.int64, np.bool_,
                                      np.int64, np.bool_, np.int64, np.int64, np.bool_, np.uint64,
                                      np.bool_)]
    n = NB.scan_lines(buf, nl, *out)
    return (buf, n, *out, high)


def _raw_column(data: bytes | bytearray, buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> pa.Array:
    """The kept lines as strings. A writable chunk mostly kept is compacted in place and
    shared (no new memory to fault in); otherwise the lines are copied, so memory follows
    the events kept, not the lines read."""
    kept_bytes = int((e - s).sum())
    if isinstance(data, bytearray) and kept_bytes * 2 >= len(data):
        offs = NB.compact_lines(buf, s, e)
        return pa.Array.from_buffers(pa.large_string(), len(s),
                                     [None, pa.py_buffer(offs), pa.py_buffer(data)])
    return _slices(buf, s, e)


def _parse_chunk(data: bytes, acc: _Acc, known: frozenset[str]) -> None:
    """Parse whole lines in ``data`` (the last one may lack its newline) into ``acc``;
    line numbers count from 0 within the chunk (``_Acc.merge`` shifts them)."""
    first_line = 0
    if not data:
        return
    if not isinstance(data, bytearray):  # one (writable) buffer type: one compiled kernel set
        data = bytearray(data)
    scanned = _scan(data)
    if scanned[-1] & 0x80:  # non-ASCII bytes: replace invalid UTF-8 (lengths may change)
        fixed = _decode_utf8(bytes(data))
        if len(fixed) != len(data) or fixed != data:
            data = bytearray(fixed)
            scanned = _scan(data)
    (buf, n, starts, ends, kind, name_start, nend, valid, tid, tid_ok, pid, t_ns, t_ok, nhash,
     progmark, _) = scanned
    acc.lines += n
    if not n:
        return
    strong = (kind[:n] == NB.KIND_TID) | (kind[:n] == NB.KIND_STAP)

    # the proposed prog(tid:thread) prefix: rare, one regex per marked line
    for r in np.flatnonzero(progmark[:n]):
        m = _PROG_RE.match(data, int(starts[r]), int(ends[r]))
        if not m:
            continue
        name_start[r] = m.start("name")
        nend[r] = m.end("name")
        valid[r] = True
        nhash[r] = _name_hash(data[m.start("name"): m.end("name")])
        tid[r] = int(m["tid"])
        tid_ok[r] = True
        if not m["iso"]:
            t_ok[r] = False

    cand = np.flatnonzero(valid[:n])
    _, first, inv = np.unique(nhash[cand], return_index=True, return_inverse=True)
    rep = cand[first]
    # rows share a name when its 64-bit FNV-1a hash and length agree (a collision among
    # a chunk's few hundred names is out of reach; the length check costs nothing)
    nlen = (nend[:n] - name_start[:n])[cand]
    same = nlen == nlen[first][inv]
    if not same.all():
        inv = inv.copy()
        extra: dict[bytes, int] = {}
        reps = list(rep)
        for j in np.flatnonzero(~same):
            r = cand[j]
            nm = data[name_start[r]: nend[r]]
            if nm not in extra:
                extra[nm] = len(reps)
                reps.append(r)
            inv[j] = extra[nm]
        rep = np.array(reps, np.int64)
    dict_names = [data[name_start[r]: nend[r]].decode("ascii") for r in rep]
    is_known = np.array([nm in known for nm in dict_names], bool)
    keep_c = (strong[cand] | is_known[inv]) if len(dict_names) else np.zeros(0, bool)
    kept = cand[keep_c]
    kcodes = inv[keep_c]
    k = len(kept)
    acc.skipped += n - k
    if not k:
        return
    line_no = first_line + kept

    cols = _Cols(k)
    if k == n:  # every line is a trace line: row r is kept row r, views instead of copies
        kidx_of = np.arange(n, dtype=np.int64)

        def pick(a: np.ndarray) -> np.ndarray:
            return a[:n]
    else:
        kidx_of = np.full(n, -1, np.int64)
        kidx_of[kept] = np.arange(k)

        def pick(a: np.ndarray) -> np.ndarray:
            return a[kept]
    body_start = np.minimum(nend[:n] + 1, ends[:n])
    fmts = formats()
    n_bad = 0
    bad: list[np.ndarray] = []

    def inv_of_row(r: int) -> int:
        return int(kcodes[kidx_of[r]])

    # kept rows grouped by event name (16-bit codes sort by radix)
    order = np.argsort(kcodes.astype(np.int16 if len(dict_names) < 32000 else np.int64), kind="stable")
    bounds = np.flatnonzero(np.diff(kcodes[order])) + 1
    for grp in np.split(order, bounds):
        name = dict_names[kcodes[grp[0]]]
        acc.names.add(name)
        variants = fmts.get(name)
        if not variants:
            continue
        rows = kept[grp]
        pos = body_start[rows]
        end = ends[rows]
        left = np.arange(len(rows))
        for v in variants:
            if not len(left):
                break
            everyone = len(left) == len(rows)  # nothing matched yet: no gathers
            got = _scan_variant(buf, v, pos if everyone else pos[left], end if everyone else end[left])
            if got is None:  # a grammar only the regex reads
                hits, args, left = _regex_rows(v, data, pos, end, left)
                if len(hits):
                    cols.put(kidx_of[rows[hits]], fill_columns(name, args))
                continue
            ok, args = got
            if ok.any():
                hit = rows[left[ok]]
                cols.put(hit if k == n else kidx_of[hit], fill_columns(name, args))
                left = left[~ok]
        if len(left):
            # the scanner takes the first place a string's next literal matches; a name
            # that holds that literal needs the regex's backtracking
            for v in variants:
                if not len(left):
                    break
                hits, args, left = _regex_rows(v, data, pos, end, left)
                if len(hits):
                    cols.put(kidx_of[rows[hits]], fill_columns(name, args))
        if len(left):
            bad.append(rows[left])
            n_bad += len(left)
    acc.malformed += n_bad
    if bad:  # warnings in line order
        for r in np.sort(np.concatenate(bad))[:MAX_WARNINGS]:
            name = dict_names[inv_of_row(r)]
            text = data[body_start[r]: ends[r]].decode("utf-8", "replace")
            acc.line_warnings.append(
                (int(r), f"malformed {name} line (matches no known format): {text[:160]!r}"))

    colarrays = cols.arrays(buf)  # before _raw_column may move the buffer's bytes
    kt = pick(t_ok)
    tk = pick(t_ns)
    tbl: dict[str, object] = {
        "_n": k,
        "t_ns": ("num", tk, kt),
        "clock_ns": ("num", tk, kt),
        "clock": ("cat", np.where(kt, 0, 1).astype(np.int32), ["realtime", "none"]),
        "seq": ("num", line_no, np.ones(k, bool)),
        "pid": ("num", pick(pid), pick(kind) == NB.KIND_STAP),
        "tid": ("num", pick(tid), pick(tid_ok)),
        "event": ("cat", kcodes.astype(np.int32), dict_names),
        "line": ("num", line_no, np.ones(k, bool)),
        "raw": _raw_column(data, buf, pick(starts), pick(ends)),  # last: may move bytes
    }
    tbl.update(colarrays)
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
                       warnings=warnings, side=str(s), file=acc.file, event_names=set(acc.names))


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


def iter_chunks(f, size: int | None = None) -> Iterator[bytearray]:
    """Read ``f`` in writable pieces that end at a newline (the last one may not)."""
    size = size or CHUNK_BYTES
    carry = b""
    while True:
        block = bytearray(len(carry) + size)
        block[: len(carry)] = carry
        with memoryview(block) as mv, mv[len(carry):] as tail:
            got = f.readinto(tail)
        if not got:
            if carry:
                yield bytearray(carry)
            return
        del block[len(carry) + got:]
        cut = block.rfind(b"\n")
        if cut < 0:
            carry = bytes(block)
            continue
        carry = bytes(block[cut + 1:])
        del block[cut + 1:]
        yield block


def _parse_pieces(pieces: Iterator[bytes], acc: _Acc) -> None:
    """Parse pieces on two threads (the scanners release the GIL), merging in order."""
    known = known_event_names()
    pending: deque[tuple[Future, _Acc]] = deque()
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="qemu-log") as ex:
        for piece in pieces:
            local = _Acc(acc.file)
            pending.append((ex.submit(_parse_chunk, piece, local, known), local))
            while len(pending) > WORKERS:  # bounded: memory stays a few chunks
                fut, done = pending.popleft()
                fut.result()
                acc.merge(done)
        while pending:
            fut, done = pending.popleft()
            fut.result()
            acc.merge(done)


def parse_bytes(data: bytes, *, side: str | None = None, file: str | None = None,
                first_line: int = 1) -> ParseResult:
    """Parse log text held in memory; ``side`` None = detect from content/file name."""
    acc = _Acc(file, first_line)
    _parse_pieces(_split_chunks(data), acc)
    return _finish(acc, side, file)


def read_log(path: str | os.PathLike, side: str | None = None) -> ParseResult:
    """Parse a QEMU trace log file (plain or gzip), streaming it in chunks."""
    p = str(path)
    acc = _Acc(p)
    try:
        f = open(p, "rb")  # noqa: SIM115 (closed by the with below)
        if f.read(2) == b"\x1f\x8b":
            f.close()
            f = gzip.open(p, "rb")  # noqa: SIM115
        else:
            f.seek(0)
    except FileNotFoundError:
        raise InputError(p, "no such file") from None
    except IsADirectoryError:
        raise InputError(p, "is a directory, expected a QEMU trace log") from None
    except OSError as e:
        raise InputError(p, e.strerror or str(e)) from None
    read_errors: list[Exception] = []
    with f:
        _parse_pieces(_until_read_error(iter_chunks(f), read_errors), acc)
    if read_errors:  # a cut or corrupt .gz: keep what was read
        acc.warnings.append(f"{p}: {read_errors[0]}; parsed the first {acc.lines} lines")
    return _finish(acc, side, p)


def _until_read_error(chunks: Iterator[bytes], errors: list[Exception]) -> Iterator[bytes]:
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
