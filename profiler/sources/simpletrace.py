"""Parse QEMU's ``simple`` binary trace back end (trace/simple.c, header version 4).

Layout (qemu-trace.md section 5.1, host byte order, no padding): a 24-byte header
(``~0``, magic ``0xf2b177cb0aa429b4``, version 4), then records, each led by a
``uint64`` type: 0 = mapping (``uint64 id, uint32 len, name``), 1 = event
(``uint64 id, uint64 timestamp_ns, uint32 length, uint32 pid`` + arguments, where
``length`` counts the 24-byte header). Strings are ``uint32 len`` + bytes, every other
argument one ``uint64``. Event id ``~0 - 1`` is the dropped-records count.

Arguments are decoded by the declared types of ``trace_formats`` (the variant whose
layout uses exactly the record's bytes) and fill columns through the same
``fill_columns`` as the log parser. Other events are kept with their argument words
in ``raw``. ``timestamp_ns`` is CLOCK_MONOTONIC: ``clock='monotonic'`` and ``t_ns`` is
NA unless ``monotonic_offset_ns`` (realtime - monotonic) is given.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from profiler import events
from profiler.errors import InputError
from profiler.sources.qemu_log import MAX_WARNINGS, chunks_to_frame, detect_side
from profiler.sources.trace_formats import Variant, as_signed64, fill_columns, formats

HEADER_EVENT_ID = 0xFFFFFFFFFFFFFFFF
HEADER_MAGIC = 0xF2B177CB0AA429B4
HEADER_VERSION = 4
DROPPED_EVENT_ID = 0xFFFFFFFFFFFFFFFE
MAX_TRACE_STRLEN = 512
DROPPED_EVENT = events.SIMPLETRACE_DROPPED  # event name of a dropped-records record; count=dropped

_HDR = struct.Struct("=QQQ")
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")
_MAP = struct.Struct("=QI")
_REC = struct.Struct("=QQII")


@dataclass
class SimpleTraceResult:
    frame: pd.DataFrame
    records: int = 0
    dropped: int = 0
    malformed: int = 0
    warnings: list[str] = field(default_factory=list)
    side: str = "unknown"
    file: str | None = None
    mappings: dict[int, str] = field(default_factory=dict)


def _decode_args(v: Variant, payload: bytes) -> list | None:
    """Argument values per the variant's types, or None if the layout does not fit."""
    out = []
    off = 0
    n = len(payload)
    for a in v.args:
        if a.is_string:
            if off + 4 > n:
                return None
            (ln,) = _U32.unpack_from(payload, off)
            off += 4
            if ln > MAX_TRACE_STRLEN or off + ln > n:
                return None
            out.append(payload[off: off + ln].decode("utf-8", "replace"))
            off += ln
        else:
            if off + 8 > n:
                return None
            (val,) = _U64.unpack_from(payload, off)
            off += 8
            out.append(_as_type(val, a.ctype))
    return out if off == n else None


def _as_type(val: int, ctype: str) -> int:
    """A recorded uint64 word as the value of the declared C type."""
    if ctype in ("bool", "_Bool"):
        return int(val != 0)
    if ctype in ("int", "int32_t", "signed int"):
        val &= 0xFFFFFFFF
        return val - (1 << 32) if val >> 31 else val
    if ctype in ("uint32_t", "unsigned int", "unsigned", "uint16_t", "uint8_t"):
        return val & 0xFFFFFFFF
    return as_signed64(val)


