"""SYNTHETIC QEMU trace logs of VFIO pre-copy + stop-copy migrations (8.1, 9.2, 10.0).

Each scenario prints lines with the exact trace-events format strings of its release, copied
from ../shared/reference/qemu-trace.md (§1.1, §2.1-2.4, prefix §4.1); see README.md. It also
returns the same events as rows of the profiler.events schema, so model tests can run
without a parser, and parser+model tests can check that both give the same report.

    python tests/data/synthetic/migrations/make.py   # rewrites the *.log files here
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEV = "0000:3b:00.1"  # VFIO host name, as vfio_* events print it
IDSTR = "0000:00:03.0/vfio"  # its SaveStateEntry idstr (guest PCI path)
MIG_TID, MAIN_TID = 4242, 4200
T0_US = 1_764_000_000_000_000  # 2025-11-24T16:00:00Z, in microseconds


@dataclass
class Log:
    version: tuple[int, int]
    side: str = "source"
    name: str = "x.log"
    t_us: int = T0_US
    lines: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    # -- formatting helpers -------------------------------------------------------------
    def size(self, n: int) -> str:
        """%"PRIx64 with 0x before v9.2.0, %"PRIu64 from v9.2.0 (VFIO size fields)."""
        return f"0x{n:x}" if self.version < (9, 2) else str(n)

    def emit(self, event: str, body: str, tid: int = MIG_TID, dt_us: int = 50, **cols) -> None:
        self.t_us += dt_us
        sec, usec = divmod(self.t_us, 1_000_000)
        line = f"{tid}@{sec}.{usec:06d}:{event} {body}"
        self.lines.append(line)
        row = {"t_ns": self.t_us * 1000, "clock_ns": self.t_us * 1000, "clock": "realtime",
               "seq": len(self.lines), "side": self.side, "tid": tid, "origin": "qemu-log",
               "event": event, "file": self.name, "line": len(self.lines), "raw": line}
        row.update(cols)
        self.rows.append(row)

    # -- migration core (migration/trace-events) ----------------------------------------
    def set_state(self, s: str, **kw) -> None:
        self.emit("migrate_set_state", f"new state {s}", state=s, **kw)  # "new state %s"

    def empty(self, event: str, **kw) -> None:
        self.emit(event, "", **kw)  # events with an empty format print a trailing space

    def sync(self, dirty_pages: int) -> None:
        self.empty("migration_bitmap_sync_start")
        self.emit("migration_bitmap_sync_end", f"dirty_pages {dirty_pages}", count=dirty_pages)

    def estimate(self, size: int) -> None:
        # "estimate pending size %" PRIu64 " (pre = %" PRIu64 " post=%" PRIu64 ")"
        self.emit("migrate_pending_estimate", f"estimate pending size {size} (pre = {size} post=0)",
                  bytes=size, pre_bytes=size, post_bytes=0)

    def exact(self, size: int) -> None:
        self.emit("migrate_pending_exact", f"exact pending size {size} (pre = {size} post=0)",
                  bytes=size, pre_bytes=size, post_bytes=0)

    def transferred(self, n: int, ms: int, max_size: int) -> None:
        bw = n // ms
        if self.version >= (8, 2):
            body = f"transferred {n} time_spent {ms} bandwidth {bw} switchover_bw 0 max_size {max_size}"
            sbw = 0
        else:
            body = f"transferred {n} time_spent {ms} bandwidth {bw} max_size {max_size}"
            sbw = None
        self.emit("migrate_transferred", body, bytes=n, dur_ns=ms * 1_000_000,
                  bw_bytes_per_ms=float(bw), count=sbw, threshold_bytes=max_size)

    def checkpoint(self, cp: str) -> None:
        if self.version >= (8, 2):
            self.emit("vmstate_downtime_checkpoint", cp, state=cp)

    def downtime(self, kind: str, typ: str, idstr: str, us: int) -> None:
        # "type=%s idstr=%s instance_id=%d downtime=%"PRIi64
        if self.version >= (8, 2):
            self.emit(f"vmstate_downtime_{kind}", f"type={typ} idstr={idstr} instance_id=0 downtime={us}",
                      state=typ, device=idstr, count=0, dur_ns=us * 1000)

    # -- VFIO (hw/vfio/trace-events) ----------------------------------------------------
    def vfio(self, event: str, rest: str = "", **cols) -> None:
        self.emit(event, f" ({DEV})" + (f" {rest}" if rest else ""), device=DEV, **cols)

    def vfio_state(self, s: str, prev: str) -> None:
        if self.version >= (9, 1):
            # entry: " (%s) new state %s, recover state %s"; then " (%s) state %s" on change
            self.vfio("vfio_migration_set_state", f"new state {s}, recover state {prev}", state=s, detail=prev)
            self.vfio("vfio_migration_set_device_state", f"state {s}", state=s)
        else:
            self.vfio("vfio_migration_set_state", f"state {s}", state=s)

    def pending_est(self, cum: int, init: int, dirty: int) -> None:
        s = self.size
        self.vfio("vfio_state_pending_estimate",
                  f"precopy {s(cum)} postcopy {s(0)} precopy initial size {s(init)} precopy dirty size {s(dirty)}",
                  pre_bytes=cum, post_bytes=0, init_bytes=init, dirty_bytes=dirty)

    def pending_exact(self, cum: int, stop: int, init: int, dirty: int) -> None:
        s = self.size
        self.vfio("vfio_state_pending_exact",
                  f"precopy {s(cum)} postcopy {s(0)} stopcopy size {s(stop)} precopy initial size {s(init)} precopy dirty size {s(dirty)}",
                  pre_bytes=cum, post_bytes=0, stopcopy_bytes=stop, init_bytes=init, dirty_bytes=dirty)

    def block(self, n: int) -> None:
        self.vfio("vfio_save_block", f"data_size {n}", bytes=n)  # " (%s) data_size %d"

    def iterate(self, init: int, dirty: int) -> None:
        s = self.size
        self.vfio("vfio_save_iterate", f"precopy initial size {s(init)} precopy dirty size {s(dirty)}",
                  init_bytes=init, dirty_bytes=dirty)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


MiB = 1 << 20
RAM = 64 * MiB


def _precopy(log: Log, *, dirty_per_pass: int, stop_size: int, init: int, dirty0: int,
             max_checks: int, downtime_ms: int) -> bool:
    """The live phase; returns True when it decided to complete (low_pending printed)."""
    v = log.version
    threshold = 0
    ram_left = RAM
    init_left, dirty_left = init, dirty0
    sent_window, window_ms = 0, 0
    for _ in range(max_checks):
        dev_est = init_left + dirty_left
        log.pending_est(ram_left + dev_est, init_left, dirty_left)
        est = ram_left + dev_est
        log.estimate(est)
        pending = est
        gate = (est < threshold) if v >= (9, 0) else (est <= threshold)  # §3.7: 8.x gates on must_precopy
        if gate:
            log.sync(dirty_per_pass // 4096)
            ram_left = dirty_per_pass
            extra = init_left + dirty_left if v < (9, 2) else 0  # 8.1-9.1 double counting
            log.pending_exact(ram_left + stop_size + extra, stop_size, init_left, dirty_left)
            pending = ram_left + stop_size + extra
            log.exact(pending)
        if pending == 0 or pending < threshold:
            log.emit("migration_thread_low_pending", str(pending), bytes=pending)
            return True
        log.empty("savevm_state_iterate")
        sent = min(ram_left, 8 * MiB)
        ram_left -= sent
        if init_left + dirty_left > 0:
            n = min(MiB, init_left + dirty_left)
            log.block(n)
            take = min(n, init_left)
            init_left -= take
            dirty_left -= n - take
            log.iterate(init_left, dirty_left)
            sent += n
        sent_window += sent
        window_ms += 25
        log.t_us += 25_000
        if window_ms >= 100:
            threshold = sent_window // window_ms * downtime_ms  # bandwidth (bytes/ms) * limit
            log.transferred(sent_window, window_ms, threshold)
            sent_window, window_ms = 0, 0
        if ram_left == 0:
            ram_left = dirty_per_pass // 2  # keeps being dirtied
    return False


def _setup(log: Log) -> None:
    log.set_state("setup")
    log.empty("savevm_state_setup")
    log.vfio_state("PRE_COPY", "RUNNING")
    log.vfio("vfio_save_setup", f"data buffer size {log.size(MiB)}", bytes=MiB)
    log.sync(RAM // 4096)
    log.empty("migration_thread_setup_complete", dt_us=1500)
    log.set_state("active")


def _stopcopy(log: Log, stop_size: int, *, multifd: bool) -> None:
    v = log.version
    log.checkpoint("src-downtime-start")
    log.vfio_state("STOP_COPY", "PRE_COPY")
    log.vfio("vfio_vmstate_change", "running 0 reason finish-migrate device state STOP_COPY",
             ret=0, detail="finish-migrate", state="STOP_COPY")
    log.emit("migration_completion_vm_stop", "ret 0", ret=0)
    log.checkpoint("src-vm-stopped")
    if v >= (10, 0):
        log.set_state("device")
    log.sync(300)
    log.downtime("save", "iterable", "ram", 2100)
    if multifd:
        # " (%s) idstr %s instance %"PRIu32  /  " (%s) ret %d" (1 = success)
        log.vfio("vfio_save_complete_precopy_thread_start", f"idstr {IDSTR} instance 0",
                 detail=IDSTR, count=0)
        log.vfio("vfio_save_complete_precopy_thread_end", "ret 1", ret=1, dt_us=3000)
    else:
        if v >= (9, 2):
            log.vfio("vfio_save_complete_precopy_start")
        left = stop_size
        while left > 0:
            n = min(MiB, left)
            log.block(n)
            left -= n
        log.vfio("vfio_save_complete_precopy", "ret 0", ret=0, dt_us=2000)
    log.downtime("save", "iterable", IDSTR, 5200)
    log.checkpoint("src-iterable-saved")
    log.vfio("vfio_save_device_config_state")
    log.downtime("save", "non-iterable", "cpu", 40)
    log.checkpoint("src-non-iterable-saved")
    log.checkpoint("src-downtime-end")
    log.set_state("completed", dt_us=300)
    log.vfio("vfio_save_cleanup")
    log.vfio_state("STOP", "STOP_COPY")


def v81_converging() -> Log:
    """8.1: hex VFIO sizes, exact double counts pre-copy sizes, no downtime checkpoints."""
    log = Log((8, 1), name="v8.1-converging.log")
    _setup(log)
    ok = _precopy(log, dirty_per_pass=256 * 1024, stop_size=2 * MiB, init=4 * MiB, dirty0=MiB,
                  max_checks=400, downtime_ms=300)
    assert ok
    _stopcopy(log, 2 * MiB, multifd=False)
    return log


def v92_cancel_retry() -> Log:
    """9.2: decimal sizes; a never-converging migration is cancelled, the retry converges."""
    log = Log((9, 2), name="v9.2-cancel-retry.log")
    _setup(log)
    ok = _precopy(log, dirty_per_pass=48 * MiB, stop_size=16 * MiB, init=4 * MiB, dirty0=MiB,
                  max_checks=60, downtime_ms=10)
    assert not ok
    log.empty("migrate_fd_cancel", tid=MAIN_TID)
    log.set_state("cancelling", tid=MAIN_TID)
    log.vfio_state("RUNNING", "PRE_COPY")
    log.set_state("cancelled")
    log.vfio("vfio_save_cleanup")
    log.t_us += 2_000_000
    _setup(log)
    ok = _precopy(log, dirty_per_pass=256 * 1024, stop_size=2 * MiB, init=4 * MiB, dirty0=MiB,
                  max_checks=400, downtime_ms=300)
    assert ok
    _stopcopy(log, 2 * MiB, multifd=False)
    return log


def v100_multifd() -> tuple[Log, Log]:
    """10.0: multifd stop-copy thread, `device` state, plus the destination's log."""
    log = Log((10, 0), name="v10.0-multifd.source.log")
    _setup(log)
    ok = _precopy(log, dirty_per_pass=256 * 1024, stop_size=8 * MiB, init=4 * MiB, dirty0=MiB,
                  max_checks=400, downtime_ms=300)
    assert ok
    stopped = log.t_us
    _stopcopy(log, 8 * MiB, multifd=True)
    dst = Log((10, 0), side="destination", name="v10.0-multifd.destination.log", t_us=T0_US + 200)
    dst.set_state("active", tid=MAIN_TID)
    dst.empty("loadvm_state_setup", tid=MAIN_TID)
    dst.vfio_state("RESUMING", "STOP")
    dst.t_us = stopped + 1000
    for flag in ("0xffffffffef100003", "0xffffffffef100004"):
        dst.vfio("vfio_load_state", f"data {flag}", flags=int(flag, 16) - (1 << 64))
    dst.vfio("vfio_load_state_device_data", f"size {4 * MiB} ret 0", bytes=4 * MiB, ret=0)
    dst.downtime("load", "iterable", "ram", 1800)
    dst.downtime("load", "iterable", IDSTR, 6100)
    dst.checkpoint("dst-precopy-loadvm-completed")
    dst.emit("process_incoming_migration_co_end", "ret=0 postcopy-state=0", ret=0, count=0)
    dst.checkpoint("dst-precopy-bh-enter")
    dst.vfio_state("RUNNING", "RESUMING")
    dst.checkpoint("dst-precopy-bh-vm-started")
    dst.set_state("completed")
    return log, dst


def all_logs() -> list[Log]:
    a = v81_converging()
    b = v92_cancel_retry()
    c, d = v100_multifd()
    return [a, b, c, d]


if __name__ == "__main__":
    for lg in all_logs():
        (HERE / lg.name).write_text(lg.text())
        print(HERE / lg.name, len(lg.lines), "lines")
