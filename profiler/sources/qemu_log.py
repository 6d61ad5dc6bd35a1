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

import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from profiler import events
from profiler.errors import InputError
from profiler.sources import _scan as S
from profiler.sources.base import Source
from profiler.sources.qemu_event_names import known_event_names
from profiler.sources.trace_formats import HEX, INT, STR, Variant, fill_columns, formats

CHUNK_BYTES = 8 << 20
MAX_WARNINGS = 50
HEAD = 48  # bytes of each line looked at for the prefix

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

    def __init__(self, file: str | None) -> None:
        self.file = file
        self.tables: list[pa.Table] = []
        self.lines = 0
        self.skipped = 0
        self.malformed = 0
        self.warnings: list[str] = []
        self.names: set[str] = set()

    def warn(self, line: int, msg: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(f"{self.file or '<bytes>'}:{line}: {msg}")


# ---------------------------------------------------------------------------
# body scanning


def _scan_variant(buf: np.ndarray, v: Variant, pos: np.ndarray, end: np.ndarray
                  ) -> tuple[np.ndarray, dict[str, tuple]]:
    """Match the body grammar of one variant on spans [pos, end); -> ok, raw args.

    Args come back as ("int", uint64 values, negative mask), ("str", start, end).
    A string field ends at the first place its following literal matches (as the
    lazy regex would), so a device name may hold spaces, ``<>`` or parentheses.
    """
    ok = pos <= end
    pos = pos.copy()
    args: dict[str, tuple] = {}
    toks = v.tokens
    for k, tok in enumerate(toks):
        kind = tok[0]
        if kind == "lit":
            lit = tok[1].encode()
            ok &= (pos + len(lit) <= end) & S.match_literal(buf, pos, lit)
            pos = pos + len(lit)
        elif kind == INT:
            neg = buf[np.minimum(pos, len(buf) - 1)] == 45  # '-'
            p1 = pos + neg
            ishex = (buf[p1] == 48) & ((buf[p1 + 1] | 0x20) == 120)  # 0x / 0X
            n_dec, v_dec = S.dec_digits(buf, p1)
            n_hex, v_hex = S.hex_digits(buf, p1 + 2)
            ishex &= n_hex >= 1
            n = np.where(ishex, n_hex + 2, n_dec)
            ok &= np.where(ishex, n_hex <= 16, (n_dec >= 1) & (n_dec <= 20))
            args[tok[1]] = ("int", np.where(ishex, v_hex, v_dec), neg)
            pos = p1 + n
        elif kind == HEX:
            n, val = S.hex_digits(buf, pos)
            ok &= (n >= 1) & (n <= 16)
            args[tok[1]] = ("int", val, np.zeros(len(pos), bool))
            pos = pos + n
        elif kind == STR:
            if k == len(toks) - 1:
                args[tok[1]] = ("str", pos.copy(), end.copy())
                pos = end.copy()
            else:
                nxt = toks[k + 1]
                if nxt[0] != "lit":  # two conversions in a row: leave it to the regex
                    return np.zeros(len(pos), bool), {}
                lit = nxt[1].encode()
                stop = _find_literal(buf, pos, end, lit)
                ok &= stop >= 0
                stop = np.where(stop >= 0, stop, pos)
                args[tok[1]] = ("str", pos.copy(), stop)
                pos = stop
        else:
            return np.zeros(len(pos), bool), {}
        pos = np.minimum(pos, end + 1)  # failed rows stop here (keeps gathers in range)
        ok &= pos <= end
    ok &= pos == end
    return ok, args


def _find_literal(buf: np.ndarray, pos: np.ndarray, end: np.ndarray, lit: bytes) -> np.ndarray:
    """First offset >= pos where ``lit`` starts and fits before ``end``; -1 if none.

    Tries the first few occurrences of the literal's first byte per row (names are
    short); rows with more candidates than that return -1 and fall back to ``re``.
    """
    first = lit[0]
    width = 96
    out = np.full(len(pos), -1, np.int64)
    todo = np.arange(len(pos))
    base = pos.copy()
    for _ in range(4):
        if not len(todo):
            break
        g = S.gather(buf, base[todo], width) == first
        hit = S.first_true(g)
        found = hit < width
        cand = base[todo] + hit
        good = found & (cand + len(lit) <= end[todo]) & S.match_literal(buf, cand, lit)
        out[todo[good]] = cand[good]
        # rows whose candidate failed: look again after it; rows with no candidate in
        # the window: look further on
        retry = ~good & (cand < end[todo])
        base[todo] = np.where(found, cand + 1, base[todo] + width)
        todo = todo[retry]
    return out


def _args_to_arrow(raw: dict[str, tuple], rows: np.ndarray, buf: np.ndarray) -> dict[str, pa.Array]:
    out: dict[str, pa.Array] = {}
    for name, val in raw.items():
        if val[0] == "int":
            u = val[1][rows]
            neg = val[2][rows]
            s = u.view(np.int64)
            out[name] = pa.array(np.where(neg, -s, s), type=pa.int64())
        else:
            out[name] = S.slices(buf, val[1][rows], val[2][rows])
    return out


def _regex_args(v: Variant, body: str) -> dict[str, object] | None:
    m = v.regex.match(body)
    if not m:
        return None
    out: dict[str, object] = {}
    kinds = {t[1]: t[0] for t in v.tokens if t[0] != "lit"}
    for name, text in m.groupdict().items():
        kind = kinds.get(name)
        if kind == INT:
            neg = text.startswith("-")
            t = text[1:] if neg else text
            val = int(t, 16) if t[:2].lower() == "0x" else int(t)
            val = -val if neg else val
            out[name] = val if -(1 << 63) <= val < (1 << 64) else None
            if out[name] is not None and out[name] >= (1 << 63):
                out[name] -= 1 << 64
        elif kind == HEX:
            val = int(text, 16)
            out[name] = (val - (1 << 64) if val >= (1 << 63) else val) if val < (1 << 64) else None
        elif kind == STR:
            out[name] = text
        else:
            out[name] = None  # pointers, floats: matched, not used
    return out


# ---------------------------------------------------------------------------
# one chunk


class _Cols:
    """Column builder for the kept rows of one chunk (scatter by row)."""

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

    def arrays(self) -> dict[str, pa.Array]:
        out: dict[str, pa.Array] = {}
        for c, (vals, mask) in self.num.items():
            out[c] = pa.array(vals, type=pa.int64(), mask=~mask)
        if self.bw is not None:
            out["bw_bytes_per_ms"] = pa.array(self.bw[0], type=pa.float64(), mask=~self.bw[1])
        for c, pieces in self.strs.items():
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


def _parse_chunk(data: bytes, first_line: int, acc: _Acc, known: frozenset[str]) -> None:
    """Parse whole lines in ``data`` (the last one may lack its newline)."""
    if not data:
        return
    data = _decode_utf8(data)
    nbytes = len(data)
    buf = S.padded(data)
    nl = np.flatnonzero(buf[:nbytes] == 10)
    starts = np.concatenate(([0], nl + 1)).astype(np.int64)
    ends = np.concatenate((nl, [nbytes])).astype(np.int64)
    if ends[-1] == starts[-1]:  # data ended with a newline: no partial last line
        starts, ends = starts[:-1], ends[:-1]
    n = len(starts)
    acc.lines += n
    if not n:
        return
    # strip a CR of CRLF line ends
    cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
    ends = ends - cr
    length = ends - starts

    H = S.gather(buf, starts, HEAD)
    dig = S._IS_DIGIT[H]
    cnd = np.zeros((n, HEAD + 1), np.int16)
    np.cumsum(~dig, axis=1, out=cnd[:, 1:])
    rown = np.arange(n)

    def digits(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # all digits in [a, b)
        a = np.clip(a, 0, HEAD)
        b = np.clip(b, 0, HEAD)
        return (b > a) & (cnd[rown, b] - cnd[rown, a] == 0)

    at = S.first_true(H == 64)
    dot = S.first_true(H == 46)
    colon = S.first_true(H == 58)
    sp = S.first_true(H == 32)
    tidf = (digits(0, at) & digits(at + 1, dot) & (colon == dot + 7) & digits(dot + 1, colon)
            & (colon < sp) & (colon < length))
    stapf = ~tidf & digits(0, at) & digits(at + 1, sp) & (sp < length) & (sp - at <= 21)
    sep_ok = ((H[:, 4] == 45) & (H[:, 7] == 45) & (H[:, 10] == 84) & (H[:, 13] == 58)
              & (H[:, 16] == 58))
    date_ok = (digits(0, 4) & digits(5, 7) & digits(8, 10) & digits(11, 13) & digits(14, 16)
               & digits(17, 19))
    zc = S.first_true(H[:, 19:] == 90) + 19
    frac_ok = (zc == 19) | ((H[:, 19] == 46) & digits(20, zc) & (zc - 20 <= 9))
    isof = (sep_ok & date_ok & frac_ok & (zc + 1 < np.minimum(length, HEAD))
            & (H[rown, np.minimum(zc + 1, HEAD - 1)] == 32))
    isof &= ~tidf & ~stapf
    name_start = starts.copy()
    name_start[tidf] += colon[tidf] + 1
    name_start[stapf] += sp[stapf] + 1
    name_start[isof] += zc[isof] + 2

    nlen = S.name_len(buf, name_start)
    nend = name_start + nlen
    after = buf[nend]
    valid = (nlen >= 1) & (nlen < 96) & (nend <= ends) & ((nend == ends) | (after == 32))
    tid = np.zeros(n, np.int64)
    tid_ok = tidf.copy()
    pid = np.zeros(n, np.int64)
    t_ns = np.zeros(n, np.int64)
    t_ok = (tidf | stapf | isof).copy()

    # the proposed prog(tid:thread) prefix: rare, one regex per candidate line
    prog_rows = np.zeros(0, np.int64)
    if np.any(~(tidf | stapf)):
        mark = np.flatnonzero((buf[: nbytes - 2] == 41) & (buf[1: nbytes - 1] == 58) & (buf[2:nbytes] == 32))
        if len(mark):
            cand = np.unique(np.searchsorted(starts, mark, side="right") - 1)
            cand = cand[~(tidf[cand] | stapf[cand])]
            got = []
            for r in cand:
                m = _PROG_RE.match(data, int(starts[r]), int(ends[r]))
                if not m:
                    continue
                got.append(r)
                name_start[r] = m.start("name")
                nend[r] = m.end("name")
                valid[r] = True
                tid[r] = int(m["tid"])
                tid_ok[r] = True
                if m["iso"]:
                    isof[r] = True  # timestamp decoded below with the ISO rows
                    t_ok[r] = True
                else:
                    isof[r] = False
                    t_ok[r] = False
            prog_rows = np.asarray(got, np.int64)

    cand_rows = np.flatnonzero(valid)
    names = S.slices(buf, name_start[cand_rows], nend[cand_rows]).dictionary_encode()
    dict_names = names.dictionary.to_pylist()
    codes = names.indices.to_numpy(zero_copy_only=False)
    is_known = np.array([nm in known for nm in dict_names], bool)
    strong = (tidf | stapf)[cand_rows]  # a TID@/PID@ prefix is only ever printed by tracing
    keep_c = strong | is_known[codes] if len(dict_names) else np.zeros(0, bool)
    kept = cand_rows[keep_c]
    kcodes = codes[keep_c]
    k = len(kept)
    acc.skipped += n - k
    if not k:
        return
    line_no = first_line + kept

    # prefix columns
    if tidf.any():
        r = np.flatnonzero(tidf)
        s0 = starts[r]
        tid[r] = S.dec_value_range(buf, s0, s0 + at[r])
        sec = S.dec_value_range(buf, s0 + at[r] + 1, s0 + dot[r])
        usec = S.dec_value_range(buf, s0 + dot[r] + 1, s0 + colon[r])
        t_ns[r] = sec * 1_000_000_000 + usec * 1000
    if stapf.any():
        r = np.flatnonzero(stapf)
        s0 = starts[r]
        pid[r] = S.dec_value_range(buf, s0, s0 + at[r])
        t_ns[r] = S.dec_value_range(buf, s0 + at[r] + 1, s0 + sp[r])
    iso_rows = np.flatnonzero(isof)
    if len(iso_rows):
        s0 = starts[iso_rows]
        y = S.dec_value_range(buf, s0, s0 + 4)
        mo = S.dec_value_range(buf, s0 + 5, s0 + 7)
        d = S.dec_value_range(buf, s0 + 8, s0 + 10)
        hh = S.dec_value_range(buf, s0 + 11, s0 + 13)
        mi = S.dec_value_range(buf, s0 + 14, s0 + 16)
        ss = S.dec_value_range(buf, s0 + 17, s0 + 19)
        zi = zc[iso_rows]
        has_frac = zi > 20
        nf = np.where(has_frac, zi - 20, 0)
        frac = np.where(has_frac, S.dec_value_range(buf, s0 + 20, s0 + 20 + nf), 0)
        scale = np.array([10**(9 - j) for j in range(10)], np.int64)[np.clip(nf, 0, 9)]
        secs = S.days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss
        t_ns[iso_rows] = secs * 1_000_000_000 + frac * scale
        bad = (mo < 1) | (mo > 12) | (d < 1) | (d > 31) | (hh > 23) | (mi > 59) | (ss > 60)
        t_ok[iso_rows[bad]] = False

    cols = _Cols(k)
    kidx_of = np.full(n, -1, np.int64)
    kidx_of[kept] = np.arange(k)
    body_start = np.minimum(nend + 1, ends)
    fmts = formats()
    malformed_rows: list[np.ndarray] = []
    seen = set()
    for code in np.unique(kcodes):
        name = dict_names[code]
        seen.add(name)
        variants = fmts.get(name)
        if not variants:
            continue
        rows = kept[kcodes == code]
        pos = body_start[rows]
        end = ends[rows]
        left = np.arange(len(rows))
        for v in variants:
            if not len(left):
                break
            ok, raw = _scan_variant(buf, v, pos[left], end[left])
            if ok.any():
                sel = left[ok]
                args = _args_to_arrow(raw, np.flatnonzero(ok), buf)
                cols.put(kidx_of[rows[sel]], fill_columns(name, args))
                left = left[~ok]
        if len(left):
            # lines the vectorised scanner could not settle: regex, then malformed
            for v in variants:
                if not left.size:
                    break
                hits: list[tuple[int, dict]] = []
                rest = []
                for j in left:
                    r = rows[j]
                    body = data[body_start[r]: ends[r]].decode("utf-8", "replace")
                    a = _regex_args(v, body)
                    (hits.append((j, a)) if a is not None else rest.append(j))
                if hits:
                    sel = np.array([h[0] for h in hits])
                    kinds = {t[1]: t[0] for t in v.tokens if t[0] != "lit"}
                    args = {}
                    for nm, kind in kinds.items():
                        vals = [h[1][nm] for h in hits]
                        if kind == STR:
                            args[nm] = pa.array(vals, type=pa.large_string())
                        elif kind in (INT, HEX):
                            args[nm] = pa.array(vals, type=pa.int64())
                    cols.put(kidx_of[rows[sel]], fill_columns(name, args))
                left = np.asarray(rest, np.int64)
            still = left
            if len(still):
                bad_rows = rows[still]
                malformed_rows.append(bad_rows)
                for r in bad_rows[: max(0, MAX_WARNINGS - len(acc.warnings))]:
                    text = data[body_start[r]: ends[r]].decode("utf-8", "replace")
                    acc.warn(first_line + int(r),
                             f"malformed {name} line (matches no known format): {text[:160]!r}")
    acc.names |= seen
    n_bad = sum(len(b) for b in malformed_rows)
    acc.malformed += n_bad

    kt = t_ok[kept]
    clock = np.where(kt, "realtime", "none")
    tbl = {
        "t_ns": pa.array(t_ns[kept], type=pa.int64(), mask=~kt),
        "clock_ns": pa.array(t_ns[kept], type=pa.int64(), mask=~kt),
        "clock": pa.array(clock, type=pa.large_string()),
        "seq": pa.array(line_no, type=pa.int64()),
        "pid": pa.array(pid[kept], type=pa.int64(), mask=~stapf[kept]),
        "tid": pa.array(tid[kept], type=pa.int64(), mask=~tid_ok[kept]),
        "event": pa.DictionaryArray.from_arrays(pa.array(kcodes.astype(np.int32)),
                                                pa.array(dict_names, pa.large_string())).cast(pa.large_string()),
        "line": pa.array(line_no, type=pa.int64()),
        "raw": S.slices(buf, starts[kept], ends[kept]),
    }
    tbl.update(cols.arrays())
    acc.tables.append(pa.table(tbl))


# ---------------------------------------------------------------------------
# frames


_PD_TYPES = {
    pa.int64(): pd.Int64Dtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.large_string(): pd.StringDtype("pyarrow"),
    pa.string(): pd.StringDtype("pyarrow"),
}


def _category(values: pa.ChunkedArray | pa.Array) -> pd.Categorical:
    enc = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    enc = enc.dictionary_encode()
    cats = pd.Index(enc.dictionary.to_pylist(), dtype="str")
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    return pd.Categorical.from_codes(codes, categories=cats)


def _na_column(dtype: str, n: int) -> object:
    if dtype == "Int64":
        return pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, bool))
    if dtype == "Float64":
        return pd.arrays.FloatingArray(np.zeros(n, np.float64), np.ones(n, bool))
    if dtype == "category":
        return pd.Categorical.from_codes(np.full(n, -1, np.int8), categories=pd.Index([], dtype="str"))
    return pd.array(pa.nulls(n, pa.large_string()), dtype=pd.StringDtype("pyarrow"))


