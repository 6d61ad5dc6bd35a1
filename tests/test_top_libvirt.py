"""`migprof top -c URI` on a real libvirt host: the domain's row by its name, fed through libvirt
(never its monitor socket), following a real `virsh migrate` to its end.

Two real libvirt daemons (the lab's, one per network namespace, as in test_libvirt_live)
and a TCG domain running the lab guest.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest
from test_libvirt_live import MIGPROF, host  # noqa: F401 (the module's daemons and domain)

pytestmark = [pytest.mark.slow, pytest.mark.bpf]


def test_top_names_the_domain_and_follows_its_migration(host):  # noqa: F811
    top = subprocess.Popen([str(MIGPROF), "top", "--json", "-c", host.uri, "-n", host.name, "0.5"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    lines: list[dict] = []
    reader = threading.Thread(target=lambda: lines.extend(json.loads(ln) for ln in top.stdout))
    reader.start()
    src, dst = host.d["source"], host.d["destination"]

    def row(pred, what: str, timeout: float = 90.0) -> dict:
        end, seen = time.monotonic() + timeout, 0
        while time.monotonic() < end:
            for line in lines[seen:]:
                seen += 1
                for v in line["vms"]:
                    if pred(v):
                        return v
            time.sleep(0.05)
        raise AssertionError(f"never: {what}; last {lines[-1:]}")

    try:
        first = row(lambda v: v["label"] == host.name and v["domain"] == host.name
                    and "libvirt" in v["sources"], "the domain's row, fed through libvirt")
        assert first["side"] == "source" and first["status"] == "none"
        src.virsh("migrate-setmaxdowntime", host.name, "300")
        src.virsh("migrate", "--live", "--p2p", "--bandwidth", "256", host.name, dst.tcp_uri,
                  f"tcp://{dst.addr}:4444", timeout=120)
        done = row(lambda v: v["pid"] == first["pid"] and v["status"] == "completed",
                   "the source's migration completed")
        assert done["verdict"] == "ok" and done["pass_no"] >= 1 and done["downtime_ms"] is not None
        # the destination's QEMU (its domain is the other daemon's): by its -name
        row(lambda v: v["label"] == host.name and v["pid"] != first["pid"], "the destination QEMU")
    finally:
        top.send_signal(signal.SIGINT)
        rc = top.wait(90)
        reader.join(10)
        err = top.stderr.read()
        dst.virsh("migrate", "--live", "--p2p", host.name, src.tcp_uri, f"tcp://{src.addr}:4444",
                  timeout=120)  # back to the source for the module's other tests
    assert rc == 0, err
    notes = [ln for ln in err.splitlines() if "tainted" in ln]
    assert len(notes) == 1 and host.name in notes[0], err
    assert host.trace_state() == "disabled"  # what top switched on through libvirt is off again
