"""QEMU trace-event formats migprof understands, and the event columns each argument fills.

The trace-events lines (``name(args) "format"``, verbatim from QEMU 7.2 to 10.2) are the
rows of ``profiler.registry``; ``TRACE_EVENTS`` is their text. An event with several lines
has one variant per version. From them come the log body grammar (``Variant.tokens``,
``Variant.regex``) and the argument types of the ``simple`` binary back end
(``Variant.args``). ``FIELD_MAP`` says which schema column each argument fills;
``fill_columns`` applies it, shared by the log, simpletrace and USDT parsers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa

from profiler import events as ev
from profiler import registry as R
from profiler.sources import arrow_np as AN

# The trace-events lines of every registry row (verbatim from QEMU), and the columns each
# event's arguments fill: both derived from ``profiler.registry`` (as it was at import;
# the parsers read the registry's cached functions, so a changed table takes effect after
# ``registry.clear_caches()``).
TRACE_EVENTS: str = R.trace_events_text()
FIELD_MAP: dict[str, dict[str, tuple[str, ...]]] = R.field_map()

V1_STATES = R.ENUMS["v1"][0]
NOTIFIER_EVENTS = R.ENUMS["notifier"][0]
# vfio_load_state flag words (printed in hex; stored as signed 64-bit in ``flags``)
VFIO_MIG_FLAGS = {
    0xFFFFFFFFEF100001: "END_OF_STATE", 0xFFFFFFFFEF100002: "DEV_CONFIG_STATE",
    0xFFFFFFFFEF100003: "DEV_SETUP_STATE", 0xFFFFFFFFEF100004: "DEV_DATA_STATE",
    0xFFFFFFFFEF100005: "DEV_INIT_DATA_SENT", 0xFFFFFFFFEF100006: "DEV_CONFIG_LOAD_READY",
}


def as_signed64(v: int) -> int:
    """A 64-bit word as the signed value stored in Int64 columns."""
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >> 63 else v


_PRI = {"d": "d", "i": "i", "u": "u", "x": "x", "X": "X"}
_SPEC = re.compile(
    r"%(?P<flags>[-+ #0']*)(?P<width>\d+|\*)?(?:\.(?P<prec>\d+|\*))?"
    r"(?P<len>hh|h|ll|l|z|j|t|L|q)?(?P<conv>[diouxXcspfgeEaA%])")
_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_]+)\((?P<args>[^)]*)\)\s+(?P<fmt>\".*)$")
_FMT_PART = re.compile(r'"((?:[^"\\]|\\.)*)"|(PRI[diuxX](?:8|16|32|64|PTR))')

STR, INT, HEX, OTHER = "str", "int", "hex", "other"


@dataclass(frozen=True)
class Arg:
    name: str
    ctype: str  # "str" for char* strings, else the C integer type ("int", "uint64_t", ...)

    @property
    def is_string(self) -> bool:
        return self.ctype == "str"


@dataclass(frozen=True)
class Variant:
    """One version of an event: its arguments and its body grammar."""

    event: str
    args: tuple[Arg, ...]
    fmt: str  # printf format with the PRI macros expanded
    # ("lit", text) | ("int", arg) (decimal or 0x-hex) | ("hex", arg) (bare hex digits)
    # | ("str", arg) | ("other", arg, regex)
    tokens: tuple[tuple, ...]

    @property
    def regex(self) -> re.Pattern[str]:
        return _variant_regex(self.tokens)

    @property
    def simple_scannable(self) -> bool:
        return all(t[0] != OTHER for t in self.tokens)


def parse_args(text: str) -> tuple[Arg, ...]:
    """``const char *name, uint64_t size`` -> Args (``void`` -> none)."""
    text = text.strip()
    if text in ("", "void"):
        return ()
    out = []
    for part in text.split(","):
        part = part.strip()
        m = re.match(r"^(?P<type>.*?)(?P<name>[A-Za-z_][A-Za-z0-9_]*)$", part)
        if not m:
            raise ValueError(f"bad argument {part!r}")
        ctype = " ".join(m["type"].split())
        # the simple back end records `char *` with exactly one star as a string
        if ctype.count("*") == 1 and "char" in ctype:
            ctype = "str"
        elif "*" in ctype:
            ctype = "ptr"
        out.append(Arg(m["name"], ctype))
    return tuple(out)


def expand_format(text: str) -> str:
    """The C string-literal form of a trace-events format -> one printf string."""
    parts = []
    for m in _FMT_PART.finditer(text):
        if m.group(1) is not None:
            parts.append(bytes(m.group(1), "utf-8").decode("unicode_escape"))
        else:
            macro = m.group(2)
            conv = macro[3]
            bits = macro[4:]
            parts.append(("l" if bits == "64" else "") + _PRI.get(conv, conv))
    return "".join(parts)


def tokenize(fmt: str, args: tuple[Arg, ...] | None = None) -> tuple[tuple, ...]:
    """A printf format -> body tokens; arguments are named from ``args`` (else a0, a1...).

    A hex conversion preceded by a literal ``0x`` absorbs it, so one token reads both
    ``0x1f`` and the decimal ``31`` that later versions (and RHEL backports) print.
    """
    toks: list[tuple] = []
    lit = ""
    i = 0
    pos = 0
    for m in _SPEC.finditer(fmt):
        lit += fmt[pos:m.start()]
        pos = m.end()
        conv = m["conv"]
        if conv == "%":
            lit += "%"
            continue
        name = args[i].name if args and i < len(args) else f"a{i}"
        i += 1
        if conv in "xX":
            if lit.endswith(("0x", "0X")) or "#" in (m["flags"] or ""):
                lit = lit[:-2] if lit.endswith(("0x", "0X")) else lit
                tok = (INT, name)
            else:
                tok = (HEX, name)
        elif conv in "diu":
            tok = (INT, name)
        elif conv == "o":
            tok = (OTHER, name, r"[0-7]+")
        elif conv == "s":
            tok = (STR, name)
        elif conv == "p":
            tok = (OTHER, name, r"0x[0-9a-fA-F]+|\(nil\)")
        elif conv == "c":
            tok = (OTHER, name, r".")
        else:
            tok = (OTHER, name, r"[-+0-9.eEinfaINFA]+")
        if lit:
            toks.append(("lit", lit))
            lit = ""
        toks.append(tok)
    lit += fmt[pos:]
    if lit:
        toks.append(("lit", lit))
    return tuple(toks)


def _tok_regex(tok: tuple, last: bool) -> str:
    kind = tok[0]
    if kind == "lit":
        return re.escape(tok[1])
    name = tok[1]
    if kind == INT:
        return rf"(?P<{name}>-?(?:0[xX][0-9a-fA-F]+|\d+))"
    if kind == HEX:
        return rf"(?P<{name}>[0-9a-fA-F]+)"
    if kind == STR:
        return rf"(?P<{name}>.*)" if last else rf"(?P<{name}>.*?)"
    return rf"(?P<{name}>{tok[2]})"


@cache
def _variant_regex(tokens: tuple[tuple, ...]) -> re.Pattern[str]:
    body = "".join(_tok_regex(t, k == len(tokens) - 1) for k, t in enumerate(tokens))
    return re.compile(rf"^{body}$", re.DOTALL)


def parse_trace_events(text: str) -> dict[str, list[Variant]]:
    """trace-events lines -> event name -> variants (duplicate grammars dropped)."""
    out: dict[str, list[Variant]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"bad trace-events line {line!r}")
        args = parse_args(m["args"])
        fmt = expand_format(m["fmt"])
        toks = tokenize(fmt, args)
        variants = out.setdefault(m["name"], [])
        if any(v.tokens == toks for v in variants):
            continue
        variants.append(Variant(m["name"], args, fmt, toks))
    return out


@R.derived
def formats() -> dict[str, list[Variant]]:
    """Event name -> its variants (newest grammar first)."""
    table = parse_trace_events(R.trace_events_text())
    # longest grammar first; on a tie, integer fields before strings ("state 3" is v1)
    return {k: sorted(v, key=lambda x: (-len(x.tokens), sum(t[0] == STR for t in x.tokens)))
            for k, v in table.items()}


def v1_state_name(bits: int) -> str:
    table, other = R.ENUMS["v1"]
    return table.get(bits, other.format(bits))


def _codes_to_names(arr: pa.Array, enum: str) -> pa.Array:
    """Integer codes -> their names in ``registry.ENUMS[enum]`` (v1 device states, ...)."""
    table, other = R.ENUMS[enum]
    valid, vals = AN.valid(arr), AN.filled(arr)
    uniq = np.unique(vals[valid].astype(np.int64)) if valid.any() else np.array([], np.int64)
    names = {int(u): table.get(int(u), other.format(int(u))) for u in uniq}
    out: list[str | None] = [None] * len(vals)
    for u, nm in names.items():
        for i in np.flatnonzero(valid & (vals == u)).tolist():
            out[i] = nm
    return AN.strings(out)


# the Arrow type fill_columns gives each schema column
_COL_TYPES = {c: {"Int64": pa.int64(), "Float64": pa.float64()}.get(t, pa.large_string())
              for c, t in ev.COLUMNS.items()}


@dataclass(frozen=True)
class Spans:
    """A string argument not copied yet: byte ranges [start, end) of the parser's buffer."""

    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.start)