def tables_to_frame(tables: list[pa.Table], *, side: str, origin: str, file: str | None) -> pd.DataFrame:
    """Concatenate chunk tables into one schema frame (constant columns added cheaply)."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return events.empty_frame()
    tbl = pa.concat_tables(tables, promote_options="default")
    n = tbl.num_rows
    plain = [c for c, t in events.COLUMNS.items() if c in tbl.column_names and t != "category"]
    part = tbl.select(plain).to_pandas(types_mapper=_PD_TYPES.get)
    data: dict[str, object] = {}
    for col, dtype in events.COLUMNS.items():
        if col in ("side", "origin"):
            data[col] = pd.Categorical.from_codes(
                np.zeros(n, np.int8), categories=pd.Index([side if col == "side" else origin], dtype="str"))
        elif col == "file" and file is not None:
            rep = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                                 pa.array([file], pa.large_string()))
            data[col] = pd.array(rep.cast(pa.large_string()), dtype=pd.StringDtype("pyarrow"))
        elif col not in tbl.column_names:
            data[col] = _na_column(dtype, n)
        elif dtype == "category":
            data[col] = _category(tbl[col])
        else:
            data[col] = part[col].array
    return pd.DataFrame(data)


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
    frame = tables_to_frame(acc.tables, side=str(s), origin=events.Origin.QEMU_LOG, file=acc.file)
    warnings = list(acc.warnings)
    if acc.malformed > len([w for w in warnings if "malformed" in w]):
        warnings.append(f"{acc.file or '<bytes>'}: {acc.malformed} malformed trace lines in all "
                        f"(first {MAX_WARNINGS} shown)")
    return ParseResult(frame=frame, lines=acc.lines, skipped=acc.skipped, malformed=acc.malformed,
                       warnings=warnings, side=str(s), file=acc.file, event_names=set(acc.names))


def _split_chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[tuple[bytes, int]]:
    """Pieces of ``data`` cut after a newline, each with its number of newlines."""
    start = 0
    n = len(data)
    while start < n:
        stop = min(start + size, n)
        if stop < n:
            cut = data.rfind(b"\n", start, stop)
            stop = cut + 1 if cut >= start else (data.find(b"\n", stop) + 1 or n)
        piece = data[start:stop]
        yield piece, piece.count(b"\n")
        start = stop


def parse_bytes(data: bytes, *, side: str | None = None, file: str | None = None,
                first_line: int = 1) -> ParseResult:
    """Parse log text held in memory; ``side`` None = detect from content/file name."""
    acc = _Acc(file)
    known = known_event_names()
    line = first_line
    for piece, nl in _split_chunks(data):
        _parse_chunk(piece, line, acc, known)
        line += nl
    return _finish(acc, side, file)


def iter_chunks(f, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Read ``f`` in pieces that end at a newline (the last one may not)."""
    carry = b""
    while True:
        block = f.read(size)
        if not block:
            if carry:
                yield carry
            return
        block = carry + block if carry else block
        cut = block.rfind(b"\n")
        if cut < 0:
            carry = block
            continue
        carry = block[cut + 1:]
        yield block[: cut + 1]


