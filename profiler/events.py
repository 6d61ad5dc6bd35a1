"""The one event schema: every source emits frames of exactly these columns.

Each row is one observation: a QEMU trace line, a simpletrace record, a USDT
probe hit, a BPF syscall event, a QMP event or poll, a sock_diag sample.
Unknown QEMU events are kept under their own ``event`` name with ``raw`` text;
nothing is dropped.

Columns (units are in the names):

=================  ===========  ==============================================
column             dtype        meaning
=================  ===========  ==============================================
t_ns               Int64        wall-clock time, ns since the Unix epoch (UTC);
                                NA when the input carries no timestamp
clock_ns           Int64        the raw clock value as the source gave it
                                (log: epoch ns; simpletrace/BPF: CLOCK_MONOTONIC
                                ns); NA when none
clock              category     which clock ``clock_ns`` is: realtime,
                                monotonic, none
seq                Int64        order within its source (line number for text,
                                record index otherwise); ties in time keep it
side               category     source, destination, unknown
pid                Int64        process id (NA when unknown)
tid                Int64        thread id (NA when unknown)
origin             category     qemu-log, simpletrace, usdt, bpf, qmp, sockdiag,
                                lab, recording
event              category     QEMU trace event name, or the names below for
                                other origins
device             string       device name as the event prints it (VFIO host
                                name such as ``0000:3b:00.1`` or
                                ``VFIO user </path>``; ``ram``; an idstr such as
                                ``0000:00:03.0/vfio``); NA when none
bytes              Int64        the event's main byte count (see EVENT_FIELDS)
pre_bytes          Int64        must-precopy bytes (``pre``/``precopy`` args;
                                cumulative over handlers for vfio_state_pending_*)
post_bytes         Int64        can-postcopy bytes
stopcopy_bytes     Int64        VFIO stop-copy size of this device
init_bytes         Int64        VFIO pre-copy initial bytes of this device
dirty_bytes        Int64        VFIO pre-copy dirty bytes of this device
threshold_bytes    Int64        switch-over threshold (max_size / max)
bw_bytes_per_ms    Float64      bandwidth in bytes per millisecond
dur_ns             Int64        a duration (time_spent, downtime, latency) in ns
count              Int64        a count (dirty pages, pass, packets, idx, instance)
ret                Int64        a return code / errno (negative) / running flag
fd                 Int64        file descriptor (BPF)
cmd                Int64        ioctl command number or feature flags (BPF)
flags              Int64        flag word (VFIO migration flags, load_state flag)
state              string       a state name: migration status, VFIO device
                                state, checkpoint, QMP status
detail             string       secondary text: reason, idstr, error text, JSON
file               string       the input file (text sources); NA otherwise
line               Int64        1-based line number in ``file``
raw                string       the raw text of the line / record summary
=================  ===========  ==============================================

``EVENT_FIELDS`` (QEMU events) and ``OWN_EVENT_FIELDS`` (migprof's own) say which columns
each known event fills; both come from the rows of ``profiler.registry``.
"""

from __future__ import annotations

import enum
import functools

import pandas as pd
import pyarrow as pa

# the names of migprof's own events (not QEMU trace events), re-exported
from profiler.registry import (  # noqa: F401
    BPF_DATA_READ,
    BPF_DATA_WRITE,
    BPF_FD_CLOSE,
    BPF_IOCTL,
    BPF_LOST,
    BPF_PRECOPY_INFO,
    LAB_MARK,
    QMP_EVENT,
    QMP_MIGRATION,
    QMP_MIGRATION_PASS,
    QMP_PARAMS,
    QMP_QUERY_MIGRATE,
    QMP_VFIO_MIGRATION,
    SIMPLETRACE_DROPPED,
    SOCKDIAG_SAMPLE,
    event_fields,
    own_fields,
)

SCHEMA_VERSION = 1


class Origin(enum.StrEnum):
    QEMU_LOG = "qemu-log"
    SIMPLETRACE = "simpletrace"
    USDT = "usdt"
    BPF = "bpf"
    QMP = "qmp"
    SOCKDIAG = "sockdiag"
    LAB = "lab"
    RECORDING = "recording"


class Side(enum.StrEnum):
    SOURCE = "source"
    DESTINATION = "destination"
    UNKNOWN = "unknown"


class Clock(enum.StrEnum):
    REALTIME = "realtime"
    MONOTONIC = "monotonic"
    NONE = "none"


