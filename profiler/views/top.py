"""`migprof top` without the TUI: a bcc-style table of every QEMU per interval, or JSON lines."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import IO

from profiler.model.vm_row import ROW_SCHEMA, TERMINAL, VmRow, row_json

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
