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
                                lab, recording, libvirt
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
compat_bytes       Int64        compatible bytes: neither must-precopy nor
                                can-postcopy (7.2 migrate_pending, vfio_save_pending)
stopcopy_bytes     Int64        VFIO stop-copy size of this device
init_bytes         Int64        VFIO pre-copy initial bytes of this device
dirty_bytes        Int64        VFIO pre-copy dirty bytes of this device
threshold_bytes    Int64        switch-over threshold (max_size / max)
offset_bytes       Int64        offset of the data in the VFIO migration region
                                (protocol v1, 7.2)
requested_bytes    Int64        bytes a data-fd read()/write() asked for (BPF)
bw_bytes_per_ms    Float64      bandwidth in bytes per millisecond
switchover_bw_bytes_per_ms
                   Float64      the switch-over bandwidth QEMU assumes
                                (avail-switchover-bandwidth; >= 8.2, 0 if unset)
dur_ns             Int64        a duration (time_spent, downtime, latency) in ns
dirty_pages        Int64        pages a dirty-bitmap sync (or a VFIO dirty
                                bitmap query) found dirty
dirty_syncs        Int64        QEMU's dirty-sync-count (QMP: MIGRATION_PASS
                                pass, query-migrate ram.dirty-sync-count)
count              Int64        records or packets the event counts: multifd
                                packets, lost BPF / dropped simpletrace records
ret                Int64        a return code / errno (negative)
fd                 Int64        file descriptor (BPF)
data_fd            Int64        the VFIO data fd an ioctl returned (BPF)
cmd                Int64        ioctl command number or feature flags (BPF)
flags              Int64        flag word (VFIO feature/migration flags, the
                                vfio_load_state marker, 1 = VM running for
                                vfio_vmstate_change*)
section_id         Int64        savevm section id (savevm_section_*)
instance_id        Int64        vmstate instance id of an idstr
buffer_idx         Int64        index of a multifd VFIO device-state buffer
state              string       a state name: migration status, VFIO device
                                state, checkpoint, QMP status, postcopy state
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
import json
from typing import Any

import pyarrow as pa

from profiler.deferred import pd  # (pandas imports at first use: see deferred.py)

