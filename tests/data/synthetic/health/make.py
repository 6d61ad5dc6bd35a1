"""SYNTHETIC QEMU 10.0 trace logs and BPF rows of one VFIO migration that goes wrong in every
way the device health findings check, for what no real run here produces (mtty never stalls,
never loses bytes, never re-inits its PRE_COPY data, and QEMU never switches over before a
switchover ACK). Lines follow the exact trace-events format strings of QEMU 10.0 quoted in
shared/reference/qemu-trace.md (§1.1 v10.0.0 list, §2.1-§2.3, prefix §4.1); the BPF rows are
``profiler.events`` rows as the BPF collector writes them (vfio-uapi.md §2.5, §5.1).

    python tests/data/synthetic/health/make.py   # rewrites source.log, destination.log, bpf.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEV = "0000:3b:00.1"
IDSTR = "0000:00:03.0/vfio"
MiB = 1 << 20
T0_US = 1_764_000_000_000_000
SRC_TID, DST_TID = 4242, 4343


class Log:
    def __init__(self, tid: int):
        self.tid, self.t_us, self.lines = tid, T0_US, []

    def at(self, ms: float) -> Log:
        self.t_us = T0_US + int(ms * 1000)
        return self

    def emit(self, event: str, body: str = "") -> None:
        sec, usec = divmod(self.t_us, 1_000_000)
        # empty formats print a trailing space; VFIO formats begin with " (%s)"
        self.lines.append(f"{self.tid}@{sec}.{usec:06d}:{event} {body}")
        self.t_us += 20

    def vfio(self, event: str, rest: str = "") -> None:
        self.emit(event, f" ({DEV})" + (f" {rest}" if rest else ""))


def source() -> list[str]:
    s = Log(SRC_TID)
    s.emit("migrate_set_state", "new state setup")                       # "new state %s"
    s.emit("savevm_state_setup")
    # >= 9.1: " (%s) new state %s, recover state %s" then " (%s) state %s"
    s.vfio("vfio_migration_set_state", "new state PRE_COPY, recover state RUNNING")
    s.vfio("vfio_migration_set_device_state", "state PRE_COPY")
    s.vfio("vfio_save_setup", f"data buffer size {MiB}")                 # " (%s) data buffer size %"PRIu64
    s.emit("migration_bitmap_sync_start")
    s.emit("migration_bitmap_sync_end", "dirty_pages 16384")             # "dirty_pages %" PRIu64
    s.emit("migrate_set_state", "new state active")
    s.emit("migration_thread_setup_complete")
    t = 10.0
    # pre-copy: the device's initial data drains, then grows again (new initial data: REINIT)
    for ram_left, init_left in [(64, 4), (48, 3), (32, 2), (16, 1), (0, 0), (0, 2), (0, 1)]:
        ram_b, init_b = ram_left * MiB, init_left * MiB
        s.at(t)
        # " (%s) precopy %"PRIu64" postcopy %"PRIu64" precopy initial size %"PRIu64" precopy dirty size %"PRIu64
        s.vfio("vfio_state_pending_estimate", f"precopy {ram_b + init_b} postcopy 0 precopy initial size {init_b} "
               "precopy dirty size 0")
        # "estimate pending size %" PRIu64 " (pre = %" PRIu64 " post=%" PRIu64 ")"
        s.emit("migrate_pending_estimate", f"estimate pending size {ram_b + init_b} (pre = {ram_b + init_b} post=0)")
        s.emit("savevm_state_iterate")
        if init_b:
            s.vfio("vfio_save_iterate_start")
            s.vfio("vfio_save_block", f"data_size {MiB}")                  # " (%s) data_size %d"
            # " (%s) precopy initial size %"PRIu64" precopy dirty size %"PRIu64
            s.vfio("vfio_save_iterate", f"precopy initial size {init_b - MiB} precopy dirty size 0")
        t += 50.0
        s.at(t)
        # "transferred %" PRIu64 " time_spent %" PRIu64 " bandwidth %" PRIu64 " switchover_bw %" PRIu64 " max_size %" PRId64
        s.emit("migrate_transferred", f"transferred {16 * MiB} time_spent 100 bandwidth {16 * MiB // 100} "
               f"switchover_bw 0 max_size {16 * MiB // 100 * 300}")
        t += 50.0
    s.at(t)
    s.emit("migration_bitmap_sync_start")
    s.emit("migration_bitmap_sync_end", "dirty_pages 256")
    # " (%s) precopy %"PRIu64" postcopy %"PRIu64" stopcopy size %"PRIu64" precopy initial size %"PRIu64" precopy dirty size %"PRIu64
    s.vfio("vfio_state_pending_exact", f"precopy {MiB + 8 * MiB} postcopy 0 stopcopy size {8 * MiB} "
           f"precopy initial size {MiB} precopy dirty size 0")
    s.emit("migrate_pending_exact", f"exact pending size {MiB + 8 * MiB} (pre = {MiB + 8 * MiB} post=0)")
    s.emit("migration_thread_low_pending", str(MiB + 8 * MiB))          # "%" PRIu64
    s.emit("vmstate_downtime_checkpoint", "src-downtime-start")          # "%s"
    s.vfio("vfio_migration_set_state", "new state STOP_COPY, recover state PRE_COPY")
    s.vfio("vfio_migration_set_device_state", "state STOP_COPY")
    s.vfio("vfio_vmstate_change", "running 0 reason finish-migrate device state STOP_COPY")
    s.emit("vmstate_downtime_checkpoint", "src-vm-stopped")
    s.emit("migration_completion_vm_stop", "ret 0")                      # "ret %d"
    s.emit("migrate_set_state", "new state device")
    s.emit("migration_precopy_complete")
    s.emit("migration_bitmap_sync_start")
    s.emit("migration_bitmap_sync_end", "dirty_pages 256")
    s.t_us += 1000
    s.emit("vmstate_downtime_save", "type=iterable idstr=ram instance_id=0 downtime=900")
    s.vfio("vfio_save_complete_precopy_start")
    s.vfio("vfio_save_block", f"data_size {MiB}")                        # 1 MiB of the 8 MiB it reported
    s.vfio("vfio_save_complete_precopy", "ret 0")                       # " (%s) ret %d"
    # "type=%s idstr=%s instance_id=%d downtime=%"PRIi64
    s.emit("vmstate_downtime_save", f"type=iterable idstr={IDSTR} instance_id=0 downtime=3000")
    s.emit("vmstate_downtime_checkpoint", "src-iterable-saved")
    s.vfio("vfio_save_device_config_state")
    s.emit("vmstate_downtime_checkpoint", "src-non-iterable-saved")
    s.emit("vmstate_downtime_checkpoint", "src-downtime-end")
    s.emit("migrate_set_state", "new state completed")
    s.t_us += 5000
    s.emit("source_return_path_thread_switchover_acked")               # after the switch-over
    # a cleanup request the device never confirms: it lands in ERROR
    s.vfio("vfio_migration_set_state", "new state STOP, recover state ERROR")
    s.vfio("vfio_migration_set_device_state", "state ERROR")
    s.vfio("vfio_save_cleanup")
    return s.lines


def destination() -> list[str]:
    d = Log(DST_TID).at(-1.0)
    d.emit("migrate_set_state", "new state active")
    d.emit("loadvm_state_setup")
    d.at(5.0)
    # "Switchover ack pending num=%u"
    d.emit("loadvm_state_switchover_ack_needed", "Switchover ack pending num=1")
    d.at(760.0)
    # "type=%s idstr=%s instance_id=%d downtime=%"PRIi64
    d.emit("vmstate_downtime_load", f"type=iterable idstr={IDSTR} instance_id=0 downtime=21000")
    d.emit("vmstate_downtime_checkpoint", "dst-precopy-loadvm-completed")
    d.emit("process_incoming_migration_co_end", "ret=0 postcopy-state=0")  # "ret=%d postcopy-state=%d"
    d.emit("migrate_set_state", "new state completed")
    d.at(766.0)
    d.emit("loadvm_approve_switchover", "Switchover ack pending num=0")
    return d.lines


def bpf_rows() -> list[dict]:
    """BPF collector rows on the source (vfio-uapi.md: feature 12 SET = flags 0x2000c;
    VFIO_MIG_GET_PRECOPY_INFO output flags bit 0 = REINIT once opted in)."""
    base = {"origin": "bpf", "side": "source", "pid": 4200, "tid": SRC_TID, "clock": "monotonic"}

    def row(ms: float, seq: int, **kw) -> dict:
        t = T0_US * 1000 + int(ms * 1e6)
        return {**base, "t_ns": t, "clock_ns": t - T0_US * 1000, "seq": seq, **kw}

    return [
        row(1.0, 0, event="bpf_vfio_ioctl", fd=14, cmd=0x3B75, flags=0x2000C, ret=0, dur_ns=20_000,
            detail="SET MIG_PRECOPY_INFOv2", device="fd14"),
        row(2.0, 1, event="bpf_vfio_ioctl", fd=14, cmd=0x3B75, flags=0x20002, ret=0, count=19, dur_ns=40_000,
            state="PRE_COPY", detail="SET MIG_DEVICE_STATE", device="fd14"),
        row(3.0, 2, event="bpf_precopy_info", fd=19, cmd=0x3B79, init_bytes=4 * MiB, dirty_bytes=0, flags=0, ret=0,
            dur_ns=30_000, device="fd14"),
        row(420.0, 3, event="bpf_precopy_info", fd=19, cmd=0x3B79, init_bytes=0, dirty_bytes=0, flags=0, ret=0,
            dur_ns=30_000, device="fd14"),
        row(520.0, 4, event="bpf_precopy_info", fd=19, cmd=0x3B79, init_bytes=2 * MiB, dirty_bytes=0, flags=1,
            ret=0, dur_ns=30_000, device="fd14"),
        # a read() on the data fd that the driver held for 250 ms
        row(530.0, 5, event="bpf_data_read", fd=19, cmd=0, bytes=MiB, ret=MiB, count=MiB, dur_ns=250_000_000,
            state="PRE_COPY", device="fd14"),
    ]


if __name__ == "__main__":
    (HERE / "source.log").write_text("\n".join(source()) + "\n")
    (HERE / "destination.log").write_text("\n".join(destination()) + "\n")
    (HERE / "bpf.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in bpf_rows()))
    print("wrote", HERE / "source.log", HERE / "destination.log", HERE / "bpf.jsonl")