def read_log(path: str | os.PathLike, side: str | None = None) -> ParseResult:
    """Parse a QEMU trace log file, streaming it in chunks."""
    p = str(path)
    acc = _Acc(p)
    known = known_event_names()
    line = 1
    try:
        f = open(p, "rb")
    except FileNotFoundError:
        raise InputError(p, "no such file") from None
    except IsADirectoryError:
        raise InputError(p, "is a directory, expected a QEMU trace log") from None
    except OSError as e:
        raise InputError(p, e.strerror or str(e)) from None
    with f:
        for piece in iter_chunks(f):
            _parse_chunk(piece, line, acc, known)
            line += piece.count(b"\n")
    return _finish(acc, side, p)


# ---------------------------------------------------------------------------
# live tail


class QemuLogSource(Source):
    """Tails a growing QEMU trace log: complete lines only, survives truncation/rotation."""

    name = "qemu-log"

    def __init__(self, path: str | os.PathLike, side: str | None = None, follow: bool = True,
                 poll_s: float = 0.1):
        self.path = str(path)
        self.side = side or detect_side(set(), self.path)
        self.follow = follow
        self.poll_s = poll_s
        self.lines = 0
        self.skipped = 0
        self.malformed = 0
        self.events = 0
        self.rotations = 0
        self.warnings: list[str] = []
        self._f = None
        self._ino: int | None = None
        self._pos = 0
        self._carry = b""
        self._line = 1
        self.name = f"qemu-log:{Path(self.path).name}"

    def __enter__(self) -> QemuLogSource:
        return self

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def _open(self) -> bool:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return False
        self._f = f
        self._ino = os.fstat(f.fileno()).st_ino
        self._pos = 0
        self._carry = b""
        return True

    def _check_rotation(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if self._f is None:
            return
        if st.st_ino != self._ino:  # rotated: finish the old file, then the new one
            self.rotations += 1
            self.close()
            self._open()
        elif st.st_size < self._pos:  # truncated in place
            self.rotations += 1
            self._f.seek(0)
            self._pos = 0
            self._carry = b""

    def _parse(self, data: bytes) -> pd.DataFrame:
        acc = _Acc(self.path)
        _parse_chunk(data, self._line, acc, known_event_names())
        self._line += data.count(b"\n")
        self.lines += acc.lines
        self.skipped += acc.skipped
        self.malformed += acc.malformed
        self.warnings.extend(acc.warnings[: max(0, MAX_WARNINGS - len(self.warnings))])
        res = _finish(acc, self.side, self.path)
        self.events += len(res.frame)
        return res.frame

    def batches(self, stop: threading.Event) -> Iterator[pd.DataFrame]:
        while not stop.is_set():
            if self._f is None and not self._open():
                if not self.follow:
                    return
                stop.wait(self.poll_s)
                continue
            block = self._f.read(CHUNK_BYTES)
            if block:
                self._pos += len(block)
                block = self._carry + block
                cut = block.rfind(b"\n")
                if cut < 0:
                    self._carry = block
                    continue
                self._carry = block[cut + 1:]
                yield self._parse(block[: cut + 1])
                continue
            if not self.follow:
                if self._carry:
                    yield self._parse(self._carry)
                    self._carry = b""
                return
            self._check_rotation()
            yield events.empty_frame()  # heartbeat
            stop.wait(self.poll_s)

    def health(self) -> dict[str, object]:
        return {"source": self.name, "lines": self.lines, "events": self.events,
                "skipped": self.skipped, "malformed": self.malformed,
                "rotations": self.rotations, "warnings": self.warnings[-5:]}


def wait_for(path: str, timeout_s: float = 5.0) -> bool:
    """True once ``path`` exists (used by callers that start QEMU and tail its log)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False
