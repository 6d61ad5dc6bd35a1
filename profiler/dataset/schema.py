"""The dataset's tables: their Arrow schemas (explicit types, units in the names) and versions.

A dataset directory holds one hive-partitioned Parquet table per name in ``TABLES``::

    DIR/_migprof_dataset.json                         the marker (format, version)
    DIR/<table>/host=<host>/date=<YYYY-MM-DD>/<unit>.parquet

A *unit* is one add: one recording (``<recording id>.parquet``) or a batch of recordings
of the same partition (``b-<hash>.parquet``); it has a file of the same name in every
table. ``host`` and ``date`` live in the path only (hive style), never in the files.

Every file's Parquet metadata carries ``migprof.dataset`` (JSON: format, version, table,
recordings); an events file also carries the recording keys of :mod:`profiler.store`
(``migprof.schema_version``, ``migprof.meta``), so a single-recording events file is a
recording ``migprof report`` reads.
"""

from __future__ import annotations

import pyarrow as pa

from profiler import events as ev

FORMAT = "migprof.dataset"
# Version of the derived tables' layout (recordings, migrations, checks, devices). Bump it
# when a column changes, and teach write.upgrade to rebuild from the events.
# v2: migrations.view (qemu | kernel: a migration only BPF saw, model/kernel.py)
VERSION = 2
MARKER = "_migprof_dataset.json"
FILE_KEY = b"migprof.dataset"  # JSON {"format", "version", "table", "recordings"}

PARTITIONS = ("host", "date")

# recording id (16 hex digits of a hash of the events) on every row: the join key
_REC = pa.field("recording", pa.string(), nullable=False)
_MIG = pa.field("migration", pa.int32(), nullable=False)  # index in the recording's report

RECORDINGS = pa.schema([
    _REC,
    pa.field("created_ns", pa.int64()),  # when the recording was made (epoch ns, UTC)
    pa.field("recorded_on", pa.string()),  # the host the recording's metadata names
    pa.field("kernel", pa.string()),
    pa.field("machine", pa.string()),
    pa.field("migprof_version", pa.string()),
    pa.field("stored_schema_version", pa.int32()),  # event schema version of the recording as stored
    pa.field("qemu_version", pa.string()),
    pa.field("sources", pa.list_(pa.string())),
    pa.field("events", pa.int64()),
    pa.field("malformed_lines", pa.int64()),
    pa.field("skipped_lines", pa.int64()),
    pa.field("migrations", pa.int32()),
    pa.field("source_path", pa.string()),  # where the recording file was when added
    pa.field("meta_json", pa.string()),  # the recording's whole metadata
])

MIGRATIONS = pa.schema([
    _REC,
    _MIG,
    pa.field("side", pa.string()),
    pa.field("view", pa.string()),  # qemu: QEMU's trace and/or QMP; kernel: BPF alone
    pa.field("outcome", pa.string()),
    pa.field("dest_outcome", pa.string()),
    pa.field("error", pa.string()),
    pa.field("qemu_version", pa.string()),  # exact release when the recording names it, else the family
    pa.field("qemu_family", pa.string()),  # the release family the trace shows (7.2, >=10.0, ...)
    pa.field("device_driver", pa.string()),  # the VFIO devices' drivers, sorted, comma-joined; null: none
    pa.field("vfio_devices", pa.int32()),
    pa.field("start_ns", pa.int64()),
    pa.field("end_ns", pa.int64()),
    pa.field("setup_ms", pa.float64()),
    pa.field("total_ms", pa.float64()),
    pa.field("downtime_ms", pa.float64()),
    pa.field("stopcopy_ms", pa.float64()),
    pa.field("switchover_ms", pa.float64()),
    pa.field("dest_start_ms", pa.float64()),
    pa.field("dest_end_ms", pa.float64()),
    pa.field("switchover_ack_ms", pa.float64()),
    pa.field("switchover_approved_ms", pa.float64()),
    pa.field("dirty_syncs", pa.int64()),
    pa.field("checks", pa.int64()),
    pa.field("checks_to_converge", pa.int64()),
    pa.field("transferred_bytes", pa.int64()),
    pa.field("vfio_transferred_bytes", pa.int64()),
    pa.field("bandwidth_bytes_per_s", pa.float64()),  # sent / total time (compare's metric)
    pa.field("read_ms", pa.float64()),  # data_fd read() time, all devices (BPF)
    pa.field("downtime_limit_ms", pa.float64()),
    pa.field("max_bandwidth_bytes_per_s", pa.float64()),
    pa.field("converged", pa.bool_()),
    pa.field("verdict", pa.string()),
    pa.field("converged_at_check", pa.int32()),
    pa.field("min_gap_bytes", pa.int64()),
    pa.field("dirty_rate_bytes_per_s", pa.float64()),
    pa.field("verdict_bandwidth_bytes_per_s", pa.float64()),
    pa.field("needed_downtime_limit_ms", pa.float64()),
    pa.field("needed_bandwidth_bytes_per_s", pa.float64()),
    pa.field("suggested_downtime_limit_ms", pa.float64()),
    pa.field("suggested_bandwidth_bytes_per_s", pa.float64()),
    pa.field("post_sync_pending_bytes", pa.int64()),
    pa.field("precopy_stuck", pa.bool_()),
    pa.field("dominant_device", pa.string()),
    pa.field("params_json", pa.string()),  # the last QMP migration parameters
])

