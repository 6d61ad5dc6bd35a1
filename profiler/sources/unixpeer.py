"""Who holds a listening UNIX socket: its accepted connections and the processes at their other end.

QEMU's QMP monitor serves one client at a time; a second client's ``connect()`` succeeds
into the listen backlog and then hears nothing. This asks the kernel instead
(``NETLINK_SOCK_DIAG``, as ``ss -xp`` does): the connections QEMU accepted on the socket
file (matched by its inode) and, through ``UNIX_DIAG_PEER``, the client's socket inode,
which ``/proc/*/fd`` turns into a pid. Reading other users' ``/proc/PID/fd`` needs root;
without it the holder is known to exist but not by name.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_ESTABLISHED = 1
UDIAG_SHOW_VFS, UDIAG_SHOW_PEER = 0x2, 0x4
UNIX_DIAG_VFS, UNIX_DIAG_PEER = 1, 2

_NLMSG = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBHIIIII")  # unix_diag_req
_MSG = struct.Struct("=BBBBIII")  # unix_diag_msg
_ATTR = struct.Struct("=HH")


@dataclass(frozen=True, slots=True)
class Peer:
    """The client end of one accepted connection."""

    inode: int
    pid: int | None = None  # None: its process is not visible to us
    comm: str | None = None

    def describe(self) -> str:
        if self.pid is None:
            return f"another client (socket inode {self.inode})"
        return f"pid {self.pid} ({self.comm or '?'})"


def _dump() -> list[tuple[int, int, int, int]]:
    """(inode, vfs inode, vfs dev, peer inode) of every connected UNIX socket."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as s:
        s.settimeout(2.0)
        body = _REQ.pack(socket.AF_UNIX, 0, 0, 1 << TCP_ESTABLISHED, 0,
                         UDIAG_SHOW_VFS | UDIAG_SHOW_PEER, 0xFFFFFFFF, 0xFFFFFFFF)
        s.send(_NLMSG.pack(_NLMSG.size + len(body), SOCK_DIAG_BY_FAMILY,
                           NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        out = []
        while True:
            data = s.recv(1 << 16)
            off = 0
            while off + _NLMSG.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + _NLMSG.size)[0]
                    raise OSError(err, os.strerror(err))
                out.append(_parse(data[off + _NLMSG.size: off + length]))
                off += (length + 3) & ~3
            if not data:
                return out


def _parse(msg: bytes) -> tuple[int, int, int, int]:
    _fam, _type, _state, _pad, ino, _c0, _c1 = _MSG.unpack_from(msg, 0)
    vfs_ino = vfs_dev = peer = 0
    off = _MSG.size
    while off + _ATTR.size <= len(msg):
        alen, atype = _ATTR.unpack_from(msg, off)
        if alen < _ATTR.size:
            break
        payload = msg[off + _ATTR.size: off + alen]
        if atype == UNIX_DIAG_VFS and len(payload) >= 8:
            vfs_ino, vfs_dev = struct.unpack_from("=II", payload)
        elif atype == UNIX_DIAG_PEER and len(payload) >= 4:
            (peer,) = struct.unpack_from("=I", payload)
        off += (alen + 3) & ~3
    return ino, vfs_ino, vfs_dev, peer


def _kernel_dev(st_dev: int) -> int:
    """A stat() device number in the kernel's internal encoding (major << 20 | minor)."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def connected_peers(path: str | os.PathLike[str]) -> list[Peer] | None:
    """The clients connected to the listening socket at ``path`` (empty: it is free).

    None when the kernel cannot be asked (no sock_diag for UNIX sockets here).
    """
    try:
        st = os.stat(path)
    except OSError:
        return []
    try:
        socks = _dump()
    except OSError:
        return None
    want = (st.st_ino, _kernel_dev(st.st_dev))
    # accepted connections carry the socket file's inode; a connection still waiting in
    # the backlog has no inode of its own yet, and a peer inode of 0 is a client gone
    peers = sorted({peer for ino, vino, vdev, peer in socks if ino and peer and (vino, vdev) == want})
    if not peers:
        return []
    owners = _owners(set(peers))
    return [Peer(p, *owners.get(p, (None, None))) for p in peers]


def _owners(inodes: set[int]) -> dict[int, tuple[int, str]]:
    """socket inode -> (pid, comm) of a process holding it, where /proc lets us see."""
    want = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, tuple[int, str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fds = os.listdir(d / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(d / "fd" / fd)
            except OSError:
                continue
            if link in want and want[link] not in found:
                try:
                    comm = (d / "comm").read_text().strip()
                except OSError:
                    comm = "?"
                found[want[link]] = (int(d.name), comm)
        if len(found) == len(inodes):
            break
    return found
