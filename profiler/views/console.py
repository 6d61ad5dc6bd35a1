"""The rich Console the commands print with: the terminal's width, or unwrapped on a pipe."""

from __future__ import annotations

from typing import IO, Any

from rich.console import Console

from profiler.pipes import reader_gone

# drawings that span the width (rules, the convergence curve) on a pipe or in a file, where
# there is no terminal to follow: readable pasted into a bug tracker
PIPED_WIDTH = 100
# the width of a console on a pipe or in a file: no line of a table or a header is folded
UNWRAPPED = 10_000


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader left (``| head``): the command line exits 0 on BrokenPipeError, where
        rich's own handler would exit 1 (rich >= 13.8 calls this; older ones raise)."""
        self.quiet = True
        reader_gone()
        raise BrokenPipeError


def output_console(file: IO[str] | None = None, **kw: Any) -> Console:
    """A Console on ``file`` (stdout): on a terminal, its width; elsewhere wide enough that
    nothing wraps, as a pipe has no width to fit."""
    kw.setdefault("highlight", False)
    con = _Console(file=file, **kw)
    if not con.is_terminal and "width" not in kw:
        con = _Console(file=file, width=UNWRAPPED, **kw)
    return con


def drawing_width(console: Console) -> int:
    """How wide a drawing spanning the page is: the terminal's width, else PIPED_WIDTH."""
    return console.width if console.is_terminal else min(console.width, PIPED_WIDTH)
