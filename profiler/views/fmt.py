"""Number and time formatting shared by the terminal views and the TUI: one style everywhere."""

from __future__ import annotations

import math

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def fmt_bytes(n: float | int | None) -> str:
    """Bytes in binary units with 3 significant digits, e.g. ``12.3 MiB``; ``-`` for None."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    v = float(n)
    sign = "-" if v < 0 else ""
    v = abs(v)
    i = 0
    while v >= 1024 and i < len(_UNITS) - 1:
        v /= 1024
        i += 1
    if i == 0:
        return f"{sign}{int(v)} B"
    digits = 2 if v < 10 else 1 if v < 100 else 0
    return f"{sign}{v:.{digits}f} {_UNITS[i]}"


def fmt_rate(bytes_per_s: float | None) -> str:
    """A byte rate, e.g. ``1.21 GiB/s``."""
    if bytes_per_s is None or (isinstance(bytes_per_s, float) and math.isnan(bytes_per_s)):
        return "-"
    return fmt_bytes(bytes_per_s) + "/s"


def fmt_ms(ms: float | None) -> str:
    """A duration given in ms: ``850 µs``, ``42.0 ms``, ``3.21 s``, ``2m05s``."""
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "-"
    if ms < 0:
        return "-" + fmt_ms(-ms)
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"
    s = ms / 1000
    if s < 120:
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    return f"{m}m{s:02d}s"


def fmt_pct(frac: float | None) -> str:
    if frac is None or (isinstance(frac, float) and math.isnan(frac)):
        return "-"
    return f"{frac * 100:.0f}%"


def fmt_axis_time(ms: float) -> str:
    """Short x-axis label: ``0``, ``250ms``, ``1.5s``, ``12s``."""
    if ms == 0:
        return "0"
    if abs(ms) < 1000:
        return f"{ms:.0f}ms"
    s = ms / 1000
    return f"{s:.1f}s" if abs(s) < 10 else f"{s:.0f}s"


def parse_time(text: str) -> float:
    """A time typed by the user, to ms: ``1.5`` (s), ``1.5s``, ``250ms``, ``1m30s``.

    Raises ValueError with a message fit to show in the UI.
    """
    t = text.strip().lower().replace(" ", "")
    if not t:
        raise ValueError("empty time")
    try:
        if t.endswith("ms"):
            return float(t[:-2])
        if "m" in t and not t.endswith("ms"):
            mins, _, rest = t.partition("m")
            secs = float(rest.rstrip("s")) if rest.rstrip("s") else 0.0
            return (float(mins) * 60 + secs) * 1000
        return float(t.rstrip("s")) * 1000
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use 1.5, 1.5s, 250ms or 1m30s)") from None


def fmt_bytes_axis(n: float) -> str:
    """Axis label: like ``fmt_bytes`` without trailing zeros (``4 MiB``, ``1.5 GiB``)."""
    s = fmt_bytes(n)
    num, _, unit = s.partition(" ")
    if "." in num:
        num = num.rstrip("0").rstrip(".")
    return f"{num} {unit}"


def short_name(name: str, width: int = 16) -> str:
    """A device name cut in the middle when long: mdev UUIDs differ at both ends
    (``797f810c…c676``); PCI addresses (12 characters) stay whole."""
    if len(name) <= width:
        return name
    head = width - 5
    return f"{name[:head]}…{name[-4:]}"
