"""The L2 guest: a 64-byte multiboot image that dirties a memory range forever.

The nested lab needs a guest that runs (mtty only enters PRE_COPY when the VM is
running at migration set-up) and dirties a chosen amount of RAM, but L1 has no
cross toolchain to spare. So the guest is written here as machine code: a
multiboot header using the a.out kludge (QEMU's ``-kernel`` loads it raw at
1 MiB, flat 32-bit protected mode, no paging), then a loop that increments one
dword per 4 KiB page from ``start`` to ``start + size`` and starts over.
"""

from __future__ import annotations

import struct
from pathlib import Path

MULTIBOOT_MAGIC = 0x1BADB002
MULTIBOOT_AOUT_KLUDGE = 1 << 16
LOAD_ADDR = 0x100000  # where QEMU's multiboot loader puts the image
HEADER_SIZE = 32
PAGE = 4096


def dirty_guest(dirty_bytes: int, start: int = 0x200000) -> bytes:
    """Image bytes for a guest that rewrites every page of [start, start+dirty_bytes).

    ``dirty_bytes`` is rounded down to whole pages; the guest needs RAM of at
    least ``start + dirty_bytes`` (with the default start, 2 MiB more than that).
    """
    pages = dirty_bytes // PAGE
    if pages <= 0:
        raise ValueError("dirty_bytes must cover at least one 4 KiB page")
    end = start + pages * PAGE
    flags = MULTIBOOT_AOUT_KLUDGE
    checksum = (-(MULTIBOOT_MAGIC + flags)) & 0xFFFFFFFF
    entry = LOAD_ADDR + HEADER_SIZE
    header = struct.pack(
        "<8I",
        MULTIBOOT_MAGIC, flags, checksum,
        LOAD_ADDR,  # header_addr: the header is the first thing in the image
        LOAD_ADDR,  # load_addr
        0,  # load_end_addr 0: load the whole file
        0,  # bss_end_addr 0: no bss
        entry,
    )
    code = b"".join([
        b"\xbf" + struct.pack("<I", start),  # 0:  mov edi, start
        b"\x83\x07\x01",  # 5:  add dword [edi], 1     (loop)
        b"\x81\xc7" + struct.pack("<I", PAGE),  # 8:  add edi, 4096
        b"\x81\xff" + struct.pack("<I", end),  # 14: cmp edi, end
        b"\x72\xef",  # 20: jb loop  (5 - 22 = -17)
        b"\xeb\xe8",  # 22: jmp entry (0 - 24 = -24)
    ])
    return header + code


def write_dirty_guest(path: Path, dirty_bytes: int) -> Path:
    """Write the guest image to ``path`` and return it."""
    path.write_bytes(dirty_guest(dirty_bytes))
    return path
