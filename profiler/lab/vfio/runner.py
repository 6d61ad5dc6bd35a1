"""Inside L1: run each scenario's migration between two QEMU 10.0 with an mtty each; one run directory per scenario.

Run by l1-init.sh as ``python -m profiler.lab.vfio.runner --job /results/job.json``
from the read-only repository share. A run directory holds what ``migprof report``
reads: ``source.log``/``destination.log`` (QEMU's log trace back end),
``events.jsonl`` (QMP rows in the event schema), ``query-migrate-source.json``,
``query-migrate-destination.json`` and ``run.json`` (what was run, versions, outcome).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

from qemu.qmp import ExecInterruptedError, ExecuteError, StateError

from profiler import events as ev
from profiler.lab.vfio.driver import Qemu, RowLog
from profiler.lab.vfio.guest import write_dirty_guest
from profiler.lab.vfio.scenarios import MTTY_TYPE, Scenario, select

log = logging.getLogger("migprof.vfio.runner")

GUEST_RAM_MB = 64
DIRTY_START = 0x200000  # first page the guest dirties (guest.dirty_guest's default)
BASE_PORT = 4410
# loading the collector = clang compiling it under nested TCG: 30 s quiet, 200 s seen
# with other jobs on the host's two cores
BPF_LOAD_BUDGET_S = 360.0
FINAL_STATES = {"completed", "failed", "cancelled"}

# Trace events enabled on both QEMUs: migration core, per-device downtime, VFIO
# (including vfio_pci_*_config, whose parentheses hold more than the device name),
# multifd threads, max-bandwidth's sleeps (whatif's burst rate). migration_transferred_bytes
# is left out: it floods the log.
TRACE_EVENTS = """\
migrate_*
migration_bitmap_*
migration_thread_*
migration_rate_limit_*
migration_completion_*
migration_precopy_complete
migration_cleanup
migration_cancel
source_return_path_thread_switchover_acked
process_incoming_migration_co_end
vmstate_downtime_*
savevm_section_*
savevm_state_*
savevm_send_switchover_start
loadvm_*
qemu_loadvm_state_*
ram_load_complete
multifd_send_thread_*
multifd_recv_thread_*
multifd_send_sync_main
vfio_*
"""


def vfio_device_arg(uuid: str, dirty_tracking_off: bool) -> str:
    """The -device value giving QEMU one mtty instance, migratable."""
    opts = [f"vfio-pci,sysfsdev=/sys/bus/mdev/devices/{uuid}", "id=mtty0",
            "enable-migration=on", "migration-events=on"]
    if dirty_tracking_off:
        # mtty's DMA-logging ops are stubs and Debian's 6.12 has no IOMMUFD, so
        # only the type1 container's dirty tracking works
        opts.append("x-device-dirty-page-tracking=off")
    return ",".join(opts)


def qemu_args(guest: Path, uuid: str, sc: Scenario, trace_file: Path, log_file: Path) -> list[str]:
    return [
        "-machine", "pc", "-accel", "tcg", "-cpu", "qemu64", "-smp", "1",
        # RAM faulted in at start-up, as the host lab does: under nested TCG each first touch
        # is an emulated fault in L1, and the first pass over untouched RAM stalled 0.4-2.4 s
        "-m", str(GUEST_RAM_MB), "-mem-prealloc", "-nodefaults", "-no-user-config", "-display", "none",
        "-kernel", str(guest),
        "-device", vfio_device_arg(uuid, sc.dirty_tracking_off),
        "-msg", "timestamp=on", "-trace", f"events={trace_file}", "-D", str(log_file),
    ]


class BpfRecorder:
    """The BPF collector (profiler.sources.bpf) on both QEMUs, as a session in a thread, for one run.

    Its rows go to ``bpf.jsonl``; a failure to load or attach is kept as ``error`` so
    run.json says why (the ground-truth tests then fail on it, never skip).
    """

    def __init__(self, pids: dict[str, int], path: str):
        from profiler.session import FrameSink

        self.pids = pids
        self.path = path
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.frames = FrameSink()
        self.health: dict[str, Any] = {}
        self.error: str | None = None
        self.load_s: float | None = None
        self._thread = threading.Thread(target=self._run, name="bpf", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()

        def attached(_health: Any) -> None:
            self.load_s = round(time.monotonic() - t0, 2)
            self.ready.set()

        try:
            from profiler.session import CallbackSink, Session
            from profiler.sources.bpf import BpfSource

            sides = {pid: side for side, pid in self.pids.items()}
            session = Session([BpfSource(list(self.pids.values()), sides, path=self.path)],
                              [CallbackSink(on_start=attached), self.frames], stop=self.stop)
            ended = session.run()
            self.health = ended.health.get("bpf") or {}
            failed = ended.health.get("failed") or {}
            if failed:
                self.error = "; ".join(f"{k}: {v}" for k, v in failed.items())
        except BaseException as e:  # kept for run.json: the tests assert on it
            self.error = f"{type(e).__name__}: {e}"
            self.load_s = round(time.monotonic() - t0, 2)
        finally:
            self.ready.set()

    def finish(self, path: Path, timeout: float = 30.0) -> dict[str, Any]:
        from profiler.sources.jsonl import write_frame

        self.stop.set()
        self._thread.join(timeout)
        n = 0
        if self.frames.frames:
            with path.open("w") as f:
                n = write_frame(self.frames.frame(), f)
        health = {k: v for k, v in self.health.items() if k not in ("host",)}
        return {"path": self.health.get("path", self.path), "error": self.error, "rows": n,
                "load_s": self.load_s, "health": health}


async def _wait_guest_dirtying(src: Qemu, rows: RowLog, timeout: float = 120.0) -> float:
    """Wait until the guest's loop runs (its first page changes): SeaBIOS alone takes
    seconds under nested TCG, and a migration started before would see no dirtying."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        out = await src.execute("human-monitor-command",
                                {"command-line": f"xp /1wx {DIRTY_START:#x}"})
        if int(out.split(":")[1].split()[0], 16) > 0:
            waited = round(time.monotonic() - t0, 2)
            rows.add("source", ev.LAB_MARK, origin=ev.Origin.LAB, state="guest-running",
                     dur_ns=int(waited * 1e9))
            return waited
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the L2 guest did not start dirtying memory within {timeout:.0f}s")


