"""`migprof top`'s rows: every QEMU's model fed from the session (``TopBoard``), and without the
TUI a bcc-style table per interval or JSON lines."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import pandas as pd

from profiler.model.per_vm import VmModels
from profiler.model.vm_row import ROW_SCHEMA, TERMINAL, VmRow, row_json, vm_row

MIB = 1 << 20
HEADER = (f"{'PID':>7} {'VM':<14} {'SIDE':<4} {'STATUS':<9} {'PHASE':<9} {'PASS':>4} "
          f"{'PEND(MiB)':>9} {'THR(MiB)':>8} {'BW(MiB/s)':>9} {'EXPDT(ms)':>9} VERDICT")
_SIDE = {"source": "src", "destination": "dst"}
_PHASE = {"stop-and-copy": "stop-copy"}


def order(rows: Sequence[VmRow]) -> list[VmRow]:
    """Migrating QEMUs first, then the rest; by name, then pid."""
    return sorted(rows, key=lambda r: (not migrating(r), r.label, r.pid))


def migrating(row: VmRow) -> bool:
    return row.status not in ("none", "gone", *TERMINAL)


def _num(v: float | None, width: int, scale: float = 1.0, digits: int = 1) -> str:
    return f"{'-':>{width}}" if v is None else f"{v / scale:>{width}.{digits}f}"


def line(row: VmRow) -> str:
    """One QEMU under ``HEADER``."""
    return (f"{row.pid:>7} {row.label[:14]:<14} {_SIDE.get(row.side, '?'):<4} {row.status[:9]:<9} "
            f"{_PHASE.get(row.phase, row.phase)[:9]:<9} "
            f"{'-' if row.pass_no is None else row.pass_no:>4} "
            f"{_num(row.pending_bytes, 9, MIB)} {_num(row.threshold_bytes, 8, MIB)} "
            f"{_num(row.bandwidth_bytes_per_s, 9, MIB)} {_num(row.expected_downtime_ms, 9, digits=0)} "
            f"{row.verdict}")


def table(rows: Sequence[VmRow], now_s: float | None = None, final: bool = False) -> list[str]:
    """An interval's block: a time line, the header, one line per QEMU."""
    now_s = time.time() if now_s is None else now_s
    stamp = time.strftime("%H:%M:%S", time.localtime(now_s))
    busy = sum(1 for r in rows if migrating(r))
    head = f"{stamp} {'final: ' if final else ''}{len(rows)} QEMU{'s' if len(rows) != 1 else ''}, " \
           f"{busy} migrating"
    return [head, HEADER, *(line(r) for r in order(rows))]


def json_line(rows: Sequence[VmRow], now_s: float | None = None, final: bool = False) -> str:
    """An interval as one JSON object (``schema`` migprof.top/1) on one line."""
    now_s = time.time() if now_s is None else now_s
    return json.dumps({"schema": ROW_SCHEMA, "time_ns": int(now_s * 1e9), "final": final,
                       "vms": [row_json(r) for r in order(rows)]}, sort_keys=True)


class TopPrinter:
    """Prints each interval's rows to ``out`` as a table or as JSON lines."""

    def __init__(self, out: IO[str], as_json: bool = False):
        self.out = out
        self.as_json = as_json
        self.printed = 0

    def show(self, rows: Sequence[VmRow], now_s: float | None = None, final: bool = False) -> None:
        if self.as_json:
            print(json_line(rows, now_s, final), file=self.out, flush=True)
        else:
            if self.printed:
                print("", file=self.out)
            print("\n".join(table(rows, now_s, final)), file=self.out, flush=True)
        self.printed += 1


@dataclass(frozen=True, slots=True)
class Follows:
    """What a session tells the board of one QEMU it follows (no event needed)."""

    pid: int
    label: str
    side: str
    alive: bool = True
    domain: str | None = None
    name: str | None = None
    sources: tuple[str, ...] = ()


