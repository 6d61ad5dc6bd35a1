"""QEMU trace-event formats migprof understands, and the event columns each argument fills.

``TRACE_EVENTS`` holds trace-events lines (``name(args) "format"``) copied verbatim from
QEMU 7.2 to 10.2 (``hw/vfio/trace-events``, ``migration/trace-events`` as quoted in
shared/reference/qemu-trace.md). An event with several lines has one variant per
version. From them come the log body grammar (``Variant.tokens``, ``Variant.regex``)
and the argument types of the ``simple`` binary back end (``Variant.args``).
``FIELD_MAP`` says which schema column each argument fills; ``fill_columns`` applies
it, shared by the log and simpletrace parsers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa

from profiler import events as ev

TRACE_EVENTS = r"""
vfio_migration_probe(const char *name, uint32_t index) " (%s) Region %d"
vfio_migration_set_state(const char *name, uint32_t state) " (%s) state %d"
vfio_vmstate_change(const char *name, int running, const char *reason, uint32_t dev_state) " (%s) running %d reason %s device state %d"
vfio_migration_state_notifier(const char *name, const char *state) " (%s) state %s"
vfio_save_setup(const char *name) " (%s)"
vfio_save_cleanup(const char *name) " (%s)"
vfio_save_buffer(const char *name, uint64_t data_offset, uint64_t data_size, uint64_t pending) " (%s) Offset 0x%"PRIx64" size 0x%"PRIx64" pending 0x%"PRIx64
vfio_update_pending(const char *name, uint64_t pending) " (%s) pending 0x%"PRIx64
vfio_save_device_config_state(const char *name) " (%s)"
vfio_save_pending(const char *name, uint64_t precopy, uint64_t postcopy, uint64_t compatible) " (%s) precopy 0x%"PRIx64" postcopy 0x%"PRIx64" compatible 0x%"PRIx64
vfio_save_iterate(const char *name, int data_size) " (%s) data_size %d"
vfio_save_complete_precopy(const char *name) " (%s)"
vfio_load_device_config_state(const char *name) " (%s)"
vfio_load_state(const char *name, uint64_t data) " (%s) data 0x%"PRIx64
vfio_load_state_device_data(const char *name, uint64_t data_offset, uint64_t data_size) " (%s) Offset 0x%"PRIx64" size 0x%"PRIx64
vfio_load_cleanup(const char *name) " (%s)"
vfio_get_dirty_bitmap(int fd, uint64_t iova, uint64_t size, uint64_t bitmap_size, uint64_t start) "container fd=%d, iova=0x%"PRIx64" size= 0x%"PRIx64" bitmap_size=0x%"PRIx64" start=0x%"PRIx64
vfio_iommu_map_dirty_notify(uint64_t iova_start, uint64_t iova_end) "iommu dirty @ 0x%"PRIx64" - 0x%"PRIx64
vfio_load_state_device_data(const char *name, uint64_t data_size, int ret) " (%s) size 0x%"PRIx64" ret %d"
vfio_migration_probe(const char *name) " (%s)"
vfio_migration_set_state(const char *name, const char *state) " (%s) state %s"
vfio_save_block(const char *name, int data_size) " (%s) data_size %d"
vfio_save_complete_precopy(const char *name, int ret) " (%s) ret %d"
vfio_save_setup(const char *name, uint64_t data_buffer_size) " (%s) data buffer size 0x%"PRIx64
vfio_state_pending_exact(const char *name, uint64_t precopy, uint64_t postcopy, uint64_t stopcopy_size) " (%s) precopy 0x%"PRIx64" postcopy 0x%"PRIx64" stopcopy size 0x%"PRIx64
vfio_vmstate_change(const char *name, int running, const char *reason, const char *dev_state) " (%s) running %d reason %s device state %s"
vfio_migration_realize(const char *name) " (%s)"
vfio_save_iterate(const char *name, uint64_t precopy_init_size, uint64_t precopy_dirty_size) " (%s) precopy initial size 0x%"PRIx64" precopy dirty size 0x%"PRIx64
vfio_state_pending_estimate(const char *name, uint64_t precopy, uint64_t postcopy, uint64_t precopy_init_size, uint64_t precopy_dirty_size) " (%s) precopy 0x%"PRIx64" postcopy 0x%"PRIx64" precopy initial size 0x%"PRIx64" precopy dirty size 0x%"PRIx64
vfio_state_pending_exact(const char *name, uint64_t precopy, uint64_t postcopy, uint64_t stopcopy_size, uint64_t precopy_init_size, uint64_t precopy_dirty_size) " (%s) precopy 0x%"PRIx64" postcopy 0x%"PRIx64" stopcopy size 0x%"PRIx64" precopy initial size 0x%"PRIx64" precopy dirty size 0x%"PRIx64
vfio_vmstate_change_prepare(const char *name, int running, const char *reason, const char *dev_state) " (%s) running %d reason %s device state %s"
vfio_migration_state_notifier(const char *name, int state) " (%s) state %d"
vfio_migration_set_device_state(const char *name, const char *state) " (%s) state %s"
vfio_migration_set_state(const char *name, const char *new_state, const char *recover_state) " (%s) new state %s, recover state %s"
vfio_load_state_device_data(const char *name, uint64_t data_size, int ret) " (%s) size %"PRIu64" ret %d"
vfio_save_block_precopy_empty_hit(const char *name) " (%s)"
vfio_save_complete_precopy_start(const char *name) " (%s)"
vfio_save_iterate(const char *name, uint64_t precopy_init_size, uint64_t precopy_dirty_size) " (%s) precopy initial size %"PRIu64" precopy dirty size %"PRIu64
vfio_save_iterate_start(const char *name) " (%s)"
vfio_save_setup(const char *name, uint64_t data_buffer_size) " (%s) data buffer size %"PRIu64
vfio_state_pending_estimate(const char *name, uint64_t precopy, uint64_t postcopy, uint64_t precopy_init_size, uint64_t precopy_dirty_size) " (%s) precopy %"PRIu64" postcopy %"PRIu64" precopy initial size %"PRIu64" precopy dirty size %"PRIu64
vfio_state_pending_exact(const char *name, uint64_t precopy, uint64_t postcopy, uint64_t stopcopy_size, uint64_t precopy_init_size, uint64_t precopy_dirty_size) " (%s) precopy %"PRIu64" postcopy %"PRIu64" stopcopy size %"PRIu64" precopy initial size %"PRIu64" precopy dirty size %"PRIu64
vfio_load_bufs_thread_start(const char *name) " (%s)"
vfio_load_bufs_thread_end(const char *name) " (%s)"
vfio_load_device_config_state_start(const char *name) " (%s)"
vfio_load_device_config_state_end(const char *name) " (%s)"
vfio_load_state_device_buffer_incoming(const char *name, uint32_t idx) " (%s) idx %"PRIu32
vfio_load_state_device_buffer_start(const char *name) " (%s)"
vfio_load_state_device_buffer_starved(const char *name, uint32_t idx) " (%s) idx %"PRIu32
vfio_load_state_device_buffer_load_start(const char *name, uint32_t idx) " (%s) idx %"PRIu32
vfio_load_state_device_buffer_load_end(const char *name, uint32_t idx) " (%s) idx %"PRIu32
vfio_load_state_device_buffer_end(const char *name) " (%s)"
vfio_save_complete_precopy_thread_start(const char *name, const char *idstr, uint32_t instance_id) " (%s) idstr %s instance %"PRIu32
vfio_save_complete_precopy_thread_end(const char *name, int ret) " (%s) ret %d"
vfio_device_dirty_tracking_start(int nr_ranges, uint64_t min32, uint64_t max32, uint64_t min64, uint64_t max64) "nr_ranges %d 32:[0x%"PRIx64" - 0x%"PRIx64"], 64:[0x%"PRIx64" - 0x%"PRIx64"]"
vfio_device_dirty_tracking_start(int nr_ranges, uint64_t min32, uint64_t max32, uint64_t min64, uint64_t max64, uint64_t minpci, uint64_t maxpci) "nr_ranges %d 32:[0x%"PRIx64" - 0x%"PRIx64"], 64:[0x%"PRIx64" - 0x%"PRIx64"], pci64:[0x%"PRIx64" - 0x%"PRIx64"]"
vfio_device_dirty_tracking_update(uint64_t start, uint64_t end, uint64_t min, uint64_t max) "section 0x%"PRIx64" - 0x%"PRIx64" -> update [0x%"PRIx64" - 0x%"PRIx64"]"
vfio_get_dirty_bitmap(int fd, uint64_t iova, uint64_t size, uint64_t bitmap_size, uint64_t start, uint64_t dirty_pages) "container fd=%d, iova=0x%"PRIx64" size= 0x%"PRIx64" bitmap_size=0x%"PRIx64" start=0x%"PRIx64" dirty_pages=%"PRIu64
vfio_get_dirty_bitmap(uint64_t iova, uint64_t size, uint64_t bitmap_size, uint64_t start, uint64_t dirty_pages) "iova=0x%"PRIx64" size= 0x%"PRIx64" bitmap_size=0x%"PRIx64" start=0x%"PRIx64" dirty_pages=%"PRIu64
vfio_container_query_dirty_bitmap(uint64_t iova, uint64_t size, uint64_t bitmap_size, uint64_t start, uint64_t dirty_pages) "iova=0x%"PRIx64" size= 0x%"PRIx64" bitmap_size=0x%"PRIx64" start=0x%"PRIx64" dirty_pages=%"PRIu64
vfio_container_query_dirty_bitmap(uint64_t iova, uint64_t size, uint64_t bitmap_size, uint64_t translated_addr, uint64_t dirty_pages) "iova=0x%"PRIx64" size= 0x%"PRIx64" bitmap_size=0x%"PRIx64" gpa=0x%"PRIx64" dirty_pages=%"PRIu64
vfio_container_query_dirty_bitmap(uint64_t iova, uint64_t size, uint64_t backend_flag, uint64_t bitmap_size, uint64_t translated_addr, uint64_t dirty_pages) "iova=0x%"PRIx64" size=0x%"PRIx64" backend_flag=0x%"PRIx64" bitmap_size=0x%"PRIx64" gpa=0x%"PRIx64" dirty_pages=%"PRIu64
vfio_iommu_map_dirty_notify_skip_ro(uint64_t iova_start, uint64_t iova_end) "iommu dirty @ 0x%"PRIx64" - 0x%"PRIx64
iommufd_backend_get_dirty_bitmap(int iommufd, uint32_t hwpt_id, uint64_t iova, uint64_t size, uint64_t page_size, int ret) " iommufd=%d hwpt=%u iova=0x%"PRIx64" size=0x%"PRIx64" page_size=0x%"PRIx64" (%d)"
iommufd_backend_get_dirty_bitmap(int iommufd, uint32_t hwpt_id, uint64_t iova, uint64_t size, uint64_t flags, uint64_t page_size, int ret) " iommufd=%d hwpt=%u iova=0x%"PRIx64" size=0x%"PRIx64" flags=0x%"PRIx64" page_size=0x%"PRIx64" (%d)"
iommufd_backend_set_dirty(int iommufd, uint32_t hwpt_id, bool start, int ret) " iommufd=%d hwpt=%u enable=%d (%d)"
savevm_state_setup(void) ""
savevm_state_header(void) ""
savevm_state_iterate(void) ""
savevm_state_cleanup(void) ""
savevm_section_start(const char *id, unsigned int section_id) "%s, section_id %u"
savevm_section_end(const char *id, unsigned int section_id, int ret) "%s, section_id %u -> %d"
savevm_section_skip(const char *id, unsigned int section_id) "%s, section_id %u"
vmstate_save(const char *idstr, const char *vmsd_name) "%s, %s"
savevm_send_postcopy_listen(void) ""
savevm_send_postcopy_run(void) ""
loadvm_state_setup(void) ""
qemu_loadvm_state_section_startfull(uint32_t section_id, const char *idstr, uint32_t instance_id, uint32_t version_id) "%u(%s) %u %u"
qemu_loadvm_state_post_main(int ret) "%d"
loadvm_state_cleanup(void) ""
savevm_state_complete_precopy(void) ""
vmstate_downtime_save(const char *type, const char *idstr, uint32_t instance_id, int64_t downtime) "type=%s idstr=%s instance_id=%d downtime=%"PRIi64
vmstate_downtime_load(const char *type, const char *idstr, uint32_t instance_id, int64_t downtime) "type=%s idstr=%s instance_id=%d downtime=%"PRIi64
vmstate_downtime_checkpoint(const char *checkpoint) "%s"
savevm_send_switchover_start(void) ""
loadvm_state_switchover_ack_needed(unsigned int switchover_ack_pending_num) "Switchover ack pending num=%u"
loadvm_approve_switchover(unsigned int switchover_ack_pending_num) "Switchover ack pending num=%u"
migration_bitmap_sync_start(void) ""
migration_bitmap_sync_end(uint64_t dirty_pages) "dirty_pages %" PRIu64
migration_throttle(void) ""
ram_save_iterate_big_wait(uint64_t milliconds, int iterations) "big wait: %" PRIu64 " milliseconds, %d iterations"
ram_load_complete(int ret, uint64_t seq_iter) "exit_code %d seq iteration %" PRIu64
migration_dirty_limit_guest(int64_t dirtyrate) "guest dirty page rate limit %" PRIi64 " MB/s"
ram_save_complete(uint64_t dirty_pages, int done) "dirty=%" PRIu64 ", done=%d"
migrate_set_state(const char *new_state) "new state %s"
migration_thread_setup_complete(void) ""
migration_thread_low_pending(uint64_t pending) "%" PRIu64
migration_rate_limit_pre(int ms) "%d ms"
migration_rate_limit_post(int urgent) "urgent: %d"
migration_completion_vm_stop(int ret) "ret %d"
migration_completion_file_err(void) ""
migration_completion_postcopy_end(void) ""
migration_completion_postcopy_end_after_complete(void) ""
migration_thread_after_loop(void) ""
postcopy_start(void) ""
postcopy_start_set_run(void) ""
migrate_pending(uint64_t size, uint64_t max, uint64_t pre, uint64_t compat, uint64_t post) "pending size %" PRIu64 " max %" PRIu64 " (pre = %" PRIu64 " compat=%" PRIu64 " post=%" PRIu64 ")"
migrate_pending_estimate(uint64_t size, uint64_t pre, uint64_t post) "estimate pending size %" PRIu64 " (pre = %" PRIu64 " post=%" PRIu64 ")"
migrate_pending_exact(uint64_t size, uint64_t pre, uint64_t post) "exact pending size %" PRIu64 " (pre = %" PRIu64 " post=%" PRIu64 ")"
migrate_transferred(uint64_t tranferred, uint64_t time_spent, uint64_t bandwidth, uint64_t size) "transferred %" PRIu64 " time_spent %" PRIu64 " bandwidth %" PRIu64 " max_size %" PRId64
migrate_transferred(uint64_t transferred, uint64_t time_spent, uint64_t bandwidth, uint64_t size) "transferred %" PRIu64 " time_spent %" PRIu64 " bandwidth %" PRIu64 " max_size %" PRId64
migrate_transferred(uint64_t transferred, uint64_t time_spent, uint64_t bandwidth, uint64_t avail_bw, uint64_t size) "transferred %" PRIu64 " time_spent %" PRIu64 " bandwidth %" PRIu64 " switchover_bw %" PRIu64 " max_size %" PRId64
migration_precopy_complete(void) ""
migration_cleanup(void) ""
migration_cancel(void) ""
source_return_path_thread_switchover_acked(void) ""
migrate_fd_cleanup(void) ""
migrate_fd_cancel(void) ""
migrate_fd_error(const char *error_desc) "error=%s"
migrate_error(const char *error_desc) "error=%s"
process_incoming_migration_co_end(int ret, int ps) "ret=%d postcopy-state=%d"
process_incoming_migration_co_end(int ret) "ret=%d"
migration_transferred_bytes(uint64_t qemu_file, uint64_t multifd) "qemu_file %" PRIu64 " multifd %" PRIu64
migration_transferred_bytes(uint64_t qemu_file, uint64_t multifd, uint64_t rdma) "qemu_file %" PRIu64 " multifd %" PRIu64 " RDMA %" PRIu64
multifd_send_sync_main(long packet_num) "packet num %ld"
multifd_send_thread_start(uint8_t id) "%u"
multifd_send_thread_end(uint8_t id, uint64_t packets, uint64_t normal_pages) "channel %u packets %" PRIu64 " normal pages %"  PRIu64
multifd_send_thread_end(uint8_t id, uint64_t packets, uint64_t normal_pages, uint64_t zero_pages) "channel %u packets %" PRIu64 " normal pages %"  PRIu64 " zero pages %"  PRIu64
multifd_send_thread_end(uint8_t id, uint64_t packets) "channel %u packets %" PRIu64
cpu_throttle_set(int new_throttle_pct)  "set guest CPU throttled by %d%%"
cpu_throttle_dirty_sync(void) ""
"""

# Columns each event fills, from which argument (first name present in the variant wins).
# Arguments are named as in trace-events; units are converted by _SCALE.
FIELD_MAP: dict[str, dict[str, tuple[str, ...]]] = {
    # events the schema documents as carrying only the device (the VFIO ones): from ``name``
    # (first, so an entry below can still say otherwise)
    **{e: {"device": ("name",)} for e, cols in ev.EVENT_FIELDS.items() if cols == ("device",)},
    "migrate_set_state": {"state": ("new_state",)},
    "migrate_pending": {
        "bytes": ("size",), "threshold_bytes": ("max",), "pre_bytes": ("pre",),
        "count": ("compat",), "post_bytes": ("post",)},
    "migrate_pending_estimate": {"bytes": ("size",), "pre_bytes": ("pre",), "post_bytes": ("post",)},
    "migrate_pending_exact": {"bytes": ("size",), "pre_bytes": ("pre",), "post_bytes": ("post",)},
    "migrate_transferred": {
        "bytes": ("transferred", "tranferred"), "dur_ns": ("time_spent",),
        "bw_bytes_per_ms": ("bandwidth",), "count": ("avail_bw",), "threshold_bytes": ("size",)},
    "migration_thread_low_pending": {"bytes": ("pending",)},
    "migration_bitmap_sync_end": {"count": ("dirty_pages",)},
    "migration_completion_vm_stop": {"ret": ("ret",)},
    "vmstate_downtime_checkpoint": {"state": ("checkpoint",)},
    "vmstate_downtime_save": {
        "state": ("type",), "device": ("idstr",), "count": ("instance_id",), "dur_ns": ("downtime",)},
    "vmstate_downtime_load": {
        "state": ("type",), "device": ("idstr",), "count": ("instance_id",), "dur_ns": ("downtime",)},
    "migrate_fd_error": {"detail": ("error_desc",)},
    "migrate_error": {"detail": ("error_desc",)},
    "process_incoming_migration_co_end": {"ret": ("ret",), "count": ("ps",)},
    "savevm_section_start": {"device": ("id",), "count": ("section_id",)},
    "savevm_section_end": {"device": ("id",), "count": ("section_id",), "ret": ("ret",)},
    "vfio_save_setup": {"device": ("name",), "bytes": ("data_buffer_size",)},
    "vfio_save_block": {"device": ("name",), "bytes": ("data_size",)},
    "vfio_save_buffer": {
        "device": ("name",), "bytes": ("data_size",), "count": ("data_offset",),
        "stopcopy_bytes": ("pending",)},
    "vfio_update_pending": {"device": ("name",), "stopcopy_bytes": ("pending",)},
    "vfio_save_pending": {
        "device": ("name",), "pre_bytes": ("precopy",), "post_bytes": ("postcopy",),
        "count": ("compatible",)},
    "vfio_save_iterate": {
        "device": ("name",), "init_bytes": ("precopy_init_size",),
        "dirty_bytes": ("precopy_dirty_size",), "bytes": ("data_size",)},
    "vfio_state_pending_estimate": {
        "device": ("name",), "pre_bytes": ("precopy",), "post_bytes": ("postcopy",),
        "init_bytes": ("precopy_init_size",), "dirty_bytes": ("precopy_dirty_size",)},
    "vfio_state_pending_exact": {
        "device": ("name",), "pre_bytes": ("precopy",), "post_bytes": ("postcopy",),
        "stopcopy_bytes": ("stopcopy_size",), "init_bytes": ("precopy_init_size",),
        "dirty_bytes": ("precopy_dirty_size",)},
    "vfio_save_complete_precopy": {"device": ("name",), "ret": ("ret",)},
    "vfio_save_complete_precopy_thread_start": {
        "device": ("name",), "detail": ("idstr",), "count": ("instance_id",)},
    "vfio_save_complete_precopy_thread_end": {"device": ("name",), "ret": ("ret",)},
    "vfio_migration_set_state": {
        "device": ("name",), "state": ("new_state", "state"), "detail": ("recover_state",)},
    "vfio_migration_set_device_state": {"device": ("name",), "state": ("state",)},
    "vfio_vmstate_change": {
        "device": ("name",), "ret": ("running",), "detail": ("reason",), "state": ("dev_state",)},
    "vfio_vmstate_change_prepare": {
        "device": ("name",), "ret": ("running",), "detail": ("reason",), "state": ("dev_state",)},
    "vfio_migration_state_notifier": {"device": ("name",), "state": ("state",)},
    "vfio_load_state": {"device": ("name",), "flags": ("data",)},
    "vfio_load_state_device_data": {"device": ("name",), "bytes": ("data_size",), "ret": ("ret",)},
    "vfio_get_dirty_bitmap": {"bytes": ("size",), "count": ("dirty_pages",)},
    "vfio_container_query_dirty_bitmap": {"bytes": ("size",), "count": ("dirty_pages",)},
    "multifd_send_thread_end": {"count": ("packets",)},
    # VFIO events that carry a packet index too: device, count=idx
    **{e: {"device": ("name",), "count": ("idx",)} for e in (
        "vfio_load_state_device_buffer_incoming", "vfio_load_state_device_buffer_starved",
        "vfio_load_state_device_buffer_load_start", "vfio_load_state_device_buffer_load_end")},
}

# argument -> factor to the column's unit (ms and us durations to ns)
_SCALE = {"time_spent": 1_000_000, "downtime": 1_000}

# VFIO migration protocol v1 (QEMU <= 7.2) device_state bits -> the v2 state of the
# same meaning, so a state timeline reads the same across versions.
V1_STATES = {0: "STOP", 1: "RUNNING", 2: "STOP_COPY", 3: "PRE_COPY", 4: "RESUMING"}
# MigrationEventType printed by vfio_migration_state_notifier from 9.0
NOTIFIER_EVENTS = {0: "precopy-setup", 1: "precopy-done", 2: "precopy-failed"}
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


@cache
def formats() -> dict[str, list[Variant]]:
    """Event name -> its variants (newest grammar first)."""
    table = parse_trace_events(TRACE_EVENTS)
    # longest grammar first; on a tie, integer fields before strings ("state 3" is v1)
    return {k: sorted(v, key=lambda x: (-len(x.tokens), sum(t[0] == STR for t in x.tokens)))
            for k, v in table.items()}


def v1_state_name(bits: int) -> str:
    return V1_STATES.get(bits, f"V1_0x{bits:x}")


def _int_to_state(event: str, arr: pa.Array) -> pa.Array:
    """Integer states (v1 bitmask, MigrationEventType) -> names."""
    if event == "vfio_migration_state_notifier":
        table = NOTIFIER_EVENTS
        other = "event-{}"
    else:
        table = V1_STATES
        other = "V1_0x{:x}"
    vals = arr.to_numpy(zero_copy_only=False)
    valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    uniq = np.unique(vals[valid].astype(np.int64)) if valid.any() else np.array([], np.int64)
    names = {int(u): table.get(int(u), other.format(int(u))) for u in uniq}
    out = np.empty(len(vals), dtype=object)
    for u, nm in names.items():
        out[valid & (vals == u)] = nm
    return pa.array(out, type=pa.large_string(), mask=~valid)


_COL_TYPES = {
    "bytes": pa.int64(), "pre_bytes": pa.int64(), "post_bytes": pa.int64(),
    "stopcopy_bytes": pa.int64(), "init_bytes": pa.int64(), "dirty_bytes": pa.int64(),
    "threshold_bytes": pa.int64(), "bw_bytes_per_ms": pa.float64(), "dur_ns": pa.int64(),
    "count": pa.int64(), "ret": pa.int64(), "flags": pa.int64(),
    "device": pa.large_string(), "state": pa.large_string(), "detail": pa.large_string(),
}


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
    spec = FIELD_MAP.get(event)
    out: dict[str, pa.Array] = {}
    if not spec:
        return out
    import pyarrow.compute as pc

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
        if pa.types.is_large_string(typ):
            if pa.types.is_integer(arr.type):
                arr = _int_to_state(event, arr) if col == "state" else pc.cast(arr, typ)
            elif arr.type != typ:
                arr = pc.cast(arr, typ)
        else:
            if not pa.types.is_integer(arr.type) and not pa.types.is_floating(arr.type):
                continue
            if name in _SCALE:
                arr = pc.multiply(pc.cast(arr, pa.int64()), _SCALE[name])
            if arr.type != typ:
                arr = pc.cast(arr, typ)
        out[col] = arr
    return out
