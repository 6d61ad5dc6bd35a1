"""Where migprof keeps what it builds once and reuses: the cache directory."""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_CACHE = Path("/var/cache/migprof")


def cache_dir() -> Path:
    """``$MIGPROF_CACHE`` if set; else /var/cache/migprof for root, and for other users
    ``$XDG_CACHE_HOME/migprof`` (``~/.cache/migprof`` when XDG_CACHE_HOME is unset)."""
    env = os.environ.get("MIGPROF_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return SYSTEM_CACHE
    xdg = os.environ.get("XDG_CACHE_HOME")
    # the XDG spec: a relative XDG_CACHE_HOME is invalid and to be ignored
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "migprof"
