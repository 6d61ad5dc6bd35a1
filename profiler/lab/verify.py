"""Cross-checks of a lab run: the host's view of the migration socket against QEMU's.

QEMU counts ``ram.transferred`` when it hands bytes to its socket; the kernel's tcp_info
counts what the socket sent and got acknowledged. ``app_written = bytes_acked + wqueue``
(acknowledged plus still queued) is therefore what QEMU wrote, up to QEMU's own small
output buffer, so over the same window the two throughputs must agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from profiler import events as ev


@dataclass(frozen=True, slots=True)
class ThroughputCheck:
    """Throughput of one attempt over the window both views cover."""

    t0_ns: int
    t1_ns: int
    qemu_bytes_per_s: float  # from query-migrate ram.transferred
    sock_bytes_per_s: float  # from sock_diag bytes_acked + wqueue
    qemu_mbps: float | None  # QEMU's own last reported mbps (for the report)

    @property
    def ratio(self) -> float:
        return (
            self.sock_bytes_per_s / self.qemu_bytes_per_s if self.qemu_bytes_per_s else float("nan")
        )


def throughput_check(
    df: pd.DataFrame, min_window_s: float = 0.5, steady: bool = True
) -> ThroughputCheck | None:
    """Compare sock_diag and QMP throughput over their common window (source side).

    Uses the sock_diag connection with the most samples (a retry opens a second one) and
    the source's query-migrate polls inside that connection's lifetime. With ``steady``
    the window ends at the first lab ``shape`` action: across a step in the link rate
    each view's few-ms timing jitter weighs as much as the whole shaped phase. None when
    either view has fewer than two samples or the window is shorter than ``min_window_s``.
    """
    end = None
    if steady:
        shape = df[(df["event"] == ev.LAB_MARK) & (df["state"] == "shape")]
        end = int(shape["t_ns"].min()) if len(shape) else None
    if end is not None:
        df = df[df["t_ns"] < end]
    sd = df[df["event"] == ev.SOCKDIAG_SAMPLE]
    q = df[
        (df["event"] == ev.QMP_QUERY_MIGRATE) & (df["side"] == ev.Side.SOURCE) & df["bytes"].notna()
    ]
    if len(sd) < 2 or len(q) < 2:
        return None
    det = pd.DataFrame.from_records([json.loads(d) for d in sd["detail"]], index=sd.index)
    sd = sd.assign(sport=det["sport"], wqueue=det["wqueue"].fillna(0))
    sport = sd["sport"].value_counts().idxmax()
    sd = sd[sd["sport"] == sport]
    t_sd = sd["t_ns"].astype("int64").to_numpy()
    written = (sd["bytes"].astype("int64") + sd["wqueue"].astype("int64")).to_numpy()
    q = q[(q["t_ns"] >= t_sd[0]) & (q["t_ns"] <= t_sd[-1])]
    if len(q) < 2:
        return None
    t_q = q["t_ns"].astype("int64").to_numpy()
    transferred = q["bytes"].astype("int64").to_numpy()
    t0, t1 = int(t_q[0]), int(t_q[-1])
    if (t1 - t0) / 1e9 < min_window_s:
        return None
    inside = (t_sd >= t0) & (t_sd <= t1)
    if inside.sum() < 2:
        return None
    # least-squares slopes over every sample in the window: the two views sample at
    # different instants, and an end-point difference would carry each one's phase error
    qemu_rate = float(np.polyfit((t_q - t0) / 1e9, transferred.astype(float), 1)[0])
    sock_rate = float(np.polyfit((t_sd[inside] - t0) / 1e9, written[inside].astype(float), 1)[0])
    mbps = None
    last = q["detail"].iloc[-1]
    if isinstance(last, str):
        mbps = (json.loads(last).get("ram") or {}).get("mbps")
    return ThroughputCheck(t0, t1, float(qemu_rate), float(sock_rate), mbps)
