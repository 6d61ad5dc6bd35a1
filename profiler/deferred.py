"""pandas, imported where first used, or on a second thread while a file is parsed.

The log parser (``pipeline``, ``events``, ``sources.qemu_log``) reads with numpy and pyarrow,
which release the GIL in their loops, and needs pandas only to assemble the final frame.
Importing pandas takes about 0.2 s of pure Python: ``import_behind`` starts it on a thread so
it overlaps the parse instead of preceding it. Modules on that path name pandas through
``pd`` here; an attribute of it imports pandas (or waits for the thread's import) first.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType


class Deferred:
    """A module's attributes, the module imported at the first one."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        # import_module is a dict lookup once imported; during another thread's import it
        # waits on that module's import lock, so no attribute of a half-made module leaks
        return getattr(importlib.import_module(self._name), attr)

    def module(self) -> ModuleType:
        return importlib.import_module(self._name)


pd = Deferred("pandas")


def import_behind(*names: str) -> threading.Thread:
    """Import ``names`` in order on a daemon thread. Only modules whose imports cannot meet
    what the caller imports meanwhile (two threads importing modules that import each other
    could each hold a lock the other waits for): third-party ones, and migprof's model, which
    imports nothing but the events level and itself (tests/test_layout.py) while a parse
    imports sources."""
    def run() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001  the first real use raises it where it belongs
                return

    t = threading.Thread(target=run, name="import-behind", daemon=True)
    t.start()
    return t
