"""Which QEMU release family printed a trace, judged from the shape of its events."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from profiler import registry as R
from profiler.model import names as N


@dataclass(frozen=True, slots=True)
class Era:
    """The lowest QEMU version consistent with the trace, and the rules that follow from it."""

    min_version: tuple[int, int] | None
    v72: bool = False  # the old `migrate_pending` check line (threshold printed as `max`)
    iso_prefix: bool = False  # `YYYY-MM-DDTHH:MM:SS[.f]Z ` prefix: v10.1+

    def merge(self, other: Era | None) -> Era:
        """The era both pieces of evidence allow (one stream's earlier and later events):
        what ``detect_from`` gives on the union of what each saw."""
        if other is None or self.v72:
            return self
        if other.v72:
            return other
        vs = [v for v in (self.min_version, other.min_version) if v is not None]
        return Era(min_version=max(vs) if vs else None, iso_prefix=self.iso_prefix or other.iso_prefix)

    @property
    def set_state_is_request(self) -> bool:
        """>=9.1 prints vfio_migration_set_state at entry: a request, not a confirmation."""
        return self.min_version is not None and self.min_version >= (9, 1)

    @property
    def complete_le(self) -> bool:
        """v10.1+ completes when pending <= threshold (earlier: pending < threshold or 0)."""
        return self.iso_prefix or (self.min_version is not None and self.min_version >= (10, 1))

    @property
    def label(self) -> str | None:
        if self.v72:
            return "7.2"
        if self.min_version is None:
            return None
        v = (10, 1) if self.iso_prefix else self.min_version
        return f">={v[0]}.{v[1]}"


def detect(rows: pd.DataFrame, iso: bool | None = None) -> Era:
    """Guess the release family from which events appear and how lines are prefixed."""
    present = set(rows["event"].dropna().unique().tolist())
    st = rows["event"] == N.VFIO_SET_STATE
    tr = rows["event"] == N.TRANSFERRED
    if iso is None and "raw" in rows.columns:
        raw = rows["raw"].dropna()
        iso = bool(len(raw)) and bool(raw.iloc[:50].str.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").any())
    return detect_from(present, recover_state=bool(st.any() and rows.loc[st, "detail"].notna().any()),
                       switchover_bw=bool(tr.any() and rows.loc[tr, "switchover_bw_bytes_per_ms"].notna().any()), iso=iso)


def detect_from(present: set[str], *, recover_state: bool, switchover_bw: bool,
                iso: bool | None) -> Era:
    """``detect`` from what it looks at: the event names present in a stream, whether
    ``vfio_migration_set_state`` printed a recover state and ``migrate_transferred`` a
    switchover_bw, and whether lines carry the ISO-8601 prefix."""
    if any(e in present for e, kind in N.check_kinds().items() if kind == "pending"):
        return Era(min_version=(7, 2), v72=True)
    best = None
    # (event the model reads, the release that first printed it), from the registry's rows
    for ev, v in R.introduced():
        if ev in present and (best is None or v > best):
            best = v
    if recover_state:  # `recover state` argument: >=9.1
        best = max(best or (9, 1), (9, 1))
    if switchover_bw:  # switchover_bw argument: >=8.2
        best = max(best or (8, 2), (8, 2))
    return Era(min_version=best, iso_prefix=bool(iso))
