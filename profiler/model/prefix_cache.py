"""Reuse the Check/Pass objects of an earlier build for the unchanged prefix of a migration.

The live TUI rebuilds the open migration ten times a second on a growing frame; its first
thousands of checks do not change between builds, but making ~30k frozen dataclasses costs
~4 µs each. A ``PrefixCache`` passed to ``build_report`` remembers, per migration, the columns
the objects were made of and the objects; the next build compares the columns (vectorised,
NaN-aware, exact) and makes objects only from the first difference on. The key is the
migration's identity (side, stream, start time), so nothing depends on row numbers or on the
frame object; a mismatch simply rebuilds. The cache is the caller's (an ``IncrementalModel``
owns one): a build without one makes every object.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

MAX_ENTRIES = 16  # column sets remembered (three per migration: per-device dicts, checks, passes)


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


class PrefixCache:
    """The objects of the last builds, per key, reused up to the first changed row.

    Not thread-safe: one owner builds with it (the feed worker's model).
    """

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._store: OrderedDict[Hashable, tuple[list[np.ndarray], list[Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._store)

    def objects(
        self, key: Hashable, cols: list[np.ndarray], make: Callable[[int, int], list[Any]]
    ) -> list[Any]:
        """The objects for ``cols`` (one per row): those of the last build with ``key`` up to
        the first changed row, then ``make(lo, hi)`` for rows lo..hi-1."""
        n = len(cols[0]) if cols else 0
        hit = self._store.get(key)
        k = min(common_prefix(hit[0], cols), len(hit[1])) if hit is not None else 0
        new = make(k, n) if k < n else []
        out = (hit[1][:k] if k else []) + new
        self._store[key] = (cols, out)
        self._store.move_to_end(key)
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)
        return out

    def clear(self) -> None:
        """Forget every remembered migration."""
        self._store.clear()