async def _query_alive(q: Qemu) -> dict[str, Any] | None:
    """query-migrate, or None once that QEMU has gone (a destination exits when loading fails)."""
    if q.proc is None or q.proc.returncode is not None:
        return None
    try:
        return await q.query_migrate()
    except (ExecInterruptedError, StateError, ConnectionError, OSError):
        # StateError: the client saw the hang-up first and is disconnecting
        return None


async def _wait_dest_running(dst: Qemu, timeout: float) -> None:
    """Wait until the destination VM runs and its device reported RUNNING."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await dst.execute("query-status")
        dev_running = any(e.get("event") == "VFIO_MIGRATION"
                          and (e.get("data") or {}).get("device-state") == "running"
                          for e in dst.events_seen)
        if st.get("status") == "running" and dev_running:
            return
        await asyncio.sleep(0.1)


async def run_scenario(sc: Scenario, rd: Path, qemu: str, uuids: tuple[str, str],
                       port: int, bpf: bool = True) -> dict[str, Any]:
    """Run one migration; write its run directory; return the run.json content."""
    rows = RowLog()
    guest = write_dirty_guest(rd / "guest.bin", sc.dirty_bytes)
    tev = rd / "trace-events.txt"
    tev.write_text(TRACE_EVENTS)
    dst = Qemu("destination", qemu,
               [*qemu_args(guest, uuids[1], sc, tev, rd / "destination.log"),
                "-incoming", "defer"], rd, rows)
    src = Qemu("source", qemu, qemu_args(guest, uuids[0], sc, tev, rd / "source.log"), rd, rows)
    info: dict[str, Any] = {"scenario": sc.to_json(), "started_ns": time.time_ns()}
    uri = f"tcp:127.0.0.1:{port}"
    refused = None
    raised_at = None
    rec: BpfRecorder | None = None
    try:
        await dst.start()
        await src.start()
        info["qemu_version"] = (await src.execute("query-version"))["qemu"]
        info["pids"] = {"source": src.pid, "destination": dst.pid}
        if bpf and sc.bpf_path:
            rec = BpfRecorder({"source": src.pid, "destination": dst.pid}, sc.bpf_path)
            rec.start()
            await asyncio.get_running_loop().run_in_executor(None, rec.ready.wait,
                                                             BPF_LOAD_BUDGET_S)
            if rec.error:
                log.warning("bpf collector failed: %s", rec.error)
        caps = {"events": True, **sc.caps}
        for q, params in ((src, sc.params), (dst, sc.dest_params)):
            await q.set_caps(caps)
            await q.set_params(params)
        await dst.execute("migrate-incoming", {"uri": uri})
        info["guest_boot_s"] = await _wait_guest_dirtying(src, rows)
        # let it sweep its range a few times before the migration starts
        await asyncio.sleep(0.5)
        rows.add("source", ev.LAB_MARK, origin=ev.Origin.LAB, state="migrate",
                 detail=json.dumps({"uri": uri}))
        t_migrate = time.monotonic()
        cancelled = False
        try:
            await src.execute("migrate", {"uri": uri})
        except ExecuteError as e:
            refused = str(e)
        while refused is None:
            qs = await src.query_migrate()
            await _query_alive(dst)
            if (sc.cancel_after_s is not None and not cancelled and qs.get("status") not in FINAL_STATES
                    and time.monotonic() - t_migrate >= sc.cancel_after_s):
                # as the host lab's --timeout: the mark names it, so the report says why
                rows.add("source", ev.LAB_MARK, origin=ev.Origin.LAB, state="cancel",
                         detail=json.dumps({"action": "cancel", "reason": f"timeout {sc.cancel_after_s} s"}))
                await src.execute("migrate_cancel")
                cancelled = True
            syncs = (qs.get("ram") or {}).get("dirty-sync-count", 0)
            if (sc.raise_downtime_at_sync and raised_at is None
                    and syncs >= sc.raise_downtime_at_sync and qs.get("status") == "active"):
                rows.add("source", ev.LAB_MARK, origin=ev.Origin.LAB, state="raise-downtime-limit",
                         detail=json.dumps({"downtime-limit": sc.raised_downtime_ms,
                                            "dirty-sync-count": syncs}))
                await src.set_params({"downtime-limit": sc.raised_downtime_ms})
                raised_at = syncs
            if qs.get("status") in FINAL_STATES:
                break
            await asyncio.sleep(0.1)
        final_src = await src.query_migrate()
        if final_src.get("status") == "completed":
            await _wait_dest_running(dst, 15.0)
        else:
            await asyncio.sleep(0.5)  # let the failure's events arrive
        final_dst = await _query_alive(dst)
        if final_dst is None:
            final_dst = {"migprof": f"destination QEMU exited with {dst.proc.returncode}"}
            rows.add("destination", ev.LAB_MARK, origin=ev.Origin.LAB, state="exited",
                     ret=dst.proc.returncode)
        (rd / "query-migrate-source.json").write_text(json.dumps(final_src, indent=1, sort_keys=True) + "\n")
        (rd / "query-migrate-destination.json").write_text(
            json.dumps(final_dst, indent=1, sort_keys=True) + "\n")
        info["outcome"] = "refused" if refused else final_src.get("status")
        info["error"] = refused or final_src.get("error-desc")
        if dst.proc.returncode is None:
            info["dest_status"] = (await dst.execute("query-status")).get("status")
        else:
            info["dest_status"] = f"exited {dst.proc.returncode}"
    finally:
        for q in (src, dst):
            await q.stop()
        rows.write_jsonl(rd / "events.jsonl")
        if rec is not None:
            info["bpf"] = await asyncio.get_running_loop().run_in_executor(
                None, rec.finish, rd / "bpf.jsonl")
    info.update({
        "finished_ns": time.time_ns(),
        "downtime_raised_at_sync": raised_at,
        "uri": uri,
        "guest_ram_mb": GUEST_RAM_MB,
        "mtty": {"type": MTTY_TYPE, "source_uuid": uuids[0], "destination_uuid": uuids[1],
                 "qdev_id": "mtty0"},
        "source_stderr": src.stderr_text()[-2000:],
        "destination_stderr": dst.stderr_text()[-2000:],
    })
    return info


def _report_in_l1(rd: Path) -> dict[str, Any]:
    """Run ``migprof report --json`` on the run directory here in L1 (the pipeline inside)."""
    import io

    from profiler.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli_main(["report", "--json", str(rd)])
    except Exception as e:  # recorded, not fatal: the run directory is the product
        return {"rc": None, "error": f"{type(e).__name__}: {e}"}
    if out.getvalue():
        (rd / "report-l1.json").write_text(out.getvalue())
    return {"rc": rc, "stderr": err.getvalue()[-1000:], "wall_s": round(time.monotonic() - t0, 2)}


def _host_facts() -> dict[str, Any]:
    return {"kernel": platform.release(), "machine": "L1 (nested, TCG)",
            "python": sys.version.split()[0], "cpus": os.cpu_count()}


MDEV_DEVICES = Path("/sys/bus/mdev/devices")
MTTY_TYPES = Path("/sys/devices/virtual/mtty/mtty/mdev_supported_types")


def renew_mdevs(uuids: tuple[str, str]) -> None:
    """Remove and re-create both mtty instances (same UUIDs). A migration that did not
    complete leaves the destination's mtty unusable: after a cancelled one, the next load
    into it failed ("error while loading state section ... vfio", Bad file descriptor)."""
    for u in uuids:
        (MDEV_DEVICES / u / "remove").write_text("1\n")
    for u in uuids:
        (MTTY_TYPES / MTTY_TYPE / "create").write_text(u + "\n")
        if not (MDEV_DEVICES / u).exists():
            raise RuntimeError(f"mtty instance {u} did not come back after re-creating it")


def job_scenarios(job: dict[str, Any]) -> list[Scenario]:
    """The job's scenarios at the user's settings (job.json ``overrides``, l1.run_job)."""
    ov = job.get("overrides") or {}
    return [sc.with_overrides(ov.get("params"), ov.get("cancel_after_s"), ov.get("dirty_bytes"))
            for sc in select(job.get("scenarios"))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job", required=True, type=Path)
    p.add_argument("--source-uuid", required=True)
    p.add_argument("--destination-uuid", required=True)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="runner: %(message)s")
    job = json.loads(a.job.read_text())
    out = Path(job["out"])
    qemu = job.get("qemu", "/usr/bin/qemu-system-x86_64")
    bpf = bool(job.get("bpf", True))
    summary: list[dict[str, Any]] = []
    rc = 0
    for i, sc in enumerate(job_scenarios(job)):
        rd = out / sc.name
        rd.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        log.info("scenario %s", sc.name)
        budget = sc.timeout_s + (BPF_LOAD_BUDGET_S if bpf and sc.bpf_path else 0.0)
        try:
            info = asyncio.run(asyncio.wait_for(
                run_scenario(sc, rd, qemu, (a.source_uuid, a.destination_uuid), BASE_PORT + i,
                             bpf=bpf),
                budget))
        except Exception as e:  # one scenario failing must not lose the others
            log.exception("scenario %s failed", sc.name)
            info = {"scenario": sc.to_json(), "outcome": "error", "error": f"{type(e).__name__}: {e}"}
            rc = 1
        info["wall_s"] = round(time.monotonic() - t0, 3)
        if info.get("outcome") != "completed":
            try:
                renew_mdevs((a.source_uuid, a.destination_uuid))
                info["mdevs_renewed"] = True
            except (OSError, RuntimeError) as e:
                log.exception("re-creating the mtty instances failed")
                info["mdevs_renewed"] = f"{type(e).__name__}: {e}"
                rc = 1
        info["l1"] = _host_facts()
        if job.get("l1_report"):
            info["l1_report"] = _report_in_l1(rd)
        info["schema"] = "migprof.vfio-run/1"
        (rd / "run.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        summary.append({"scenario": sc.name, "outcome": info.get("outcome"),
                        "expected": sc.expect_outcome, "wall_s": info["wall_s"],
                        "error": info.get("error")})
        log.info("scenario %s: %s in %.1fs", sc.name, info.get("outcome"), info["wall_s"])
    with contextlib.suppress(OSError):
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
