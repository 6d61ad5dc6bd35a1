"""Compiled (numba) byte scanners behind the QEMU log parser: line prefixes, names, bodies.

Each kernel walks a whole chunk of bytes once and fills numpy arrays, so no Python runs
per line. Compiled on first use and cached on disk (``cache=True``): next to this file, or
numba's user cache dir when this package is read-only (the nested lab's 9p share), or
``NUMBA_CACHE_DIR``. The cache is only a speed-up: see ``_jit``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

log = logging.getLogger(__name__)


def _jit(fn: Callable[..., Any]) -> Any:
    """``njit(cache=True, nogil=True)`` whose cache can fail without failing the parse.

    numba raises when it cannot write a compiled function to its cache (disk full,
    RLIMIT_FSIZE, a cache dir gone read-only), though the function is already compiled in
    memory; and it refuses ``cache=True`` outright when no cache dir is writable at all.
    Both only cost a recompile on the next run, so neither may end the parse.
    """
    try:
        disp = njit(cache=True, nogil=True)(fn)
    except RuntimeError as e:  # "no locator available": nowhere to cache, compile each run
        log.debug("numba cache unavailable for %s: %s", fn.__name__, e)
        return njit(nogil=True)(fn)
    cache = getattr(disp, "_cache", None)  # numba's FunctionCache (no public hook for this)
    save = getattr(cache, "save_overload", None)
    if save is not None:
        def save_overload(sig: Any, data: Any) -> None:
            try:
                save(sig, data)
            except OSError as e:
                log.debug("numba cache not written for %s: %s", fn.__name__, e)

        cache.save_overload = save_overload
    return disp

KIND_BARE, KIND_TID, KIND_STAP, KIND_ISO = 0, 1, 2, 3
OP_LIT, OP_INT, OP_HEX, OP_STR = 0, 1, 2, 3

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@_jit
def _isdig(c):
    return c >= 48 and c <= 57


@_jit
def _isname(c):
    return (c >= 97 and c <= 122) or (c >= 65 and c <= 90) or (c >= 48 and c <= 57) or c == 95


@_jit
def _days_from_civil(y, m, d):
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@_jit
def _num(buf, a, b):
    v = 0
    for i in range(a, b):
        v = v * 10 + (buf[i] - 48)
    return v


@_jit
def scan_lines(buf, nl, starts, ends, kind, name_start, name_end, valid, tid, tid_ok,
               pid, t_ns, t_ok, name_hash, progmark):
    """Read each line's prefix and event name; ``nl`` = positions of the newlines (the
    last entry may be ``len(buf)`` for a final line without one).

    A line is a trace candidate (``valid``) when an event name ``[A-Za-z0-9_]+``
    follows a recognised prefix and is followed by a space or the line end. Only the
    first bytes of a line are read here; bodies are read by ``scan_bodies``.
    ``progmark`` flags lines holding ``"): "`` (the proposed ``prog(tid:thread):``
    prefix), parsed by a regex in Python.
    """
    n = nl.shape[0]
    s = 0
    for li in range(n):
        j = nl[li]
        e = j
        if e > s and buf[e - 1] == 13:
            e -= 1
        starts[li] = s
        ends[li] = e
        _scan_one(buf, li, s, e, kind, name_start, name_end, valid, tid, tid_ok, pid, t_ns, t_ok,
                  name_hash, progmark)
        s = j + 1
    return n


@_jit
def _scan_one(buf, n, s, e, kind, name_start, name_end, valid, tid, tid_ok, pid, t_ns, t_ok,
              name_hash, progmark):
    k = s
    knd = KIND_BARE
    ns = s
    tid_ok[n] = False
    t_ok[n] = False
    tid[n] = 0
    pid[n] = 0
    t_ns[n] = 0
    # TID@SEC.USEC:  or  PID@NS<space>
    while k < e and _isdig(buf[k]) and k - s < 20:
        k += 1
    if k > s and k < e and buf[k] == 64:
        at = k
        k += 1
        k0 = k
        while k < e and _isdig(buf[k]) and k - k0 < 20:
            k += 1
        if k > k0 and k < e:
            if buf[k] == 46:
                dot = k
                k += 1
                k1 = k
                while k < e and _isdig(buf[k]) and k - k1 < 7:
                    k += 1
                if k - k1 == 6 and k < e and buf[k] == 58 and at - s <= 18 and dot - k0 <= 18:
                    knd = KIND_TID
                    ns = k + 1
                    tid[n] = _num(buf, s, at)
                    tid_ok[n] = True
                    t_ns[n] = _num(buf, k0, dot) * 1000000000 + _num(buf, k1, k) * 1000
                    t_ok[n] = True
            elif buf[k] == 32 and at - s <= 18 and k - k0 <= 19:
                knd = KIND_STAP
                ns = k + 1
                pid[n] = _num(buf, s, at)
                t_ns[n] = _num(buf, k0, k)
                t_ok[n] = True
    # YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z<space>
    if knd == KIND_BARE and e - s >= 21 and buf[s + 4] == 45 and buf[s + 7] == 45 \
            and buf[s + 10] == 84 and buf[s + 13] == 58 and buf[s + 16] == 58:
        okd = True
        for q in range(19):
            if q != 4 and q != 7 and q != 10 and q != 13 and q != 16 and not _isdig(buf[s + q]):
                okd = False
        if okd:
            q = s + 19
            frac = 0
            nf = 0
            if buf[q] == 46:
                q += 1
                while q < e and _isdig(buf[q]) and nf < 10:
                    frac = frac * 10 + (buf[q] - 48)
                    nf += 1
                    q += 1
                if nf == 0 or nf > 9:
                    okd = False
            if okd and q + 1 < e and buf[q] == 90 and buf[q + 1] == 32:
                y = _num(buf, s, s + 4)
                mo = _num(buf, s + 5, s + 7)
                d = _num(buf, s + 8, s + 10)
                hh = _num(buf, s + 11, s + 13)
                mi = _num(buf, s + 14, s + 16)
                ss = _num(buf, s + 17, s + 19)
                knd = KIND_ISO
                ns = q + 2
                if 1 <= mo <= 12 and 1 <= d <= 31 and hh <= 23 and mi <= 59 and ss <= 60:
                    for _ in range(9 - nf):
                        frac *= 10
                    t_ns[n] = ((_days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss)
                               * 1000000000 + frac)
                    t_ok[n] = True
    kind[n] = knd
    ne = ns
    h = _FNV_OFFSET
    while ne < e and _isname(buf[ne]) and ne - ns < 128:
        h = (h ^ np.uint64(buf[ne])) * _FNV_PRIME
        ne += 1
    name_start[n] = ns
    name_end[n] = ne
    name_hash[n] = h
    valid[n] = ne > ns and ne - ns < 128 and (ne == e or buf[ne] == 32)
    pm = False
    if not valid[n] or knd == KIND_ISO or knd == KIND_BARE:  # noqa: SIM109 (numba)
        for q in range(s, e - 2):
            if buf[q] == 41 and buf[q + 1] == 58 and buf[q + 2] == 32:
                pm = True
                break
    progmark[n] = pm


@_jit
def scan_bodies(buf, bstart, bend, ops, slot, lit, litoff, litlen, nint, nstr):
    """Match each body [bstart, bend) against one token program (a variant's grammar).

    ops: OP_LIT/OP_INT/OP_HEX/OP_STR per token; slot: index of the literal, int or
    string output. A string field ends at the first match of the literal after it
    (lazy, like the regex), or at the body end when it is the last token. Integers
    read ``-?(0x[hex]+|[0-9]+)``; values out of 64-bit range are left invalid.
    """
    m = bstart.shape[0]
    ok = np.zeros(m, np.bool_)
    ival = np.zeros((m, max(nint, 1)), np.int64)
    ivalid = np.zeros((m, max(nint, 1)), np.bool_)
    sst = np.zeros((m, max(nstr, 1)), np.int64)
    sen = np.zeros((m, max(nstr, 1)), np.int64)
    ntok = ops.shape[0]
    for r in range(m):
        pos = bstart[r]
        end = bend[r]
        good = True
        for t in range(ntok):
            op = ops[t]
            if op == 0:
                lo = litoff[slot[t]]
                ln = litlen[slot[t]]
                if pos + ln > end:
                    good = False
                    break
                for q in range(ln):
                    if buf[pos + q] != lit[lo + q]:
                        good = False
                        break
                if not good:
                    break
                pos += ln
            elif op == 1 or op == 2:
                neg = False
                if op == 1 and pos < end and buf[pos] == 45:
                    neg = True
                    pos += 1
                v = np.uint64(0)
                over = False
                q = pos
                if op == 1 and q + 2 < end and buf[q] == 48 and (buf[q + 1] == 120 or buf[q + 1] == 88):
                    base16 = True
                    q += 2
                elif op == 2:
                    base16 = True
                else:
                    base16 = False
                q0 = q
                if base16:
                    while q < end:
                        c = buf[q]
                        if c >= 48 and c <= 57:
                            d = c - 48
                        elif c >= 97 and c <= 102:
                            d = c - 87
                        elif c >= 65 and c <= 70:
                            d = c - 55
                        else:
                            break
                        if v >> np.uint64(60):
                            over = True
                        v = (v << np.uint64(4)) | np.uint64(d)
                        q += 1
                else:
                    while q < end and _isdig(buf[q]):
                        d = np.uint64(buf[q] - 48)
                        if v > np.uint64(1844674407370955161) or (
                                v == np.uint64(1844674407370955161) and d > np.uint64(5)):
                            over = True
                        v = v * np.uint64(10) + d
                        q += 1
                if q == q0:
                    good = False
                    break
                k = slot[t]
                if not over:
                    sv = np.int64(v)
                    ival[r, k] = -sv if neg else sv
                    ivalid[r, k] = True
                pos = q
            else:
                k = slot[t]
                sst[r, k] = pos
                if t == ntok - 1:
                    pos = end
                else:
                    lo = litoff[slot[t + 1]]
                    ln = litlen[slot[t + 1]]
                    found = -1
                    # a string before the final literal ends where that literal must start
                    first = end - ln if t + 1 == ntok - 1 else pos
                    if first < pos:
                        first = end + 1
                    for p in range(first, end - ln + 1):
                        match = True
                        for q in range(ln):
                            if buf[p + q] != lit[lo + q]:
                                match = False
                                break
                        if match:
                            found = p
                            break
                    if found < 0:
                        good = False
                        break
                    pos = found
                sen[r, k] = pos
        ok[r] = good and pos == end
    return ok, ival, ivalid, sst, sen


@_jit
def copy_slices(buf, s, e):
    """(offsets, bytes) of buf[s[r]:e[r]] for every row, for an Arrow string array."""
    m = s.shape[0]
    offs = np.zeros(m + 1, np.int64)
    for r in range(m):
        ln = e[r] - s[r]
        if ln < 0:
            ln = 0
        offs[r + 1] = offs[r] + ln
    out = np.empty(offs[m], np.uint8)
    for r in range(m):
        o = offs[r]
        a = s[r]
        for q in range(offs[r + 1] - o):
            out[o + q] = buf[a + q]
    return offs, out


@_jit
def find_newlines(buf):
    """Positions of every ``\\n`` in buf, plus len(buf) when the last line lacks one;
    and the OR of all bytes (< 0x80 means pure ASCII)."""
    n = buf.shape[0]
    c = 0
    high = np.uint8(0)
    for i in range(n):
        b = buf[i]
        high |= b
        if b == 10:
            c += 1
    extra = 1 if n > 0 and buf[n - 1] != 10 else 0
    out = np.empty(c + extra, np.int64)
    j = 0
    for i in range(n):
        if buf[i] == 10:
            out[j] = i
            j += 1
    if extra:
        out[j] = n
    return out, high


@_jit
def compact_lines(buf, s, e):
    """Move the spans buf[s[r]:e[r]] (increasing, non-overlapping) to the front of buf,
    in place; returns their Arrow offsets. The memory is already touched, so this is
    cheaper than copying into a fresh buffer."""
    m = s.shape[0]
    offs = np.empty(m + 1, np.int64)
    o = 0
    offs[0] = 0
    for r in range(m):
        a = s[r]
        ln = e[r] - a
        if o != a:
            for q in range(ln):
                buf[o + q] = buf[a + q]
        o += ln
        offs[r + 1] = o
    return offs

