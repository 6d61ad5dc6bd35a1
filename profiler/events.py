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

``EVENT_FIELDS`` documents which columns each known event fills.
"""

from __future__ import annotations

import enum
import functools

import pandas as pd
import pyarrow as pa

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

# Names of events that do not come from QEMU's trace-events.
QMP_EVENT = "qmp_event"  # an asynchronous QMP event; state=event name, detail=JSON data
QMP_MIGRATION = "qmp_migration"  # MIGRATION event; state=status
QMP_MIGRATION_PASS = "qmp_migration_pass"  # MIGRATION_PASS; count=pass
QMP_VFIO_MIGRATION = "qmp_vfio_migration"  # VFIO_MIGRATION; device=device-id, state=device-state
QMP_QUERY_MIGRATE = "qmp_query_migrate"  # query-migrate poll; state=status, detail=JSON reply,
#   bytes=ram.transferred, count=ram.dirty-sync-count, dur_ns=total-time
QMP_PARAMS = "qmp_params"  # migration parameters set/read; detail=JSON, threshold inputs
SOCKDIAG_SAMPLE = "sockdiag_sample"  # bytes=bytes_acked, count=bytes_sent, dur_ns=rtt,
#   bw_bytes_per_ms=delivery rate
BPF_IOCTL = "bpf_vfio_ioctl"  # fd, cmd, flags=feature flags, state=requested/confirmed state,
#   ret, dur_ns=latency, bytes=stop_copy_length, count=returned data_fd
BPF_PRECOPY_INFO = "bpf_precopy_info"  # fd=data fd, init_bytes, dirty_bytes, flags, ret
BPF_DATA_READ = "bpf_data_read"  # fd=data fd, bytes=ret>0, ret, dur_ns, state=phase
BPF_DATA_WRITE = "bpf_data_write"  # same, destination side
BPF_FD_CLOSE = "bpf_fd_close"  # fd
BPF_LOST = "bpf_lost"  # count=lost events
LAB_MARK = "lab_mark"  # a lab action (parameter change, kill); detail=JSON
LIBVIRT_JOB = "libvirt_job"  # libvirt's job statistics (virDomainGetJobStats, JOB_COMPLETED,
#   MIGRATION_ITERATION); state=active|completed|iteration, detail=JSON typed parameters as
#   libvirt names them, count=memory_iteration, bytes=data_processed, dur_ns=time_elapsed
LIBVIRT_LIFECYCLE = "libvirt_lifecycle"  # domain lifecycle event; state=event:detail
#   (e.g. suspended:migrated, stopped:destroyed), stamped on receipt

# Which columns each QEMU event fills (used by parsers, documented for users).
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "migrate_set_state": ("state",),
    "migrate_pending": ("bytes", "threshold_bytes", "pre_bytes", "count", "post_bytes"),
    # count = compat for v7.2 migrate_pending
    "migrate_pending_estimate": ("bytes", "pre_bytes", "post_bytes"),
    "migrate_pending_exact": ("bytes", "pre_bytes", "post_bytes"),
    "migrate_transferred": ("bytes", "dur_ns", "bw_bytes_per_ms", "count", "threshold_bytes"),
    # count = switchover_bw in bytes/ms (>=8.2), NA before
    "migration_thread_low_pending": ("bytes",),
    "migration_bitmap_sync_end": ("count",),
    "migration_completion_vm_stop": ("ret",),
    "vmstate_downtime_checkpoint": ("state",),
    "vmstate_downtime_save": ("state", "device", "count", "dur_ns"),  # state=type, count=instance
    "vmstate_downtime_load": ("state", "device", "count", "dur_ns"),
    "migrate_fd_error": ("detail",),
    "migrate_error": ("detail",),
    "process_incoming_migration_co_end": ("ret", "count"),
    "savevm_section_start": ("device", "count"),
    "savevm_section_end": ("device", "count", "ret"),
    "vfio_save_setup": ("device", "bytes"),
    "vfio_save_block": ("device", "bytes"),
    "vfio_save_buffer": ("device", "bytes", "count", "stopcopy_bytes"),  # v1: offset in count
    "vfio_update_pending": ("device", "stopcopy_bytes"),
    "vfio_save_pending": ("device", "pre_bytes", "post_bytes", "count"),
    "vfio_save_iterate": ("device", "init_bytes", "dirty_bytes", "bytes"),
    "vfio_state_pending_estimate": ("device", "pre_bytes", "post_bytes", "init_bytes", "dirty_bytes"),
    "vfio_state_pending_exact": (
        "device", "pre_bytes", "post_bytes", "stopcopy_bytes", "init_bytes", "dirty_bytes"),
    "vfio_save_complete_precopy": ("device", "ret"),
    "vfio_save_complete_precopy_thread_start": ("device", "detail", "count"),
    "vfio_save_complete_precopy_thread_end": ("device", "ret"),
    "vfio_migration_set_state": ("device", "state", "detail"),  # detail=recover state (>=9.1)
    "vfio_migration_set_device_state": ("device", "state"),
    "vfio_vmstate_change": ("device", "ret", "detail", "state"),  # ret=running, detail=reason
    "vfio_vmstate_change_prepare": ("device", "ret", "detail", "state"),
    "vfio_migration_state_notifier": ("device", "state"),
    "vfio_load_state": ("device", "flags"),
    "vfio_load_state_device_data": ("device", "bytes", "ret"),
    "vfio_get_dirty_bitmap": ("bytes", "count"),
    "vfio_container_query_dirty_bitmap": ("bytes", "count"),
    "multifd_send_thread_end": ("count", "bytes"),
    # VFIO events that carry only the device name (and a multifd packet index in count)
    **{e: ("device",) for e in (
        "vfio_migration_probe", "vfio_migration_realize", "vfio_save_cleanup",
        "vfio_save_device_config_state", "vfio_load_device_config_state",
        "vfio_load_device_config_state_start", "vfio_load_device_config_state_end",
        "vfio_load_cleanup", "vfio_save_iterate_start", "vfio_save_complete_precopy_start",
        "vfio_save_block_precopy_empty_hit", "vfio_load_bufs_thread_start",
        "vfio_load_bufs_thread_end", "vfio_load_state_device_buffer_start",
        "vfio_load_state_device_buffer_end")},
    **{e: ("device", "count") for e in (
        "vfio_load_state_device_buffer_incoming", "vfio_load_state_device_buffer_starved",
        "vfio_load_state_device_buffer_load_start", "vfio_load_state_device_buffer_load_end")},
}


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
