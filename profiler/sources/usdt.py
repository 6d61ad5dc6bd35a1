"""QEMU's dtrace (USDT) probes as events: the same rows the log parser makes from a trace log.

Fedora and RHEL build QEMU with the dtrace back end only: provider ``qemu``, one probe per
trace event, arguments in trace-events order (strings as ``char *``). This source attaches
bcc to the migration and VFIO probes a binary has, picks each probe's trace-events variant
by its argument count and sizes (the ELF note), and fills columns with the log parser's
``trace_formats.fill_columns`` so a field means the same whatever the input.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from profiler import events as ev
from profiler.errors import MigprofError, SetupError
from profiler.sources.bpf import (
    BufferedBpfSource,
    bpf_source_text,
    check_host,
    measure_clock_offset,
)

log = logging.getLogger(__name__)

PROVIDER = b"qemu"
MAX_ARGS, MAX_STRS, STR_LEN = 8, 3, 64
USDT_DTYPE = np.dtype([("ts_ns", "<u8"), ("tgid", "<u4"), ("tid", "<u4"), ("id", "<u4"), ("nargs", "<u4"),
                       ("args", "<u8", (MAX_ARGS,)), ("strs", f"S{STR_LEN}", (MAX_STRS,))], align=True)

# bytes a trace-events argument type occupies in the USDT note (negative: signed)
_SIZES = {"str": 8, "int": -4, "int32_t": -4, "uint32_t": 4, "unsigned": 4, "unsigned int": 4,
          "uint64_t": 8, "int64_t": -8, "size_t": 8, "ssize_t": -8, "long": -8, "unsigned long": 8,
          "bool": 1, "uint8_t": 1, "uint16_t": 2, "int16_t": -2, "uintptr_t": 8, "void *": 8}


@dataclass(frozen=True, slots=True)
class Probe:
    """One attached probe: its event, the trace-events variant chosen and the note's arg sizes."""

    id: int
    event: str
    variant: Any  # trace_formats.Variant
    sizes: tuple[int, ...]

    @property
    def strmask(self) -> int:
        return sum(1 << i for i, a in enumerate(self.variant.args) if a.is_string)


_CTYPES = {1: "u8", -1: "s8", 2: "u16", -2: "s16", 4: "u32", -4: "s32", 8: "u64", -8: "s64"}


def probe_function(pr: Probe) -> str:
    """The C function of one probe (appended to qemu_usdt.bpf.c; see its last comment).

    bcc's argument readers refuse a destination of another size than the argument's, so
    each argument goes through a variable of its own width first.
    """
    reads = "".join(
        f"    {{ {_CTYPES.get(sz, 'u64')} v = 0; bpf_usdt_readarg({i + 1}, ctx, &v); e->args[{i}] = (u64)v; }}\n"
        for i, sz in enumerate(pr.sizes))
    return (f"\nint usdt_{pr.event}(struct pt_regs *ctx)\n{{\n"
            f"    struct usdt_event *e = usdt_begin({pr.id}, {len(pr.sizes)});\n"
            f"    if (!e)\n        return 0;\n{reads}"
            f"    return usdt_end(ctx, e, {pr.strmask:#x});\n}}\n")


def _expected(variant: Any) -> tuple[int, ...]:
    return tuple(_SIZES.get(a.ctype, 8) for a in variant.args)


def choose_variant(event: str, sizes: tuple[int, ...], variants: list[Any]) -> Any | None:
    """The trace-events variant whose argument count and sizes match the probe's note."""
    same_n = [v for v in variants if len(v.args) == len(sizes)]
    if not same_n:
        return None
    exact = [v for v in same_n if tuple(abs(s) for s in _expected(v)) == tuple(abs(s) for s in sizes)]
    return (exact or same_n)[0]


def has_usdt_probes(binary: str) -> bool:
    """Whether an ELF file carries SystemTap SDT notes at all (a quick byte scan)."""
    try:
        with open(binary, "rb") as f:
            return b".note.stapsdt" in f.read()
    except OSError:
        return False


def wanted_events() -> set[str]:
    """Events whose formats the parsers know: every trace event of the registry."""
    from profiler import registry

    return set(registry.trace_names())