def parse_simpletrace(data: bytes, *, file: str | None = None, side: str | None = None,
                      monotonic_offset_ns: int | None = None) -> SimpleTraceResult:
    """Decode a whole simpletrace file held in memory."""
    where = file or "<bytes>"
    res = SimpleTraceResult(frame=events.empty_frame(), file=file)
    if len(data) < _HDR.size:
        raise InputError(where, f"too short for a simpletrace header ({len(data)} bytes)")
    hid, magic, version = _HDR.unpack_from(data, 0)
    if hid != HEADER_EVENT_ID or magic != HEADER_MAGIC:
        raise InputError(where, "not a QEMU simpletrace file (bad header magic)")
    if version != HEADER_VERSION:
        raise InputError(where, f"simpletrace header version {version}, only {HEADER_VERSION} is supported")

    def warn(msg: str) -> None:
        if len(res.warnings) < MAX_WARNINGS:
            res.warnings.append(f"{where}: {msg}")

    fmts = formats()
    names: dict[int, str] = {}
    # event name -> list of (seq, ts, pid, variant index or -1, values or raw words)
    seq_l: list[int] = []
    ts_l: list[int] = []
    pid_l: list[int] = []
    ev_l: list[str] = []
    raw_l: list[str] = []
    groups: dict[tuple[str, int], list[tuple[int, list]]] = {}
    off = _HDR.size
    n = len(data)
    idx = 0
    while off < n:
        if off + 8 > n:
            warn(f"truncated at byte {off}: incomplete record type word; kept {idx} whole records")
            break
        (rtype,) = _U64.unpack_from(data, off)
        if rtype == 0:
            if off + 8 + _MAP.size > n:
                warn(f"truncated at byte {off}: incomplete mapping record; kept {idx} whole records")
                break
            eid, ln = _MAP.unpack_from(data, off + 8)
            if off + 8 + _MAP.size + ln > n:
                warn(f"truncated at byte {off}: incomplete mapping record; kept {idx} whole records")
                break
            names[eid] = data[off + 8 + _MAP.size: off + 8 + _MAP.size + ln].decode("utf-8", "replace")
            off += 8 + _MAP.size + ln
            continue
        if rtype != 1:
            warn(f"corrupt at byte {off}: unknown record type {rtype}; kept {idx} whole records")
            res.malformed += 1
            break
        if off + 8 + _REC.size > n:
            warn(f"truncated at byte {off}: incomplete event record header; kept {idx} whole records")
            break
        eid, ts, length, pid = _REC.unpack_from(data, off + 8)
        if length < _REC.size:
            warn(f"corrupt at byte {off}: record length {length} < {_REC.size}; kept {idx} whole records")
            res.malformed += 1
            break
        end = off + 8 + length
        if end > n:
            warn(f"truncated at byte {off}: record needs {length} bytes, {n - off - 8} left; "
                 f"kept {idx} whole records")
            break
        payload = data[off + 8 + _REC.size: end]
        rec_off = off
        off = end
        if eid == DROPPED_EVENT_ID:
            cnt = _U64.unpack_from(payload, 0)[0] if len(payload) >= 8 else 0
            res.dropped += cnt
            name = DROPPED_EVENT
            groups.setdefault((name, -2), []).append((idx, [cnt]))
            raw = f"{name} num_events_dropped={cnt}"
        else:
            name = names.get(eid)
            if name is None:
                name = f"simpletrace_event_{eid}"
                warn(f"record at byte {rec_off}: event id {eid} has no mapping record")
            variants = fmts.get(name, [])
            vals = None
            vi = -1
            for j, v in enumerate(variants):
                vals = _decode_args(v, payload)
                if vals is not None:
                    vi = j
                    break
            if vals is not None:
                groups.setdefault((name, vi), []).append((idx, vals))
                raw = name + " " + " ".join(
                    f"{a.name}={x}" if isinstance(x, str) else f"{a.name}=0x{x & 0xFFFFFFFFFFFFFFFF:x}"
                    for a, x in zip(variants[vi].args, vals, strict=True))
            else:
                if variants:
                    res.malformed += 1
                    warn(f"record at byte {rec_off}: {name} arguments ({len(payload)} bytes) fit no "
                         "known argument list")
                words = len(payload) // 8
                args = [_U64.unpack_from(payload, 8 * k)[0] for k in range(words)]
                raw = f"{name} nargs~{words} " + " ".join(f"0x{a:x}" for a in args)
                if len(payload) % 8:
                    raw += f" (+{len(payload) % 8} bytes: has strings)"
        seq_l.append(idx)
        ts_l.append(ts)
        pid_l.append(pid)
        ev_l.append(name)
        raw_l.append(raw)
        idx += 1
    res.records = idx
    res.mappings = names
    if not idx:
        res.side = side or detect_side(set(), file)
        return res

    k = idx
    ts = np.array(ts_l, dtype=np.uint64).view(np.int64)
    names_u = sorted(set(ev_l))
    code_of = {nm: i for i, nm in enumerate(names_u)}
    ones = np.ones(k, bool)
    tbl: dict[str, object] = {
        "_n": k,
        "clock_ns": ("num", ts, ones),
        "clock": ("cat", np.zeros(k, np.int32), ["monotonic"]),
        "seq": ("num", np.array(seq_l, np.int64), ones),
        "pid": ("num", np.array(pid_l, np.int64), ones),
        "event": ("cat", np.array([code_of[x] for x in ev_l], np.int32), names_u),
        "raw": pa.array(raw_l, type=pa.large_string()),
    }
    if monotonic_offset_ns is not None:
        tbl["t_ns"] = ("num", ts + int(monotonic_offset_ns), ones)
    # typed columns per (event, variant), scattered back by record index
    from profiler.sources.qemu_log import _Cols

    cols = _Cols(k)
    for (name, vi), rows in groups.items():
        ridx = np.array([r[0] for r in rows], np.int64)
        if vi == -2:
            cols.put(ridx, {"count": pa.array([r[1][0] for r in rows], type=pa.int64())})
            continue
        v = fmts[name][vi]
        args = {}
        for j, a in enumerate(v.args):
            vals = [r[1][j] for r in rows]
            args[a.name] = pa.array(vals, type=pa.large_string() if a.is_string else pa.int64())
        cols.put(ridx, fill_columns(name, args))
    tbl.update(cols.arrays())
    res.side = side or detect_side(set(ev_l), file)
    frame = chunks_to_frame([tbl], side=res.side, origin=events.Origin.SIMPLETRACE, file=file)
    res.frame = frame
    return res


