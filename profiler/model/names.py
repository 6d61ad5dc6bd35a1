"""Event-name groups the model keys on (QEMU trace events 7.2-10.2 plus migprof's own)."""

from __future__ import annotations

from profiler import events as E

STATUS = "migrate_set_state"
CHECK_KINDS = {
    "migrate_pending_estimate": "estimate",
    "migrate_pending_exact": "exact",
    "migrate_pending": "pending",  # v7.2 only: carries the threshold as `max`
}
TRANSFERRED = "migrate_transferred"
LOW_PENDING = "migration_thread_low_pending"
SYNC_START = "migration_bitmap_sync_start"
SYNC_END = "migration_bitmap_sync_end"
SETUP_COMPLETE = "migration_thread_setup_complete"
SAVEVM_SETUP = "savevm_state_setup"
SAVEVM_HEADER = "savevm_state_header"  # first line of the migration thread
LOADVM_SETUP = "loadvm_state_setup"
VM_STOP = "migration_completion_vm_stop"
CHECKPOINT = "vmstate_downtime_checkpoint"
DOWNTIME_SAVE = "vmstate_downtime_save"
DOWNTIME_LOAD = "vmstate_downtime_load"
ERRORS = ("migrate_fd_error", "migrate_error")
CANCEL = ("migrate_fd_cancel", "migration_cancel")
DEST_END = "process_incoming_migration_co_end"
SWITCHOVER_ACKED = "source_return_path_thread_switchover_acked"
DEST_ACK_NEEDED = "loadvm_state_switchover_ack_needed"
DEST_ACK_APPROVE = "loadvm_approve_switchover"
PRECOPY_COMPLETE = ("savevm_state_complete_precopy", "migration_precopy_complete")

VFIO_PENDING_EST = "vfio_state_pending_estimate"
VFIO_PENDING_EXACT = "vfio_state_pending_exact"
VFIO_SAVE_PENDING = "vfio_save_pending"  # v7.2 (v1 protocol), cumulative
VFIO_UPDATE_PENDING = "vfio_update_pending"  # v7.2: per-device pending_bytes
VFIO_BLOCK = "vfio_save_block"
VFIO_BUFFER = "vfio_save_buffer"  # v7.2: one region read
VFIO_ITERATE = "vfio_save_iterate"
VFIO_SETUP = "vfio_save_setup"
VFIO_SET_STATE = "vfio_migration_set_state"
VFIO_SET_DEVICE_STATE = "vfio_migration_set_device_state"
VFIO_VMSTATE_CHANGE = "vfio_vmstate_change"
VFIO_VMSTATE_CHANGE_PREPARE = "vfio_vmstate_change_prepare"
VFIO_COMPLETE = "vfio_save_complete_precopy"
VFIO_COMPLETE_START = "vfio_save_complete_precopy_start"
VFIO_THREAD_START = "vfio_save_complete_precopy_thread_start"
VFIO_THREAD_END = "vfio_save_complete_precopy_thread_end"
VFIO_LOAD_STATE = "vfio_load_state"
VFIO_LOAD_DATA = "vfio_load_state_device_data"

QMP_STATUS_EVENTS = (E.QMP_MIGRATION, E.QMP_QUERY_MIGRATE)

# Everything the model reads; the rest (e.g. the migration_transferred_bytes flood) is
# dropped in one vectorised isin before any other work.
USED = frozenset(
    [STATUS, TRANSFERRED, LOW_PENDING, SYNC_START, SYNC_END, SETUP_COMPLETE, SAVEVM_SETUP, SAVEVM_HEADER,
     LOADVM_SETUP, VM_STOP, CHECKPOINT, DOWNTIME_SAVE, DOWNTIME_LOAD, DEST_END,
     SWITCHOVER_ACKED, DEST_ACK_NEEDED, DEST_ACK_APPROVE, VFIO_PENDING_EST, VFIO_PENDING_EXACT,
     VFIO_SAVE_PENDING, VFIO_UPDATE_PENDING, VFIO_BLOCK, VFIO_BUFFER, VFIO_ITERATE, VFIO_SETUP,
     VFIO_SET_STATE, VFIO_SET_DEVICE_STATE, VFIO_VMSTATE_CHANGE, VFIO_VMSTATE_CHANGE_PREPARE,
     VFIO_COMPLETE, VFIO_COMPLETE_START, VFIO_THREAD_START, VFIO_THREAD_END, VFIO_LOAD_STATE,
     VFIO_LOAD_DATA, E.QMP_MIGRATION, E.QMP_MIGRATION_PASS, E.QMP_VFIO_MIGRATION,
     E.QMP_QUERY_MIGRATE, E.QMP_PARAMS, E.BPF_IOCTL, E.LAB_MARK, E.BPF_DATA_READ, E.BPF_DATA_WRITE,
     E.BPF_PRECOPY_INFO, E.BPF_LOST,
     "vfio_save_iterate_start", "vfio_save_block_precopy_empty_hit", "migration_cleanup",
     "migration_cancel", "migrate_fd_cleanup", "migrate_fd_cancel", "vfio_migration_realize",
     *CHECK_KINDS, *ERRORS, *PRECOPY_COMPLETE]
)

# Events that only a source (resp. destination) QEMU prints: they decide the side of a file
# given without one.
SOURCE_ONLY = frozenset(
    [*CHECK_KINDS, TRANSFERRED, LOW_PENDING, SAVEVM_SETUP, SETUP_COMPLETE, DOWNTIME_SAVE,
     VFIO_BLOCK, VFIO_BUFFER, VFIO_ITERATE, VFIO_SETUP, VFIO_COMPLETE, VFIO_THREAD_START,
     VFIO_PENDING_EST, VFIO_PENDING_EXACT, SWITCHOVER_ACKED, *PRECOPY_COMPLETE]
)
DEST_ONLY = frozenset(
    [LOADVM_SETUP, DOWNTIME_LOAD, DEST_END, VFIO_LOAD_STATE, VFIO_LOAD_DATA, DEST_ACK_NEEDED,
     DEST_ACK_APPROVE]
)

# A segment before the first migration start counts as a migration only if it has one of these
# (a log that begins mid-migration); VFIO realize/RUNNING lines at start-up do not.
CORE = frozenset(
    [*CHECK_KINDS, TRANSFERRED, LOW_PENDING, SYNC_END, STATUS, VFIO_BLOCK, VFIO_LOAD_STATE,
     DOWNTIME_SAVE, DOWNTIME_LOAD, DEST_END, E.QMP_MIGRATION, E.QMP_QUERY_MIGRATE]
)

TRACE_ORIGINS = frozenset(["qemu-log", "simpletrace", "usdt", "recording"])
TERMINAL = frozenset(["completed", "failed", "cancelled", "none"])
STARTS = frozenset(["setup", "active"])
