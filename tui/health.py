"""The Health tab's lines: a source's ``health()`` and the feed's own numbers as text."""

from __future__ import annotations

from typing import Any

from tui.view import HealthItem


def feed_items(
    events: int, build_ms: float | None, updates_per_s: float, model_error: str | None
) -> list[HealthItem]:
    """The feed's own lines: events taken, model update time, UI update rate, model error."""
    items = [HealthItem("events", f"{events:,}")]
    if build_ms is not None:
        items.append(
            HealthItem("model update", f"{build_ms:.1f} ms", "warn" if build_ms > 100 else "ok")
        )
    items.append(HealthItem("UI updates", f"{updates_per_s:.0f}/s"))
    if model_error:
        items.append(HealthItem("model", model_error, "error"))
    return items


def health_items(h: dict[str, Any]) -> list[HealthItem]:
    """Flatten a source's ``health()`` into lines; failures and lost events stand out."""
    items: list[HealthItem] = []
    failed = h.get("failed") or {}
    subs = {k: v for k, v in h.items() if isinstance(v, dict) and k != "failed"}
    if subs:
        active = [k for k in subs if k not in failed]
        items.append(
            HealthItem(
                "sources active",
                f"{len(active)}/{len(subs)} " + " ".join(active),
                "ok" if not failed else "warn",
            )
        )
    for name, err in failed.items():
        items.append(HealthItem(f"{name} failed", str(err), "error"))
    lost = _sum_keys(h, ("lost", "drops", "dropped"))
    items.append(HealthItem("lost events", str(lost), "error" if lost else "ok"))
    for name, sub in subs.items():
        flat = ", ".join(
            f"{k}={v}" for k, v in sub.items() if k != "source" and not isinstance(v, dict)
        )
        if flat:
            items.append(HealthItem(name, flat))
    if not subs:
        flat = ", ".join(
            f"{k}={v}"
            for k, v in h.items()
            if k not in ("source", "failed") and not isinstance(v, dict)
        )
        if flat:
            items.append(HealthItem(str(h.get("source", "source")), flat))
    return items


def _sum_keys(h: Any, keys: tuple[str, ...]) -> int:
    if not isinstance(h, dict):
        return 0
    total = 0
    for k, v in h.items():
        if isinstance(v, dict):
            total += _sum_keys(v, keys)
        elif (
            any(key in str(k).lower() for key in keys)
            and isinstance(v, int | float)
            and not isinstance(v, bool)
        ):
            total += int(v)
    return total
