"""Reuse the Check/Pass objects of an earlier build for the unchanged prefix of a migration.

The live TUI rebuilds the open migration ten times a second on a growing frame; its first
thousands of checks do not change between builds, but making ~30k frozen dataclasses costs
~4 µs each. Each build compares the migration's per-check columns with the last build's
(vectorised, NaN-aware, exact) and makes objects only from the first difference on. The key
is the migration's identity (side, stream, start time), so nothing depends on row numbers
or on the frame object; a mismatch simply rebuilds.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

MAX_ENTRIES = 16  # migrations remembered (the TUI keeps only the open ones in its frame)

_lock = threading.Lock()
_store: OrderedDict[Hashable, tuple[list[np.ndarray], list[Any]]] = OrderedDict()


def common_prefix(old: Sequence[np.ndarray], new: Sequence[np.ndarray]) -> int:
    """Number of leading rows on which every column pair is equal (NaN equals NaN)."""
    if len(old) != len(new) or not old:
        return 0
    n = min(len(old[0]), len(new[0]))
    if n == 0:
        return 0
    same = np.ones(n, dtype=bool)
    for a, b in zip(old, new, strict=True):
        a, b = a[:n], b[:n]
        if a.shape[1:] != b.shape[1:]:
            return 0
        eq = a == b
        if a.dtype.kind == "f":
            eq |= np.isnan(a) & np.isnan(b)
        if eq.ndim > 1:
            eq = eq.all(axis=tuple(range(1, eq.ndim)))
        same &= eq
    bad = np.flatnonzero(~same)
    return int(bad[0]) if len(bad) else n


def objects(key: Hashable, cols: list[np.ndarray], make: Callable[[int, int], list[Any]]) -> list[Any]:
    """The objects for ``cols`` (one per row): those of the last build with ``key`` up to the
    first changed row, then ``make(lo, hi)`` for rows lo..hi-1."""
    n = len(cols[0]) if cols else 0
    with _lock:
        hit = _store.get(key)
    k = 0
    if hit is not None:
        k = min(common_prefix(hit[0], cols), len(hit[1]))
    if k < n:
        # tens of thousands of new dicts/dataclasses would set off the cyclic GC many times,
        # each pass scanning everything alive (it found nothing to free: no cycles here)
        was = gc.isenabled()
        gc.disable()
        try:
            new = make(k, n)
        finally:
            if was:
                gc.enable()
    else:
        new = []
    out = (hit[1][:k] if k else []) + new
    with _lock:
        _store[key] = (cols, out)
        _store.move_to_end(key)
        while len(_store) > MAX_ENTRIES:
            _store.popitem(last=False)
    return out


def clear() -> None:
    """Forget every remembered migration (tests, memory)."""
    with _lock:
        _store.clear()