class TopBoard:
    """A session sink: every QEMU's events into its own model (``VmModels``), and every
    ``interval`` seconds the rows: published (``rows()``, read from any thread: the TUI) and,
    with a ``printer``, printed. ``follows()`` says which QEMUs the session follows now.
    ``count``: stop after that many intervals (``done()``). At the end the rows are built
    from every event and printed once more as ``final``."""

    def __init__(self, follows: Callable[[], Sequence[Follows]], *, interval: float = 1.0,
                 printer: TopPrinter | None = None, count: int | None = None,
                 models: VmModels | None = None, host: Callable[[], str] | None = None):
        self.follows = follows
        self.interval = interval
        self.printer = printer
        self.count = count
        self.models = models or VmModels(min_gap_s=min(interval, 1.0))
        self.host = host or (lambda: "")
        self.shown = 0
        self._rows: tuple[VmRow, ...] = ()
        self._next: float | None = None
        self.health: Mapping[str, Any] = {}
        self._subs: dict[int, list[Callable[[pd.DataFrame], None]]] = {}
        self._asks: list[tuple[int, Callable[[pd.DataFrame], None], bool]] = []
        self._lock = threading.Lock()

    def subscribe(self, pid: int, put: Callable[[pd.DataFrame], None]) -> None:
        """From any thread: hand ``put`` the events of ``pid`` so far, then each new batch."""
        with self._lock:
            self._asks.append((pid, put, True))

    def unsubscribe(self, pid: int, put: Callable[[pd.DataFrame], None]) -> None:
        with self._lock:
            self._asks.append((pid, put, False))

    def _serve(self) -> None:
        with self._lock:
            asks, self._asks = self._asks, []
        for pid, put, on in asks:
            subs = self._subs.setdefault(pid, [])
            if on:
                backlog = self.models.events(pid)
                if len(backlog):
                    put(backlog)
                subs.append(put)
            elif put in subs:
                subs.remove(put)

    def rows(self) -> tuple[tuple[VmRow, ...], str]:
        """The latest rows and the host line (a snapshot: safe from any thread)."""
        return self._rows, self.host()

    def done(self) -> bool:
        return self.count is not None and self.shown >= self.count

    def start(self, health: Mapping[str, Any]) -> None:
        self.health = health
        self._publish(time.monotonic())

    def feed(self, batch: pd.DataFrame) -> None:
        self._serve()
        touched = self.models.add(batch)
        for pid in touched & self._subs.keys():
            for put in self._subs[pid]:
                put(batch[(batch["pid"] == pid).to_numpy(dtype=bool, na_value=False)])

    def tick(self, now: float) -> None:
        self._serve()
        if self._next is None:
            self._next = now + self.interval
        if now < self._next:
            return
        self._next += self.interval
        if self._next < now:  # fell behind (a loaded host): no burst of catching up
            self._next = now + self.interval
        self.models.refresh(now)
        self._publish(now)
        if self.printer is not None:
            self.printer.show(self._rows)
        self.shown += 1

    def close(self, health: Mapping[str, Any]) -> None:
        self.health = health
        self.models.flush()
        self._publish(time.monotonic())
        if self.printer is not None:
            self.printer.show(self._rows, final=True)

    def _publish(self, now: float) -> None:
        rows = []
        follows = self.follows()
        # QEMUs no longer listed (gone long enough): their events and models go too
        keep = {f.pid for f in follows} | {p for p, subs in self._subs.items() if subs}
        for pid in set(self.models.pids()) - keep:
            self.models.forget(pid)
        for f in follows:
            self.models.track(f.pid)
            rows.append(vm_row(self.models.report(f.pid), pid=f.pid, label=f.label, side=f.side,
                               events=self.models.count(f.pid), alive=f.alive, domain=f.domain,
                               name=f.name, sources=f.sources))
        self._rows = tuple(rows)


class VmStream:
    """One QEMU's events out of a running board, as a ``Source`` (the full TUI of that QEMU):
    what the board holds of it first, then each new batch. The board hands both over on the
    session's thread, so the model is never read from another."""

    name = "vm"

    def __init__(self, board: TopBoard, pid: int):
        self.board = board
        self.pid = pid
        self._q: queue.SimpleQueue[pd.DataFrame] = queue.SimpleQueue()

    def __enter__(self) -> VmStream:
        self.board.subscribe(self.pid, self._q.put)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.board.unsubscribe(self.pid, self._q.put)

    def batches(self, stop: Any) -> Any:
        while not stop.is_set():
            try:
                yield self._q.get(timeout=0.1)
            except queue.Empty:
                yield pd.DataFrame()

    def health(self) -> dict[str, Any]:
        return {"source": self.name, "pid": self.pid}