CHECKS = pa.schema([
    _REC,
    _MIG,
    pa.field("check", pa.int32(), nullable=False),
    pa.field("t_ms", pa.float64()),
    pa.field("kind", pa.string()),
    pa.field("pending_bytes", pa.int64()),
    pa.field("pre_bytes", pa.int64()),
    pa.field("post_bytes", pa.int64()),
    pa.field("threshold_bytes", pa.int64()),
    pa.field("gap_bytes", pa.int64()),
    pa.field("below_threshold", pa.bool_()),
    pa.field("decisive", pa.bool_()),
    pa.field("pass_no", pa.int64()),
    pa.field("bandwidth_bytes_per_ms", pa.float64()),
    pa.field("device_pending_bytes", pa.map_(pa.string(), pa.int64())),
])

DEVICES = pa.schema([
    _REC,
    _MIG,
    pa.field("device", pa.string(), nullable=False),
    pa.field("kind", pa.string()),
    pa.field("driver", pa.string()),
    pa.field("side", pa.string()),
    pa.field("idstr", pa.string()),
    pa.field("precopy_bytes", pa.int64()),
    pa.field("stopcopy_bytes", pa.int64()),
    pa.field("initial_pending_bytes", pa.int64()),
    pa.field("dirty_pending_bytes", pa.int64()),
    pa.field("stopcopy_size_bytes", pa.int64()),
    pa.field("downtime_ms", pa.float64()),
    pa.field("load_ms", pa.float64()),
    pa.field("stopcopy_thread_ms", pa.float64()),
    pa.field("read_ms", pa.float64()),
    pa.field("read_calls", pa.int64()),
    pa.field("read_p50_us", pa.float64()),
    pa.field("read_max_us", pa.float64()),
    pa.field("write_ms", pa.float64()),
    pa.field("write_calls", pa.int64()),
    pa.field("write_p50_us", pa.float64()),
    pa.field("write_max_us", pa.float64()),
    pa.field("bytes_by_phase", pa.map_(pa.string(), pa.int64())),
    pa.field("aliases", pa.list_(pa.string())),
])


def events_schema() -> pa.Schema:
    """The events table: the recording id, then the event schema of :mod:`profiler.events`."""
    return pa.schema([_REC, *ev.ARROW_SCHEMA])


DERIVED: dict[str, pa.Schema] = {
    "recordings": RECORDINGS,
    "migrations": MIGRATIONS,
    "checks": CHECKS,
    "devices": DEVICES,
}
# every table; a unit is renamed into place in this order, migrations last, so a reader of
# the migrations table alone (Spark) never sees a unit whose other files are missing
TABLES: tuple[str, ...] = ("events", "recordings", "checks", "devices", "migrations")


def schema_of(table: str) -> pa.Schema:
    return events_schema() if table == "events" else DERIVED[table]