class UsdtSource(BufferedBpfSource):
    """bcc on the ``qemu:*`` USDT probes of a running QEMU (by pid)."""

    name = "usdt"
    RECORD = USDT_DTYPE

    def __init__(self, pid: int, side: str = ev.Side.UNKNOWN.value, events: set[str] | None = None,
                 poll_ms: int = 100):
        super().__init__()
        self.pid = int(pid)
        self.side = side
        self.events = events
        self.poll_ms = poll_ms
        self.probes: list[Probe] = []
        self.binary: str | None = None
        self.offset_ns = 0
        self._usdt = None
        self._seq = 0
        self.lost = 0
        self.count = 0
        self.buffer = "ring"

    def _pick(self) -> list[tuple[Any, Probe]]:
        from bcc import USDT

        from profiler.sources.trace_formats import formats

        try:
            self.binary = os.readlink(f"/proc/{self.pid}/exe")
        except FileNotFoundError:
            raise MigprofError(f"usdt: no process {self.pid}") from None
        u = USDT(pid=self.pid)
        self._usdt = u
        fmts = formats()
        want = self.events or wanted_events()
        out = []
        for p in u.enumerate_probes():
            if p.provider != PROVIDER:
                continue
            name = p.name.decode()
            if name not in want or name not in fmts:
                continue
            loc = p.get_location(0)
            sizes = []
            for i in range(p.num_arguments):
                a = loc.get_argument(i)
                sizes.append(-a.size if a.signed else a.size)
            variant = choose_variant(name, tuple(sizes), fmts[name])
            if variant is None or len(sizes) > MAX_ARGS:
                log.warning("usdt: qemu:%s has %d arguments, no known variant; skipped", name, len(sizes))
                continue
            out.append((p, Probe(len(out), name, variant, tuple(sizes))))
        return out

    def __enter__(self) -> UsdtSource:
        host = check_host()
        if host.problem:
            raise SetupError(f"usdt: {host.problem}")
        from bcc import BPF

        picked = self._pick()
        if not picked:
            raise SetupError(f"usdt: {self.binary} has no qemu:* USDT probes for migration "
                             "(Debian builds use the log back end: enable trace events instead)")
        for p, probe in picked:
            self._usdt.enable_probe(probe=p.name.decode(), fn_name=f"usdt_{probe.event}")
        self.probes = [pr for _, pr in picked]
        text = (bpf_source_text("usdt") + "".join(probe_function(pr) for pr in self.probes)).encode()
        last = None
        for buf in ("ring", "perf"):
            self.buffer = buf
            cflags = [f"-DTARGET_TGID={self.pid}",
                      f"-DUSE_RINGBUF={1 if buf == 'ring' else 0}"]
            try:
                self._b = BPF(text=text, usdt_contexts=[self._usdt], cflags=cflags)
                break
            except Exception as e:  # no ring buffer map type: perf buffer
                last = e
        if self._b is None:
            raise SetupError(f"usdt: cannot load probes: {last}")
        self._open_buffer(perf_pages=64)
        self.offset_ns, _ = measure_clock_offset()
        log.info("usdt: %d probes on %s", len(self.probes), self.binary)
        return self

    def _frame(self) -> pd.DataFrame:
        lost = self._lost_now()
        if lost:
            log.warning("usdt: %d events lost (buffer full)", lost)
            self.lost += lost
        recs = self._take_records()
        if recs is None:
            return ev.empty_frame()
        df = decode(recs, self.probes, self.offset_ns, self.side, self._seq)
        self._seq += len(df)
        self.count += len(df)
        return df

    def _targets_alive(self) -> bool:
        return os.path.exists(f"/proc/{self.pid}")

    def health(self) -> dict[str, Any]:
        return {"source": self.name, "binary": self.binary, "probes": [p.event for p in self.probes],
                "events": self.count, "lost": self.lost, "buffer": self.buffer}


def _int_array(values: np.ndarray, size: int) -> pa.Array:
    """Raw argument words -> int64 with the note's width and sign."""
    width = abs(size) * 8
    v = values.astype(np.uint64)
    if width < 64:
        v = v & np.uint64((1 << width) - 1)
        if size < 0:
            sign = np.uint64(1 << (width - 1))
            out = (v ^ sign).astype(np.int64) - np.int64(1 << (width - 1))
            return pa.array(out, type=pa.int64())
    return pa.array(v.astype(np.int64), type=pa.int64())


def decode(recs: np.ndarray, probes: list[Probe], offset_ns: int, side: str, seq0: int = 0) -> pd.DataFrame:
    """USDT records -> schema rows, one event name at a time (columns via fill_columns)."""
    from profiler.sources.trace_formats import fill_columns

    frames = []
    order = np.arange(seq0, seq0 + len(recs))
    for probe in probes:
        sel = np.flatnonzero(recs["id"] == probe.id)
        if not len(sel):
            continue
        r = recs[sel]
        args: dict[str, pa.Array] = {}
        k = 0
        for i, a in enumerate(probe.variant.args):
            if a.is_string:
                vals = [s.decode(errors="replace") for s in r["strs"][:, min(k, MAX_STRS - 1)]]
                args[a.name] = pa.array(vals, type=pa.large_string())
                k += 1
            else:
                args[a.name] = _int_array(r["args"][:, i], probe.sizes[i] if i < len(probe.sizes) else 8)
        cols = fill_columns(probe.event, args)
        t = r["ts_ns"].astype(np.int64)
        raw = pd.Series([probe.event] * len(r), dtype="string") + "("
        for j, a in enumerate(probe.variant.args):
            txt = pd.Series(args[a.name].to_pylist(), dtype="string")
            raw = raw + ("" if j == 0 else ", ") + a.name + "=" + txt
        raw = raw + ")"
        data: dict[str, Any] = {
            "t_ns": pd.array(t + offset_ns, dtype="Int64"),
            "clock_ns": pd.array(t, dtype="Int64"),
            "clock": ev.Clock.MONOTONIC.value,
            "seq": pd.array(order[sel], dtype="Int64"),
            "side": side,
            "pid": pd.array(r["tgid"].astype(np.int64), dtype="Int64"),
            "tid": pd.array(r["tid"].astype(np.int64), dtype="Int64"),
            "origin": ev.Origin.USDT.value,
            "event": probe.event,
            "raw": raw.to_numpy(),
        }
        for col, arr in cols.items():
            dtype = ev.COLUMNS[col]
            data[col] = pd.Series(arr.to_pandas(), dtype=dtype if dtype != "category" else "string")
        frames.append(ev.conform(pd.DataFrame(data)))
    return ev.concat(frames).sort_values("seq", kind="stable").reset_index(drop=True)
