"""Follow a growing file: complete lines with true line numbers, through rotation and truncation.

The one tail every live reader of a text file uses (QEMU's trace log, live's ``-D`` file,
the lab's logs). ``read()`` hands out only whole lines; the half line a writer is still
writing waits for its end. Line numbers count from the first line of the file even when
following starts at its end. A file replaced under the same name (rotation: another
inode) is read to its end first, then the new one from its start; a file cut shorter
than what was read (truncation, e.g. ``copytruncate``) is read again from its start. Both
restart the line numbers at 1, as the file now holds them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

READ_BYTES = 16 << 20  # at most this much per read(): bounded memory on a huge backlog


@dataclass(frozen=True, slots=True)
class Lines:
    """Whole lines read at once: ``data`` ends with a newline unless ``flush()`` cut it."""

    data: bytes
    first_line: int  # 1-based, in the file the lines came from
    count: int  # lines in ``data``
    generation: int  # 0 for the file first opened, +1 at each rotation or truncation


class FileFollower:
    """Reads the lines appended to ``path`` since the last call.

    ``from_start=False`` skips what the file holds when it is first opened (counting its
    lines, so numbers stay true) and stops before a half-written last line, so that
    line is read whole once it ends. A file that does not exist yet is waited for and,
    once it appears, read from its start.
    """

    def __init__(self, path: str | os.PathLike[str], *, from_start: bool = True,
                 read_bytes: int = READ_BYTES):
        self.path = str(path)
        self.from_start = from_start
        self.read_bytes = read_bytes
        self.rotations = 0
        self.truncations = 0
        self.generation = 0
        self._f = None
        self._ino: int | None = None
        self._pos = 0  # bytes of the current file consumed (carry included)
        self._carry = b""
        self._next_line = 1
        self._skip = not from_start  # until the first open attempt: a file there is old

    # ---------------------------------------------------------------- open and close
    def open(self) -> bool:
        """Open the file now if it exists (so following from its end starts here)."""
        return self._f is not None or self._open()

    def _open(self) -> bool:
        skip, self._skip = self._skip, False  # a file that appears later is new: all of it
        try:
            f = open(self.path, "rb")  # noqa: SIM115 (kept open while following; close())
        except FileNotFoundError:
            return False
        self._f = f
        self._ino = os.fstat(f.fileno()).st_ino
        self._pos = 0
        self._carry = b""
        self._next_line = 1
        if skip:
            self._skip_existing()
        return True

    def _skip_existing(self) -> None:
        """Seek past the whole lines already there, counting them."""
        assert self._f is not None
        lines, pos, last_nl = 0, 0, 0
        while block := self._f.read(1 << 20):
            lines += block.count(b"\n")
            k = block.rfind(b"\n")
            if k >= 0:
                last_nl = pos + k + 1
            pos += len(block)
        self._f.seek(last_nl)
        self._pos = last_nl
        self._next_line = lines + 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    # ---------------------------------------------------------------- reading
    def read(self) -> Lines | None:
        """The whole lines appended since the last call (None: none)."""
        if self._f is None and not self._open():
            return None
        got = self._read_more()
        if got is not None:
            return got
        # at the end of the file: has it been replaced or cut meanwhile?
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None  # moved away, the new one not there yet: the old fd is still ours
        if st.st_ino != self._ino:
            # rotated: what was written to the old file after our last read comes first
            tail, before = None, -1
            while self._pos != before:
                before = self._pos
                tail = _join(tail, self._read_more())
            rest = self._take_carry()
            self.close()
            self.rotations += 1
            self.generation += 1
            self._open()
            return _join(tail, rest)
        if st.st_size < self._pos:
            assert self._f is not None
            self.truncations += 1
            self.generation += 1
            self._f.seek(0)
            self._pos = 0
            self._carry = b""  # a line cut off by the truncation never ends
            self._next_line = 1
            return self._read_more()
        return None

    def flush(self) -> Lines | None:
        """The half line at the end, as a line (the writer is done: it will not end it)."""
        return self._take_carry()

    def _read_more(self) -> Lines | None:
        assert self._f is not None
        block = self._f.read(self.read_bytes)
        if not block:
            return None
        self._pos += len(block)
        data = self._carry + block
        cut = data.rfind(b"\n")
        if cut < 0:
            self._carry = data
            return None
        self._carry = data[cut + 1:]
        return self._lines(data[: cut + 1])

    def _take_carry(self) -> Lines | None:
        if not self._carry:
            return None
        data, self._carry = self._carry, b""
        return self._lines(data)

    def _lines(self, data: bytes) -> Lines:
        n = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        out = Lines(data, self._next_line, n, self.generation)
        self._next_line += n
        return out


def _join(a: Lines | None, b: Lines | None) -> Lines | None:
    """Two consecutive pieces of one file as one."""
    if a is None or b is None:
        return a or b
    return Lines(a.data + b.data, a.first_line, a.count + b.count, a.generation)