# column -> pandas dtype (the order is the schema order)
COLUMNS: dict[str, str] = {
    "t_ns": "Int64",
    "clock_ns": "Int64",
    "clock": "category",
    "seq": "Int64",
    "side": "category",
    "pid": "Int64",
    "tid": "Int64",
    "origin": "category",
    "event": "category",
    "device": "string",
    "bytes": "Int64",
    "pre_bytes": "Int64",
    "post_bytes": "Int64",
    "stopcopy_bytes": "Int64",
    "init_bytes": "Int64",
    "dirty_bytes": "Int64",
    "threshold_bytes": "Int64",
    "bw_bytes_per_ms": "Float64",
    "dur_ns": "Int64",
    "count": "Int64",
    "ret": "Int64",
    "fd": "Int64",
    "cmd": "Int64",
    "flags": "Int64",
    "state": "string",
    "detail": "string",
    "file": "string",
    "line": "Int64",
    "raw": "string",
}

INT_COLUMNS = [c for c, t in COLUMNS.items() if t == "Int64"]
STR_COLUMNS = [c for c, t in COLUMNS.items() if t == "string"]
CAT_COLUMNS = [c for c, t in COLUMNS.items() if t == "category"]

_ARROW_TYPES = {
    "Int64": pa.int64(),
    "Float64": pa.float64(),
    "string": pa.string(),
    "category": pa.dictionary(pa.int32(), pa.string()),
}

ARROW_SCHEMA = pa.schema(
    [pa.field(c, _ARROW_TYPES[t]) for c, t in COLUMNS.items()],
    metadata={b"migprof.schema_version": str(SCHEMA_VERSION).encode()},
)

# Which columns each QEMU event fills (from the registry's rows; used by parsers,
# documented for users), and each of migprof's own events.
EVENT_FIELDS: dict[str, tuple[str, ...]] = event_fields()
OWN_EVENT_FIELDS: dict[str, tuple[str, ...]] = own_fields()
_unknown = {(e, c) for f in (EVENT_FIELDS, OWN_EVENT_FIELDS) for e, cols in f.items() for c in cols
            if c not in COLUMNS}
if _unknown:
    raise ImportError(f"profiler.registry fills columns the schema lacks: {sorted(_unknown)}")


@functools.lru_cache(maxsize=1)
def _empty_template() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


def empty_frame() -> pd.DataFrame:
    """A frame with every column and dtype and no rows."""
    # live sources send one as a heartbeat every 0.1 s: a copy of a built template costs
    # ~0.1 ms, building 29 typed columns ~4 ms
    return _empty_template().copy()


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing columns as NA and cast every column to its schema dtype.

    Sources build frames with only the columns they know; this fills the rest so
    every frame leaving a source has exactly the schema.
    """
    n = len(df)
    out = {}
    for col, dtype in COLUMNS.items():
        if col in df.columns:
            s = df[col]
            if str(s.dtype) != dtype:
                s = s.astype(dtype)
            out[col] = s.reset_index(drop=True)
        else:
            out[col] = pd.Series(pd.array([pd.NA] * n, dtype=dtype if dtype != "category" else "string")).astype(dtype)
    return pd.DataFrame(out)


def validate(df: pd.DataFrame, where: str = "frame") -> None:
    """Raise ValueError naming the first missing or mistyped column."""
    for col, dtype in COLUMNS.items():
        if col not in df.columns:
            raise ValueError(f"{where}: missing column {col!r}")
        if str(df[col].dtype) != dtype:
            raise ValueError(f"{where}: column {col!r} has dtype {df[col].dtype}, expected {dtype}")


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate schema frames, keeping categorical columns categorical."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_frame()
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    from pandas.api.types import union_categoricals

    def _cats(s: pd.Series) -> pd.Series:
        # sources build categories from str or string columns; union needs one dtype
        c = s.cat.categories
        if c.dtype == object:
            return s
        return pd.Series(pd.Categorical.from_codes(s.cat.codes, categories=pd.Index(c.astype(object), dtype=object)))

    data = {}
    for col, dtype in COLUMNS.items():
        if dtype == "category":
            data[col] = pd.Series(union_categoricals([_cats(f[col]) for f in frames], ignore_order=True))
        else:
            data[col] = pd.concat([f[col] for f in frames], ignore_index=True)
    return pd.DataFrame(data)


def sort_timeline(df: pd.DataFrame) -> pd.DataFrame:
    """Order events on one timeline: by t_ns where known, stable in seq order."""
    if df["t_ns"].isna().all():
        return df.reset_index(drop=True)
    return df.sort_values(["t_ns", "seq"], kind="stable", na_position="last").reset_index(drop=True)
