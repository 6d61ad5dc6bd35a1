"""Other names of a VFIO device: the QMP ``device-id`` and BPF fd names -> QEMU's host name.

QEMU's trace prints a VFIO device by its host name (``vbasedev->name``: the PCI address
given as ``host=``, or the last component of ``sysfsdev=``, an mdev UUID). QMP
``VFIO_MIGRATION`` names it by its qdev ``id``; BPF by the device fd (``fd14``) unless the
kernel told the name. The mapping from ``id`` to host name is on the QEMU command line
(``-device vfio-pci,host=0000:3b:00.1,id=nic0``), which run metadata may carry: a lab
run's ``run.json`` (its ``mtty`` block, the ``*_cmdline`` / ``*_stderr`` texts QEMU echoes
the option into), or a ``cmdline`` entry per side. Any string in the metadata holding a
``vfio-pci,...`` option is read; its side is taken from the key path when it names one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

_DEVICE_OPT = re.compile(r"vfio-pci(?:-nohotplug)?,([^\s\"']+)")
_SIDES = ("source", "destination")


def _side_of(path: tuple[str, ...]) -> str | None:
    """The side a metadata key path names (``destination_stderr``, ``src_cmdline``...)."""
    for key in reversed(path):
        k = key.lower()
        if "source" in k or k.startswith("src"):
            return "source"
        if "destination" in k or k.startswith(("dst", "dest")):
            return "destination"
    return None


def parse_device_options(text: str) -> dict[str, str]:
    """qdev id -> host name from every ``-device vfio-pci,...`` option in ``text``."""
    out: dict[str, str] = {}
    for m in _DEVICE_OPT.finditer(text):
        opts = dict(kv.split("=", 1) for kv in m.group(1).split(",") if "=" in kv)
        host = opts.get("host") or (os.path.basename(opts["sysfsdev"].rstrip("/"))
                                    if opts.get("sysfsdev") else None)
        if host and opts.get("id"):
            out[opts["id"]] = host
    return out


def _walk(obj: Any, path: tuple[str, ...], out: dict[tuple[str, str], str]) -> None:
    if isinstance(obj, Mapping):
        # the lab's run.json names the mdev of each side explicitly
        if {"qdev_id", "source_uuid", "destination_uuid"} <= set(obj):
            for s in _SIDES:
                if obj.get(f"{s}_uuid"):
                    out.setdefault((s, str(obj["qdev_id"])), str(obj[f"{s}_uuid"]))
        for k, v in obj.items():
            _walk(v, (*path, str(k)), out)
    elif isinstance(obj, list | tuple):
        if obj and all(isinstance(x, str) for x in obj):  # an argv list
            _walk(" ".join(obj), path, out)
        else:
            for x in obj:
                _walk(x, path, out)
    elif isinstance(obj, str) and "vfio-pci" in obj:
        side = _side_of(path)
        for ident, host in parse_device_options(obj).items():
            for s in ([side] if side else _SIDES):
                out.setdefault((s, ident), host)


def device_aliases(meta: Mapping[str, Any] | None) -> dict[tuple[str, str], str]:
    """(side, qdev id) -> host name, from whatever ``meta`` holds (empty without it)."""
    out: dict[tuple[str, str], str] = {}
    if meta:
        _walk(meta, (), out)
    return out
