"""The lab network: two namespaces joined by a veth pair shaped with tc netem (pyroute2).

Layout for owner tag T (``profiler.lab.qemu.owner_tag``)::

    netns migprof-T-src                       netns migprof-T-dst
      migprof-Ts 198.18.0.1/30  <-- veth -->    migprof-Td 198.18.0.2/30
      root tbf (rate) [+ netem delay/loss]      [root netem delay/loss]

Only 198.18.0.0/15 (RFC 2544 benchmarking) is used, and only inside the namespaces.
The source-side tbf shapes the migration stream (source -> destination); netem delay and
loss, where the kernel has sch_netem, apply in both directions (RTT = twice the delay). Deleting a namespace
deletes the veth end and qdisc inside it, so tear-down is "remove both namespaces" (plus
a stray veth left in the root namespace by a run killed mid-setup).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
from typing import Any

from profiler.errors import SetupError
from profiler.sources.procfd import pid_alive

log = logging.getLogger(__name__)

SRC_ADDR = "198.18.0.1"
DST_ADDR = "198.18.0.2"
PREFIX_LEN = 30
_NAME_RE = re.compile(r"^migprof-([0-9a-z]+)(?:-(src|dst)|[sd])$")


def _names(tag: str) -> dict[str, str]:
    return {
        "ns_src": f"migprof-{tag}-src",
        "ns_dst": f"migprof-{tag}-dst",
        "if_src": f"migprof-{tag}s",
        "if_dst": f"migprof-{tag}d",
    }


def tbf_args(rate_mbit: float) -> dict[str, Any]:
    """pyroute2 tbf keyword arguments for ``rate_mbit`` (burst: 4 ms worth, >= 64 KiB,
    so GSO-sized packets pass without being split; queue: 100 ms worth)."""
    rate_bps = rate_mbit * 1e6 / 8
    return {
        "rate": f"{int(rate_mbit * 1000)}kbit",
        "burst": max(65536, int(rate_bps * 0.004)),
        "latency": "100ms",
    }


def netem_args(delay_ms: float | None = None, loss_pct: float | None = None) -> dict[str, Any]:
    """pyroute2 netem keyword arguments (delay in µs, loss in %)."""
    args: dict[str, Any] = {"limit": 10000}
    if delay_ms:
        args["delay"] = int(delay_ms * 1000)
    if loss_pct:
        args["loss"] = loss_pct
    return args


class LabNet:
    """Creates the two namespaces and the veth; a context manager that removes them."""

    def __init__(self, tag: str, shaping: dict[str, Any] | None = None):
        n = _names(tag)
        self.tag = tag
        self.ns = {"source": n["ns_src"], "destination": n["ns_dst"]}
        self.ifname = {"source": n["if_src"], "destination": n["if_dst"]}
        self.src_addr, self.dst_addr = SRC_ADDR, DST_ADDR
        self.shaping = dict(shaping or {})
        self._created: list[str] = []
        self._owner = os.getpid()

    def __enter__(self) -> LabNet:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        from pyroute2 import IPRoute, netns
        from pyroute2.netlink.exceptions import NetlinkError

        existing = set(netns.listnetns())
        for ns in self.ns.values():
            if ns in existing:
                raise SetupError(
                    f"network namespace {ns} already exists (another lab of this "
                    f"process?); remove it with: ip netns del {ns}"
                )
        for ns in self.ns.values():
            _ip_netns("add", ns)
            self._created.append(ns)
        try:
            with IPRoute() as ipr:
                ipr.link(
                    "add",
                    ifname=self.ifname["source"],
                    kind="veth",
                    peer=self.ifname["destination"],
                )
                for side in ("source", "destination"):
                    idx = ipr.link_lookup(ifname=self.ifname[side])[0]
                    ipr.link("set", index=idx, net_ns_fd=self.ns[side])
        except NetlinkError as e:
            raise SetupError(f"creating the lab veth {self.ifname['source']}: {e}") from e
        for side, addr in (("source", SRC_ADDR), ("destination", DST_ADDR)):
            with IPRoute(netns=self.ns[side], flags=0) as ipr:
                lo = ipr.link_lookup(ifname="lo")[0]
                ipr.link("set", index=lo, state="up")
                idx = ipr.link_lookup(ifname=self.ifname[side])[0]
                ipr.addr("add", index=idx, address=addr, prefixlen=PREFIX_LEN)
                ipr.link("set", index=idx, state="up")
        self.shape(**self.shaping, _op="add")

    def shape(
        self,
        rate_mbit: float | None = None,
        delay_ms: float | None = None,
        loss_pct: float | None = None,
        _op: str = "replace",
    ) -> None:
        """Set the link's rate (source->destination: tbf) and its delay and loss (both
        ways: netem under the tbf). Kernels without sch_netem (this CI host's) can shape
        the rate only; asking them for delay or loss is a SetupError saying so."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        before = dict(self.shaping or {})
        self.shaping = {"rate_mbit": rate_mbit, "delay_ms": delay_ms, "loss_pct": loss_pct}
        if (_op == "replace" and rate_mbit and before.get("rate_mbit") and not (delay_ms or loss_pct)
                and not (before.get("delay_ms") or before.get("loss_pct"))):
            # a new rate on the same tbf, in place: deleting the qdisc dropped its queue, and
            # the sender took 36-108 ms to get going again, run to run (docs/lab.md)
            with IPRoute(netns=self.ns["source"], flags=0) as ipr:
                idx = ipr.link_lookup(ifname=self.ifname["source"])[0]
                try:
                    ipr.tc("change", "tbf", idx, handle="1:", **tbf_args(rate_mbit))
                    return
                except NetlinkError as e:
                    log.info("tc change tbf: %s; replacing the qdisc", e)
        for side in ("source", "destination"):
            rate = rate_mbit if side == "source" else None
            with IPRoute(netns=self.ns[side], flags=0) as ipr:
                idx = ipr.link_lookup(ifname=self.ifname[side])[0]
                with contextlib.suppress(NetlinkError):
                    ipr.tc("del", index=idx, handle="0:", parent=0xFFFFFFFF)  # root, if any
                parent: dict[str, Any] = {}
                if rate:
                    ipr.tc("add", "tbf", idx, handle="1:", **tbf_args(rate))
                    parent = {"parent": "1:1"}
                if delay_ms or loss_pct:
                    try:
                        ipr.tc(
                            "add",
                            "netem",
                            idx,
                            handle="10:",
                            **parent,
                            **netem_args(delay_ms, loss_pct),
                        )
                    except NetlinkError as e:
                        raise SetupError(
                            f"tc netem is unavailable in this kernel ({e.args[-1] if e.args else e}); "
                            "--delay-ms/--loss need CONFIG_NET_SCH_NETEM (modprobe sch_netem); "
                            "--rate-mbit works without it"
                        ) from e

    def qdisc_stats(self, side: str = "source") -> dict[str, Any]:
        """Bytes/packets/drops of the shaping qdisc on ``side``'s veth."""
        from pyroute2 import IPRoute

        with IPRoute(netns=self.ns[side], flags=0) as ipr:
            idx = ipr.link_lookup(ifname=self.ifname[side])[0]
            for q in ipr.get_qdiscs(index=idx):
                if q.get_attr("TCA_KIND") in ("tbf", "netem"):
                    st = q.get_attr("TCA_STATS2")
                    basic = st.get_attr("TCA_STATS_BASIC") if st else None
                    queue = st.get_attr("TCA_STATS_QUEUE") if st else None
                    return {
                        "bytes": basic.get("bytes") if basic else None,
                        "packets": basic.get("packets") if basic else None,
                        "drops": queue.get("drops") if queue else None,
                    }
        return {}

    def close(self) -> None:
        """Remove both namespaces (and with them the veth and qdiscs); never raises."""
        if os.getpid() != self._owner:
            return  # a forked helper (pyroute2 forks) unwinding: not ours to remove
        while self._created:
            ns = self._created.pop()
            try:
                _ip_netns("del", ns)
            except Exception as e:
                log.warning("removing netns %s: %s", ns, e)
        _remove_root_links(self.ifname.values())


def _ip_netns(op: str, name: str) -> None:
    """``ip netns add|del NAME``. pyroute2's netns.create() forks a helper and kills it
    after a timeout, which on a loaded host can leave an unmounted /run/netns entry
    (links moved "into" it vanish); iproute2 does the same steps synchronously."""
    r = subprocess.run(["ip", "netns", op, name], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise SetupError(f"ip netns {op} {name}: {r.stderr.strip() or r.returncode}")


def _remove_root_links(names: Any) -> None:
    from pyroute2 import IPRoute

    with contextlib.suppress(Exception), IPRoute() as ipr:
        for name in names:
            for idx in ipr.link_lookup(ifname=name):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=idx)


def cleanup_stale_net() -> list[str]:
    """Remove lab namespaces and root-namespace veths of lab runs whose owner is gone."""
    from pyroute2 import IPRoute, netns

    removed = []
    for ns in netns.listnetns():
        m = _NAME_RE.match(ns)
        if not m:
            continue
        if not pid_alive(int(m[1], 36)):
            with contextlib.suppress(Exception):
                _ip_netns("del", ns)
                removed.append(f"netns {ns}")
    with contextlib.suppress(Exception), IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            m = _NAME_RE.match(name)
            if m and not pid_alive(int(m[1], 36)):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=link["index"])
                    removed.append(f"link {name}")
    return removed
