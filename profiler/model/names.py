"""Event-name groups the model keys on, by the roles of ``profiler.registry`` (QEMU trace
events 7.2-10.2 plus migprof's own).

A role one event holds is a name here; the groups (checks, errors, the used set, the side
sets ...) are functions of the registry, so a row added to it reaches the model.
"""

from __future__ import annotations

from profiler import events as E
from profiler import registry as R

STATUS = R.only("status")
TRANSFERRED = R.only("transferred")
LOW_PENDING = R.only("low_pending")
SYNC_START = R.only("sync_start")
SYNC_END = R.only("sync_end")
SETUP_COMPLETE = R.only("setup_complete")
SAVEVM_SETUP = R.only("savevm_setup")
SAVEVM_HEADER = R.only("savevm_header")  # first line of the migration thread
LOADVM_SETUP = R.only("loadvm_setup")
VM_STOP = R.only("vm_stop")
CHECKPOINT = R.only("checkpoint")
DOWNTIME_SAVE = R.only("downtime_save")
DOWNTIME_LOAD = R.only("downtime_load")
ERRORS = R.with_role("error")
CANCEL = R.with_role("cancel")
DEST_END = R.only("dest_end")
SWITCHOVER_ACKED = R.only("switchover_acked")
DEST_ACK_NEEDED = R.only("dest_ack_needed")
DEST_ACK_APPROVE = R.only("dest_ack_approve")
PRECOPY_COMPLETE = R.with_role("precopy_complete")

VFIO_PENDING_EST = R.only("vfio_pending_estimate")
VFIO_PENDING_EXACT = R.only("vfio_pending_exact")
VFIO_SAVE_PENDING = R.only("vfio_save_pending")  # v7.2 (v1 protocol), cumulative
VFIO_UPDATE_PENDING = R.only("vfio_update_pending")  # v7.2: per-device pending_bytes
VFIO_BLOCK = R.only("vfio_block")
VFIO_BUFFER = R.only("vfio_buffer")  # v7.2: one region read
VFIO_ITERATE = R.only("vfio_iterate")
VFIO_ITERATE_START = R.only("vfio_iterate_start")
VFIO_EMPTY_HIT = R.only("vfio_empty_hit")
VFIO_SETUP = R.only("vfio_setup")
VFIO_SET_STATE = R.only("vfio_set_state")
VFIO_SET_DEVICE_STATE = R.only("vfio_set_device_state")
VFIO_VMSTATE_CHANGE = R.only("vfio_vmstate_change")
VFIO_VMSTATE_CHANGE_PREPARE = R.only("vfio_vmstate_change_prepare")
VFIO_COMPLETE = R.only("vfio_complete")
VFIO_COMPLETE_START = R.only("vfio_complete_start")
VFIO_THREAD_START = R.only("vfio_thread_start")
VFIO_THREAD_END = R.only("vfio_thread_end")
VFIO_LOAD_STATE = R.only("vfio_load_state")
VFIO_LOAD_DATA = R.only("vfio_load_data")
VFIO_LOAD_THREAD_START = R.only("vfio_load_thread_start")  # multifd load thread (>=10.0)
VFIO_LOAD_THREAD_END = R.only("vfio_load_thread_end")
VFIO_BUFFER_INCOMING = R.only("vfio_buffer_incoming")
VFIO_BUFFER_STARVED = R.only("vfio_buffer_starved")
VFIO_BUFFER_LOAD_START = R.only("vfio_buffer_load_start")
VFIO_BUFFER_LOAD_END = R.only("vfio_buffer_load_end")

QMP_STATUS_EVENTS = (E.QMP_MIGRATION, E.QMP_QUERY_MIGRATE)


def check_kinds() -> dict[str, str]:
    """Convergence-check event -> kind: estimate, exact, or pending (v7.2 ``migrate_pending``,
    which carries the threshold as ``max``)."""
    return R.check_kinds()


def used() -> frozenset[str]:
    """Everything the model reads; the rest (e.g. the migration_transferred_bytes flood) is
    dropped in one vectorised isin before any other work."""
    return R.used()


def kept() -> frozenset[str]:
    """``used()`` and the events read beside the model: what ``report`` parses into rows."""
    return R.kept()


def source_only() -> frozenset[str]:
    """Events only a source QEMU prints: they decide the side of a file given without one."""
    return R.side_only(R.SRC)


def dest_only() -> frozenset[str]:
    """Events only a destination QEMU prints."""
    return R.side_only(R.DST)


def core() -> frozenset[str]:
    """A segment before the first migration start counts as a migration only if it has one of
    these (a log that begins mid-migration); VFIO realize/RUNNING lines at start-up do not."""
    return R.core()


TRACE_ORIGINS = frozenset(["qemu-log", "simpletrace", "usdt", "recording"])
TERMINAL = frozenset(["completed", "failed", "cancelled", "none"])
STARTS = frozenset(["setup", "active"])