def fill_columns(event: str, args: dict[str, pa.Array | Spans]) -> dict[str, pa.Array | Spans]:
    """Schema columns of one event from its decoded arguments (ints as int64, strings as
    Arrow strings or ``Spans``).

    Shared by every parser so a field means the same whatever the input format.
    """
    spec = R.field_map().get(event)
    out: dict[str, pa.Array] = {}
    if not spec:
        return out
    import pyarrow.compute as pc

    units = R.arg_units()
    for col, names in spec.items():
        name = next((n for n in names if n in args), None)
        if name is None:
            continue
        arr = args[name]
        typ = _COL_TYPES[col]
        if isinstance(arr, Spans):  # a string argument: only string columns take it
            if pa.types.is_large_string(typ):
                out[col] = arr
            continue
        unit = units.get((event, name))
        if pa.types.is_large_string(typ):
            if pa.types.is_integer(arr.type):
                arr = _codes_to_names(arr, unit) if unit in R.ENUMS else pc.cast(arr, typ)
            elif arr.type != typ:
                arr = pc.cast(arr, typ)
        else:
            if not pa.types.is_integer(arr.type) and not pa.types.is_floating(arr.type):
                continue
            # a float column takes any uint64 QEMU prints (rounded past 2**53: a value that
            # large is garbage or a cap, never a sum to keep exact)
            lossy = pa.types.is_floating(typ)
            if unit in R.UNITS:
                arr = (pc.multiply(pc.cast(arr, pa.float64(), safe=False), AN.scalar(R.UNITS[unit], pa.float64()))
                       if lossy else pc.multiply(pc.cast(arr, pa.int64()), AN.scalar(R.UNITS[unit], pa.int64())))
            if arr.type != typ:
                arr = pc.cast(arr, typ, safe=not lossy)
        out[col] = arr
    return out
