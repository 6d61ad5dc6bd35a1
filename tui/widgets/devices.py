"""The devices table: state, pre-copy bytes, pending, rate, stop-copy, share of downtime."""

from __future__ import annotations

from rich.cells import cell_len
from textual.widgets import DataTable

from profiler.model.results import Device, Migration
from tui.fmt import fmt_bytes, fmt_ms, fmt_pct, fmt_rate, short_name
from tui.view import View, elapsed_ms
from tui.widgets.base import Shown

COLUMNS = (
    "DEVICE",
    "KIND",
    "STATE",
    "PRE-COPY",
    "INIT PEND",
    "DIRTY PEND",
    "RATE",
    "STOP-COPY",
    "DOWNTIME",
    "READ LAT",
)


def device_rate(dev: Device, mig: Migration, view: View) -> float | None:
    """Pre-copy throughput of the device in bytes/s over the pre-copy window so far."""
    if not dev.precopy_bytes:
        return None
    end = mig.switchover_ms if mig.switchover_ms is not None else elapsed_ms(view, mig)
    if end is None:
        return None
    window = end - (mig.setup_ms or 0.0)
    return dev.precopy_bytes / (window / 1000) if window > 0 else None


def device_row(dev: Device, mig: Migration, view: View) -> tuple[str, ...]:
    # the newest state by time, in one spelling (QMP "stop-copy", traces "STOP_COPY")
    timed = [st for st in dev.states if st.t_ms is not None]
    last = max(timed, key=lambda st: st.t_ms) if timed else (dev.states[-1] if dev.states else None)
    state = last.state.upper().replace("-", "_") if last is not None else "-"
    if dev.stopcopy_bytes is not None:
        stop = fmt_bytes(dev.stopcopy_bytes)
    elif dev.stopcopy_size_bytes is not None:
        stop = "~" + fmt_bytes(dev.stopcopy_size_bytes)  # the device's own estimate, not sent yet
    else:
        stop = "-"
    if dev.downtime_ms is not None:
        share = dev.downtime_ms / mig.downtime_ms if mig.downtime_ms else None
        down = fmt_ms(dev.downtime_ms) + (f" {fmt_pct(share)}" if share is not None else "")
    else:
        down = "-"
    lat = (
        fmt_ms(dev.read_ms / dev.read_calls) if dev.read_ms is not None and dev.read_calls else "-"
    )
    return (
        short_name(dev.name, 20),
        dev.kind + (" (kernel)" if mig.view == "kernel" else ""),
        state,
        fmt_bytes(dev.precopy_bytes),
        fmt_bytes(dev.initial_pending_bytes),
        fmt_bytes(dev.dirty_pending_bytes),
        fmt_rate(device_rate(dev, mig, view)),
        stop,
        down,
        lat,
    )


def device_rows(shown: Shown) -> list[tuple[str, ...]]:
    """RAM and VFIO devices one per row; the non-iterable vmstate entries summed in one."""
    mig = shown.mig
    if mig is None:
        return []
    main = [d for d in mig.devices if d.kind != "other"]
    other = [d for d in mig.devices if d.kind == "other"]
    rows = [device_row(d, mig, shown.view) for d in main]
    if other:
        down = [d.downtime_ms for d in other if d.downtime_ms is not None]
        total = sum(down) if down else None
        share = total / mig.downtime_ms if total is not None and mig.downtime_ms else None
        rows.append(
            (
                f"+{len(other)} other",
                "vmstate",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                fmt_ms(total) + (f" {fmt_pct(share)}" if share is not None else "")
                if total is not None
                else "-",
                "-",
            )
        )
    return rows


class DevicesTable(DataTable):
    """One row per device (RAM and each VFIO device); redrawn only when a value changes."""

    DEFAULT_CSS = """
    DevicesTable { height: 1fr; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(zebra_stripes=True, cursor_type="row", **kw)
        self._rows: list[tuple[str, ...]] = []

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)  # headers until the first view arrives

    def show(self, shown: Shown) -> None:
        rows = device_rows(shown)
        if rows == self._rows:
            return
        # Rebuild columns too: DataTable widths only ever grow, so updating cells in place
        # would size the table by its history instead of by what it shows now.
        cursor, sx, sy = self.cursor_row, self.scroll_x, self.scroll_y
        self._rows = rows
        self.clear(columns=True)
        # explicit widths: DataTable's own measuring waits for idle, which a busy feed delays
        for i, label in enumerate(COLUMNS):
            self.add_column(label, width=max([cell_len(label)] + [cell_len(str(r[i])) for r in rows]))
        self.add_rows(rows)
        if rows:
            self.move_cursor(row=min(cursor, len(rows) - 1), animate=False, scroll=False)
        self.scroll_to(sx, sy, animate=False)
