"""The nested VFIO lab's scenarios: one migration each, with an mtty device on both sides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MiB = 1 << 20

# mtty's migration data is exact (vfio-uapi.md §4.1): a 24-byte header in PRE_COPY,
# then 36 bytes per port at STOP_COPY; mtty-2 has two ports.
MTTY_TYPE = "mtty-2"
MTTY_PRECOPY_BYTES = 24
MTTY_STOPCOPY_BYTES = 72
MTTY_TOTAL_BYTES = MTTY_PRECOPY_BYTES + MTTY_STOPCOPY_BYTES
# with multifd, QEMU 10.0 also sends config space as device state and counts the
# packet headers in vfio.transferred (measured: 4252)
MTTY_VFIO_TRANSFERRED_MULTIFD = 4252

# the outcome expected once the user set the migration's parameters: either is an answer
EITHER = "completed or cancelled"

SOURCE_STATES = ["PRE_COPY", "PRE_COPY_P2P", "STOP_COPY", "STOP"]
DESTINATION_STATES = ["RESUMING", "RUNNING_P2P", "RUNNING"]


@dataclass(frozen=True)
class Scenario:
    """One migration: guest dirtying, capabilities, parameters, a mid-run action, the outcome expected."""

    name: str
    description: str
    dirty_bytes: int = 1 * MiB
    caps: dict[str, bool] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # source parameters at start
    dest_params: dict[str, Any] = field(default_factory=dict)
    dirty_tracking_off: bool = True  # x-device-dirty-page-tracking=off (type1 container tracking)
    raise_downtime_at_sync: int | None = None  # when dirty-sync-count reaches this ...
    raised_downtime_ms: int = 0  # ... set downtime-limit to this
    expect_outcome: str = "completed"  # or EITHER
    expect_vfio_transferred: int | None = MTTY_TOTAL_BYTES
    timeout_s: float = 180.0  # the runner adds its BPF load budget when bpf_path is set
    cancel_after_s: float | None = None  # migrate_cancel when not finished this long after migrate
    takes_settings: bool = True  # False: fails before pre-copy, so parameters mean nothing
    # the BPF collector's attach path inside L1 (L1 has kprobes), None = no collector:
    # loading it costs about a minute under nested TCG, so only some scenarios carry it
    bpf_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "dirty_bytes": self.dirty_bytes,
            "caps": self.caps, "params": self.params, "dest_params": self.dest_params,
            "dirty_tracking_off": self.dirty_tracking_off,
            "raise_downtime_at_sync": self.raise_downtime_at_sync,
            "raised_downtime_ms": self.raised_downtime_ms,
            "expect_outcome": self.expect_outcome,
            "expect_vfio_transferred": self.expect_vfio_transferred,
            "cancel_after_s": self.cancel_after_s,
            "bpf_path": self.bpf_path,
        }

    def with_overrides(self, params: dict[str, Any] | None = None, cancel_after_s: float | None = None,
                       dirty_bytes: int | None = None) -> Scenario:
        """The scenario at the user's settings (``migprof lab --vfio ... --downtime-limit``):
        ``params`` replace the source's; the expected outcome becomes EITHER, since whether
        a setting converges is what the user is asking."""
        if not params and cancel_after_s is None and dirty_bytes is None:
            return self
        return dataclasses.replace(
            self, params={**self.params, **(params or {})},
            cancel_after_s=self.cancel_after_s if cancel_after_s is None else cancel_after_s,
            dirty_bytes=self.dirty_bytes if dirty_bytes is None else dirty_bytes,
            expect_outcome=EITHER, timeout_s=max(self.timeout_s, (cancel_after_s or 0.0) + 120.0))

    def expects(self, outcome: str | None) -> bool:
        return outcome in self.expect_outcome.split(" or ")


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("converges", "1 MiB dirtied, unlimited bandwidth: switches over after the first pass",
             bpf_path="kprobe"),
    Scenario(
        "downtime-raised",
        "4 MiB dirtied at 8 MiB/s with a 300 ms downtime-limit cannot converge (threshold "
        "~2.4 MiB); at the 4th dirty sync the limit is raised to 2000 ms and it switches over",
        dirty_bytes=4 * MiB,
        params={"max-bandwidth": 8 * MiB, "downtime-limit": 300},
        raise_downtime_at_sync=4, raised_downtime_ms=2000),
    Scenario(
        "iterates",
        "4 MiB dirtied at 8 MiB/s with a 300 ms downtime-limit: pre-copy iterates and never "
        "converges (cancelled after 15 s); the load for what-ifs (--downtime-limit, "
        "--max-bandwidth: from ~600 ms at 8 MiB/s it switches over)",
        dirty_bytes=4 * MiB,
        params={"max-bandwidth": 8 * MiB, "downtime-limit": 300},
        cancel_after_s=15.0, expect_outcome="cancelled"),
    Scenario(
        "switchover-ack",
        "return-path + switchover-ack: the destination acks once mtty's 24 initial bytes "
        "are loaded",
        caps={"return-path": True, "switchover-ack": True}),
    Scenario(
        "multifd",
        "multifd with 2 channels: mtty's stop-copy data goes through the multifd device "
        "state thread (vfio.transferred 4252)",
        caps={"multifd": True}, params={"multifd-channels": 2},
        dest_params={"multifd-channels": 2},
        expect_vfio_transferred=MTTY_VFIO_TRANSFERRED_MULTIFD, bpf_path="tracepoint"),
    Scenario(
        "no-dirty-tracking",
        "device dirty tracking left on: mtty's DMA-logging ops are stubs and type1 "
        "has no IOMMUFD here, so DMA logging fails and the migration cannot run",
        dirty_tracking_off=False, expect_outcome="failed", expect_vfio_transferred=None,
        takes_settings=False),
]}


def select(names: list[str] | None) -> list[Scenario]:
    """The scenarios named (all when none), in the order given; KeyError names an unknown one."""
    if not names or names == ["all"]:
        return list(SCENARIOS.values())
    out = []
    for n in names:
        if n not in SCENARIOS:
            raise KeyError(n)
        out.append(SCENARIOS[n])
    return out
