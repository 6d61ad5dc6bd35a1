"""What migprof does when the reader of its standard output goes away (``| head``)."""

from __future__ import annotations

import contextlib
import os
import sys


def reader_gone() -> None:
    """Send the rest of stdout to /dev/null: the writes still pending (a summary, the flush at
    exit) then succeed quietly instead of raising BrokenPipeError again, and Python has no
    "Exception ignored" to print at exit. Call it on the first BrokenPipeError."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