# the names of migprof's own events (not QEMU trace events), re-exported
from profiler.registry import (  # noqa: F401
    BPF_DATA_READ,
    BPF_DATA_WRITE,
    BPF_FD_CLOSE,
    BPF_IOCTL,
    BPF_LOST,
    BPF_PRECOPY_INFO,
    ENUMS,
    LAB_MARK,
    LIBVIRT_JOB,
    LIBVIRT_LIFECYCLE,
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

SCHEMA_VERSION = 2


class Origin(enum.StrEnum):
    QEMU_LOG = "qemu-log"
    SIMPLETRACE = "simpletrace"
    USDT = "usdt"
    BPF = "bpf"
    QMP = "qmp"
    SOCKDIAG = "sockdiag"
    LAB = "lab"
    RECORDING = "recording"
    LIBVIRT = "libvirt"


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
    "compat_bytes": "Int64",
    "stopcopy_bytes": "Int64",
    "init_bytes": "Int64",
    "dirty_bytes": "Int64",
    "threshold_bytes": "Int64",
    "offset_bytes": "Int64",
    "requested_bytes": "Int64",
    "bw_bytes_per_ms": "Float64",
    "switchover_bw_bytes_per_ms": "Float64",
    "dur_ns": "Int64",
    "dirty_pages": "Int64",
    "dirty_syncs": "Int64",
    "count": "Int64",
    "ret": "Int64",
    "fd": "Int64",
    "data_fd": "Int64",
    "cmd": "Int64",
    "flags": "Int64",
    "section_id": "Int64",
    "instance_id": "Int64",
    "buffer_idx": "Int64",
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


# Schema v1 kept these meanings in ``count`` and the running flag in ``ret``; v2 gave each a
# column of its own. event -> the v2 column of its v1 value.
_V1_COUNT = {
    **dict.fromkeys(("migrate_pending", "vfio_save_pending"), "compat_bytes"),
    "migrate_transferred": "switchover_bw_bytes_per_ms",
    **dict.fromkeys(("migration_bitmap_sync_end", "vfio_get_dirty_bitmap",
                     "vfio_container_query_dirty_bitmap"), "dirty_pages"),
    **dict.fromkeys(("vmstate_downtime_save", "vmstate_downtime_load",
                     "vfio_save_complete_precopy_thread_start"), "instance_id"),
    **dict.fromkeys(("savevm_section_start", "savevm_section_end"), "section_id"),
    **dict.fromkeys(("vfio_load_state_device_buffer_incoming", "vfio_load_state_device_buffer_starved",
                     "vfio_load_state_device_buffer_load_start", "vfio_load_state_device_buffer_load_end"),
                    "buffer_idx"),
    "vfio_save_buffer": "offset_bytes",
    **dict.fromkeys((QMP_MIGRATION_PASS, QMP_QUERY_MIGRATE), "dirty_syncs"),
    BPF_IOCTL: "data_fd",  # VFIO_GROUP_GET_DEVICE_FD rows repeated ``ret`` there: dropped
    **dict.fromkeys((BPF_DATA_READ, BPF_DATA_WRITE), "requested_bytes"),
    "process_incoming_migration_co_end": "state",  # PostcopyState -> its name
    SOCKDIAG_SAMPLE: "detail",  # tcpi_bytes_sent -> "bytes_sent" in the JSON
}
_V1_RET = {"vfio_vmstate_change": "flags", "vfio_vmstate_change_prepare": "flags"}


def upgrade_v1(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of schema v1 (a recording, a lab run's JSON lines) with v2's named columns: each
    value v1 kept in ``count``/``ret`` for another meaning moves to its column. Rows that are
    already v2 hold NA there, so they stay as they are."""
    if "event" not in df.columns or not len(df):
        return df
    name = df["event"].astype("string")
    copied = False
    for old, table in (("count", _V1_COUNT), ("ret", _V1_RET)):
        if old not in df.columns:
            continue
        for new in dict.fromkeys(table.values()):
            m = (name.isin([e for e, c in table.items() if c == new]) & df[old].notna()).to_numpy(dtype=bool)
            if m.any():
                if not copied:
                    df, copied = df.copy(), True
                col = df[new] if new in df.columns else pd.Series(pd.NA, index=df.index, dtype="object")
                col = col.astype(COLUMNS[new] if COLUMNS[new] != "category" else "string")
                col.loc[m] = _v2_values(new, df.loc[m]).astype(col.dtype).to_numpy()
                df[new] = col
                df[old] = df[old].astype("Int64").mask(pd.Series(m, index=df.index))
    return df


def _v2_values(new: str, rows: pd.DataFrame) -> pd.Series:
    """The v2 ``new`` column of v1 rows whose ``count``/``ret`` held its value."""
    old = rows["ret"] if new == "flags" else rows["count"]
    vals = old.astype("Int64")
    if new == "state":  # PostcopyState code -> name
        codes, other = ENUMS["postcopy"]
        return pd.Series([codes.get(int(v), other.format(int(v))) for v in vals], index=vals.index)
    if new == "detail":  # sock_diag: bytes sent into the JSON of the rest
        return pd.Series([_with_key(d, "bytes_sent", int(v)) for d, v in zip(rows["detail"], vals, strict=True)],
                         index=vals.index)
    if new == "data_fd":  # VFIO_GROUP_GET_DEVICE_FD rows repeated ``ret``: no data fd
        devname = (rows["detail"].astype("string") == "VFIO_GROUP_GET_DEVICE_FD").fillna(False)
        return vals.mask(devname.to_numpy(dtype=bool))
    return vals


def _with_key(detail: object, key: str, value: int) -> str:
    try:
        d = json.loads(detail) if isinstance(detail, str) else {}
    except ValueError:
        d = None
    if not isinstance(d, dict):
        return str(detail)
    d[key] = value
    return json.dumps(d, sort_keys=True)


@functools.lru_cache(maxsize=1)
def _empty_template() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


def empty_frame() -> pd.DataFrame:
    """A frame with every column and dtype and no rows."""
    # live sources send one as a heartbeat every 0.1 s: a copy of a built template costs
    # ~0.1 ms, building the typed columns ~4 ms
    return _empty_template().copy()


def _column(values: list[Any], dtype: str) -> Any:
    if dtype == "category":
        return pd.Categorical([None if _na(v) else str(v) for v in values])
    if dtype == "Int64":
        return pd.array([None if _na(v) else int(v) for v in values], dtype="Int64")
    if dtype == "Float64":
        return pd.array([None if _na(v) else float(v) for v in values], dtype="Float64")
    return pd.array([None if _na(v) else str(v) for v in values], dtype="string")


def _na(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and v != v)


def rows_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Schema frame from row dicts (missing keys become NA).

    Built column by column with the schema dtypes: this runs for every live batch, and
    going through ``DataFrame.from_records`` plus ``conform`` costs several times more.
    """
    if not rows:
        return empty_frame()
    data = {c: _column([r.get(c) for r in rows], t) for c, t in COLUMNS.items()}
    return pd.DataFrame(data)


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
