"""A transient progress bar on stderr while `migprof report` reads big inputs."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

PROGRESS_BYTES = 8 << 20  # inputs smaller than this are read before a bar would show


def input_bytes(paths: list[str]) -> int:
    """Bytes of the input files (those directly inside a directory for a directory)."""
    total = 0
    for p in paths:
        try:
            if os.path.isdir(p):
                total += sum(e.stat().st_size for e in os.scandir(p) if e.is_file())
            else:
                total += os.path.getsize(p)
        except OSError:
            pass
    return total


@contextlib.contextmanager
def read_progress(paths: list[str]) -> Iterator[Callable[[str, int], None] | None]:
    """A transient progress bar on stderr while big inputs are read, when stderr is a
    terminal (never into a pipe or file); yields the loader's progress callback or None."""
    total = input_bytes(paths) if sys.stderr.isatty() else 0
    if total < PROGRESS_BYTES:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    done: dict[str, int] = {}
    with Progress(TextColumn("reading"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task("read", total=total)

        def update(path: str, n: int) -> None:
            done[path] = n
            bar.update(task, completed=min(sum(done.values()), total))

        yield update