def read_simpletrace(path: str | os.PathLike, side: str | None = None,
                     monotonic_offset_ns: int | None = None) -> SimpleTraceResult:
    """Decode a simpletrace file (``trace-<pid>``)."""
    p = str(path)
    try:
        with open(p, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError(p, "no such file") from None
    except OSError as e:
        raise InputError(p, e.strerror or str(e)) from None
    return parse_simpletrace(data, file=p, side=side, monotonic_offset_ns=monotonic_offset_ns)


# ---------------------------------------------------------------------------
# writing (fixtures, tests): the exact layout trace/simple.c produces


def encode_header() -> bytes:
    return _HDR.pack(HEADER_EVENT_ID, HEADER_MAGIC, HEADER_VERSION)


def encode_mapping(event_id: int, name: str) -> bytes:
    b = name.encode()
    return _U64.pack(0) + _MAP.pack(event_id, len(b)) + b


def encode_event(event_id: int, timestamp_ns: int, pid: int, args: list[int | str | bytes]) -> bytes:
    """One event record; str/bytes args are strings, ints are uint64 words (sign-extended)."""
    body = b""
    for a in args:
        if isinstance(a, (str, bytes)):
            s = a.encode() if isinstance(a, str) else a
            s = s[:MAX_TRACE_STRLEN]
            body += _U32.pack(len(s)) + s
        else:
            body += _U64.pack(a & 0xFFFFFFFFFFFFFFFF)
    return _U64.pack(1) + _REC.pack(event_id, timestamp_ns, _REC.size + len(body), pid) + body


def encode_dropped(timestamp_ns: int, pid: int, count: int) -> bytes:
    return encode_event(DROPPED_EVENT_ID, timestamp_ns, pid, [count])
