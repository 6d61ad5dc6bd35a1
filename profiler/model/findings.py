"""Device health beside the verdict: what each VFIO device did that deserves a look, with evidence.

Each ``Finding`` names the device, says what happened in one sentence with its numbers, and
lists the evidence: the ``file:line`` of the trace or BPF rows it rests on (else the event
and its time). What is checked, per migration:

* ``stopcopy-missing``: the device reported a stop-copy size (``vfio_state_pending_exact``),
  yet sent no bytes, or under half of it, in the stop-copy (trace blocks, else BPF reads);
* ``data-fd-stall``: a ``read()``/``write()`` on the migration data fd (BPF ``dur_ns``)
  slower than ``STALL_MS``;
* ``state-refused``, ``state-unconfirmed``, ``state-error``: the kernel refused a SET (BPF
  ret < 0), a requested state (>= 9.1 ``vfio_migration_set_state``) was followed by another
  confirmed one (``vfio_migration_set_device_state``), or any source saw ``ERROR``;
* ``switchover-before-ack``: the destination needed a switchover ACK
  (``loadvm_state_switchover_ack_needed``), but the source decided to switch over before
  ``source_return_path_thread_switchover_acked``;
* ``precopy-reinit``: PRE_COPY initial bytes grew again after they had fallen (new initial
  data: the kernel's ``VFIO_PRECOPY_INFO_REINIT``, flagged in BPF's precopy info once the
  device opted in with ``MIG_PRECOPY_INFOv2``); kept as a finding, never assumed away: an
  ACK already given does not cover the new data unless QEMU re-arms it;
* ``load-vs-save``: on the destination, a device's load time (``vmstate_downtime_load``)
  against its save time on the source (``vmstate_downtime_save``);
* ``multifd-load``: >= 10.0 multifd device-state loading (``vfio_load_bufs_thread_*``,
  ``vfio_load_state_device_buffer_*``): the load thread's time, the time it waited starved
  for a buffer that had not arrived yet, and each buffer's load time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from profiler import events as E
from profiler.model import names as N
from profiler.model.results import Finding, Migration

STALL_MS = 100.0  # a data-fd read()/write() slower than this is a stall
FEW = 0.5  # stop-copy bytes under this share of the reported stop-copy size are "far fewer"
SLOW_LOAD = 2.0  # load > this x save (and 5 ms more) is a slow load
STARVED_SHARE = 0.5  # a load thread starved for more than this share of its time: a warning
MAX_EVIDENCE = 4
_BUF = "vfio_load_state_device_buffer_"
EVENTS = frozenset([
    N.VFIO_PENDING_EST, N.VFIO_PENDING_EXACT, N.VFIO_ITERATE, N.VFIO_BLOCK, N.VFIO_SET_STATE,
    N.VFIO_SET_DEVICE_STATE, N.LOW_PENDING, N.SWITCHOVER_ACKED, N.DEST_ACK_NEEDED, N.DEST_ACK_APPROVE,
    N.DOWNTIME_SAVE, N.DOWNTIME_LOAD, "vfio_load_bufs_thread_start", "vfio_load_bufs_thread_end",
    _BUF + "incoming", _BUF + "starved", _BUF + "load_start", _BUF + "load_end",
    E.BPF_DATA_READ, E.BPF_DATA_WRITE, E.BPF_IOCTL, E.BPF_PRECOPY_INFO, E.QMP_VFIO_MIGRATION])
_STATE_ROWS = (N.VFIO_SET_STATE, N.VFIO_SET_DEVICE_STATE, E.QMP_VFIO_MIGRATION, E.BPF_IOCTL)
_REINIT = 1  # VFIO_PRECOPY_INFO_REINIT
_PREFIX = re.compile(r"^(\d+@\d+\.\d+:|\d{4}-\d\d-\d\dT\S+ )")  # -msg timestamp=on prefixes
_INFO_V2 = 12  # VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2


def _columns(events: pd.DataFrame, at: np.ndarray) -> dict[str, np.ndarray]:
    """The columns the checks read at rows ``at``, as numpy arrays (object for text, float64
    NaN for NA); only these columns are taken."""
    out = {c: events[c].iloc[at].astype(object).to_numpy() for c in ("event", "side", "device", "state", "detail")}
    for c in ("t_ns", "bytes", "init_bytes", "stopcopy_bytes", "dur_ns", "ret", "flags", "cmd"):
        out[c] = events[c].iloc[at].to_numpy(dtype="float64", na_value=np.nan)
    out["idx"] = events["buffer_idx"].iloc[at].to_numpy(dtype="float64", na_value=np.nan)
    out["row"] = at  # the evidence's file, line and text are read from ``events`` at these
    return out


class _Rows:
    """One side's rows of one migration (``at`` into the columns of ``_columns``), in time order."""

    def __init__(self, cols: dict[str, np.ndarray], at: np.ndarray, t0: int | None, names: dict[str, str],
                 events: pd.DataFrame):
        self.n = len(at)
        self.event = cols["event"][at]
        codes, uniq = pd.factorize(cols["device"][at])  # NA -> -1 -> None
        self.device = np.array([names.get(u, u) for u in uniq] + [None], dtype=object)[codes]
        self.t_ms = (cols["t_ns"][at] - t0) / 1e6 if t0 is not None else np.full(self.n, np.nan)
        self.num = {c: cols[c][at] for c in ("bytes", "init_bytes", "stopcopy_bytes", "dur_ns", "ret", "flags", "cmd")}
        self.idx = cols["idx"][at]
        self.state, self.detail = cols["state"][at], cols["detail"][at]
        self.row, self.events = cols["row"][at], events
        self._by: dict[str, np.ndarray] | None = None

    def _fields(self, i: int) -> str:
        """A row without raw text (BPF, QMP): its event and the fields that matter here."""
        parts = [str(self.event[i])] + ([str(self.device[i])] if self.device[i] else [])
        for k, fmt in (("bytes", "bytes={:.0f}"), ("init_bytes", "initial={:.0f}"), ("flags", "flags={:#x}"),
                       ("ret", "ret={:.0f}")):
            v = self.num[k][i]
            if not math.isnan(v):
                parts.append(fmt.format(int(v)) if k == "flags" else fmt.format(v))
        if not math.isnan(self.num["dur_ns"][i]):
            parts.append(f"took {self.num['dur_ns'][i] / 1e6:.1f} ms")
        if isinstance(self.state[i], str):
            parts.append(self.state[i])
        return " ".join(parts)

    def where(self, *events: str) -> np.ndarray:
        """Rows of these events, in order (one grouping of the event column, then lookups)."""
        if self._by is None:
            codes, uniq = pd.factorize(self.event)
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
            self._by = {str(u): order[bounds[k]:bounds[k + 1]] for k, u in enumerate(uniq)}
        got = [self._by[e] for e in events if e in self._by]
        if not got:
            return np.zeros(0, dtype=np.int64)
        return got[0] if len(got) == 1 else np.sort(np.concatenate(got))

    def evidence(self, i: int) -> str:
        r = int(self.row[i])
        f, ln, raw = (self.events[c].iat[r] for c in ("file", "line", "raw"))
        ln = math.nan if ln is None or ln is pd.NA else float(ln)
        text = raw if isinstance(raw, str) else self._fields(i)
        text = _PREFIX.sub("", " ".join(str(text).split()))[:140]  # file:line says where and when
        if isinstance(f, str) and f and not math.isnan(ln):
            return f"{f}:{int(ln)}: {text}"
        t = self.t_ms[i]
        return f"{self.event[i]} at {t:.1f} ms" if not math.isnan(t) else str(self.event[i])


def _ev(rows: _Rows, idx: Sequence[int]) -> tuple[str, ...]:
    return tuple(rows.evidence(int(i)) for i in list(idx)[:MAX_EVIDENCE])


def _windows(m: Migration, others: Sequence[Migration]) -> tuple[float, float, float, float]:
    """(source lo, hi, destination lo, hi) in epoch ns: the source from its start to 10 s past
    its end (or the next migration's start);
    the destination from its first to its last event (else as far as the next migration)."""
    t0 = float(m.start_ns)
    nxt = min([float(o.start_ns) for o in others if o.start_ns is not None and o.start_ns > m.start_ns]
              or [math.inf])
    # the source's cleanup (the device's last SET, a late ACK) follows its final status
    hi = min(float(m.end_ns) + 10e9, nxt) if m.end_ns is not None else nxt
    dlo = t0 + m.dest_start_ms * 1e6 - 1e6 if m.dest_start_ms is not None else t0 - 5e9
    dhi = t0 + m.dest_end_ms * 1e6 + 1e6 if m.dest_end_ms is not None else min(nxt, hi + 10e9)
    return t0, hi, dlo, dhi


def attach(events: pd.DataFrame, migrations: Sequence[Migration]) -> tuple[Migration, ...]:
    """``migrations`` with their ``findings`` filled in from ``events`` (the model's input)."""
    if not migrations:
        return tuple(migrations)
    # every check needs a VFIO device, except the ACK one (its destination line): on the live
    # path most frames have neither, and a look at the category names costs nothing
    names = events["event"]
    present = set(map(str, names.cat.categories)) if isinstance(names.dtype, pd.CategoricalDtype) else None
    vfio = any(d.kind == "vfio" for m in migrations for d in m.devices)
    if not vfio and (present is None or N.DEST_ACK_NEEDED not in present):
        return tuple(migrations)
    if present is not None:
        want = np.asarray(names.cat.categories.isin(list(EVENTS)))
        codes = names.cat.codes.to_numpy()
        at = np.flatnonzero((codes >= 0) & want[codes])
    else:
        at = np.flatnonzero(names.isin(EVENTS).to_numpy(dtype=bool))
    if not len(at):
        return tuple(migrations)
    cols = _columns(events, at)
    t, side = cols["t_ns"], cols["side"]
    untimed = np.isnan(t).all()
    out = []
    for m in migrations:
        if m.start_ns is None or untimed:
            if len(migrations) != 1:  # no clock to tell the migrations' rows apart
                out.append(m)
                continue
            src, dst = np.flatnonzero(side == "source"), np.flatnonzero(side == "destination")
        else:
            lo, hi, dlo, dhi = _windows(m, migrations)
            src = np.flatnonzero((side == "source") & (t >= lo) & (t <= hi))
            dst = np.flatnonzero((side == "destination") & (t >= dlo) & (t <= dhi))
        found = device_findings(m, events, cols, src, dst)
        out.append(replace(m, findings=found) if found else m)
    return tuple(out)


def device_findings(m: Migration, events: pd.DataFrame, cols: dict[str, np.ndarray], src: np.ndarray,
                    dst: np.ndarray) -> tuple[Finding, ...]:
    """The findings of one migration from its source and destination rows (``src``/``dst``
    index the columns ``cols``)."""
    names = {a: d.name for d in m.devices for a in (d.name, *d.aliases)}
    S, D = _Rows(cols, src, m.start_ns, names, events), _Rows(cols, dst, m.start_ns, names, events)
    out: list[Finding] = []
    out += _stopcopy_missing(m, S)
    for rows, side in ((S, "source"), (D, "destination")):
        out += _stalls(rows, side)
        out += _states(rows, side)
    out += _switchover_before_ack(S, D)
    out += _reinit(S)
    out += _load_vs_save(m, S, D)
    out += _multifd_load(D)
    return tuple(out)


def _stopcopy_missing(m: Migration, S: _Rows) -> list[Finding]:
    if m.switchover_ms is None and m.outcome != "completed":
        return []
    out = []
    for d in m.devices:
        if d.kind != "vfio" or d.side == "destination" or not d.stopcopy_size_bytes:
            continue
        sent = d.stopcopy_bytes if d.stopcopy_bytes is not None else d.bytes_by_phase.get("STOP_COPY")
        if sent is None or sent >= FEW * d.stopcopy_size_bytes:
            continue
        ex = [i for i in S.where(N.VFIO_PENDING_EXACT) if S.device[i] == d.name]
        what = "no bytes" if sent == 0 else f"{sent} bytes"
        out.append(Finding(
            "stopcopy-missing", d.name, "warning",
            f"{d.name} reported a stop-copy size of {d.stopcopy_size_bytes} bytes but sent {what} in the "
            f"stop-copy ({'none' if sent == 0 else f'{sent / d.stopcopy_size_bytes:.0%}'} of it): its state "
            "may not have reached the destination, or the size it reports is wrong",
            _ev(S, ex[-1:]) + _ev(S, [i for i in S.where(N.VFIO_BLOCK, E.BPF_DATA_READ)
                                      if S.device[i] == d.name and (m.switchover_ms is None or S.t_ms[i] >= m.switchover_ms)])))
    return out


def _stalls(rows: _Rows, side: str) -> list[Finding]:
    out = []
    io = rows.where(E.BPF_DATA_READ, E.BPF_DATA_WRITE)
    slow = io[rows.num["dur_ns"][io] > STALL_MS * 1e6]
    for dev in dict.fromkeys(rows.device[slow]):
        mine = [i for i in slow if rows.device[i] == dev]
        worst = max(rows.num["dur_ns"][i] for i in mine) / 1e6
        call = "read()" if rows.event[mine[0]] == E.BPF_DATA_READ else "write()"
        phases = sorted({str(rows.state[i]) for i in mine if isinstance(rows.state[i], str)})
        out.append(Finding(
            "data-fd-stall", dev, "warning",
            f"{dev}: {len(mine)} data-fd {call}{'s' if len(mine) > 1 else ''} on the {side} took over "
            f"{STALL_MS:g} ms (longest {worst:.0f} ms{', in ' + '/'.join(phases) if phases else ''}): the "
            "device stalled the migration thread" + (" inside the downtime" if "STOP_COPY" in phases else ""),
            _ev(rows, mine)))
    return out


def _states(rows: _Rows, side: str) -> list[Finding]:
    out = []
    st = rows.where(*_STATE_ROWS)
    st = st[[isinstance(rows.state[i], str) for i in st]] if len(st) else st
    err = [i for i in st if "ERROR" in rows.state[i].upper()]
    if err:
        out.append(Finding("state-error", rows.device[err[0]], "warning",
                           f"{rows.device[err[0]]} entered the ERROR state on the {side}: the device needs a "
                           "reset, its migration state is lost", _ev(rows, err)))
    refused = [i for i in st if rows.event[i] == E.BPF_IOCTL and rows.num["ret"][i] < 0]
    for i in refused:
        out.append(Finding("state-refused", rows.device[i], "warning",
                           f"the kernel refused {rows.device[i]}'s SET {rows.state[i]} on the {side} "
                           f"(errno {-int(rows.num['ret'][i])})", _ev(rows, [i])))
    # >= 9.1: set_state prints the request (with a recover state), set_device_state the result
    last: dict[str, str] = {}
    pending: dict[str, int] = {}
    for i in st:
        dev, ev = rows.device[i], rows.event[i]
        if ev == N.VFIO_SET_STATE and isinstance(rows.detail[i], str):
            if dev in pending:
                out += _unconfirmed(rows, pending.pop(dev), None, side)
            if rows.state[i] != last.get(dev):  # QEMU skips a SET to the state it is in
                pending[dev] = i
        elif ev == N.VFIO_SET_DEVICE_STATE:
            last[dev] = rows.state[i]
            if dev in pending:
                j = pending.pop(dev)
                if rows.state[j] != rows.state[i]:
                    out += _unconfirmed(rows, j, i, side)
    for j in pending.values():
        out += _unconfirmed(rows, j, None, side)
    return out


def _unconfirmed(rows: _Rows, req: int, got: int | None, side: str) -> list[Finding]:
    dev, want = rows.device[req], rows.state[req]
    if got is None:
        msg = f"{dev} was asked for {want} on the {side} and never confirmed it"
    else:
        msg = f"{dev} was asked for {want} on the {side} but ended in {rows.state[got]} (the recover state?)"
    return [Finding("state-unconfirmed", dev, "warning", msg, _ev(rows, [req] + ([got] if got is not None else [])))]


def _switchover_before_ack(S: _Rows, D: _Rows) -> list[Finding]:
    need = D.where(N.DEST_ACK_NEEDED)
    low = S.where(N.LOW_PENDING)
    if not len(need) or not len(low) or np.isnan(S.t_ms[low[0]]):
        return []
    acked = S.where(N.SWITCHOVER_ACKED)
    t_ack = S.t_ms[acked[0]] if len(acked) else math.inf
    if S.t_ms[low[0]] >= t_ack:
        return []
    when = f"at {t_ack:.1f} ms" if len(acked) else "never"
    return [Finding("switchover-before-ack", None, "warning",
                    f"the source decided to switch over at {S.t_ms[low[0]]:.1f} ms, before the destination's "
                    f"switchover ACK (received {when}): a device's initial data may not have been loaded",
                    _ev(D, need[:1]) + _ev(S, [low[0], *acked[:1]]))]


def _reinit(S: _Rows) -> list[Finding]:
    out = []
    rows = S.where(N.VFIO_PENDING_EST, N.VFIO_PENDING_EXACT, N.VFIO_ITERATE, E.BPF_PRECOPY_INFO)
    v2 = {S.device[i] for i in S.where(E.BPF_IOCTL)
          if S.num["ret"][i] == 0 and int(np.nan_to_num(S.num["flags"][i])) & 0xFFFF == _INFO_V2}
    rows = rows[~np.isnan(S.num["init_bytes"][rows])]
    for dev in dict.fromkeys(S.device[rows]):
        mine = rows[S.device[rows] == dev]
        v = S.num["init_bytes"][mine]
        floor = np.minimum.accumulate(v)
        up = np.flatnonzero(v[1:] > floor[:-1]) + 1  # above the lowest seen before
        # each grow that tops the ones before it (a drain back down is not a new one)
        grew = [int(mine[k]) for k in up[v[up] > np.maximum.accumulate(np.r_[-np.inf, v[up][:-1]])]]
        low_k = int(np.argmin(v[:up[0]])) if len(up) else int(np.argmin(v))
        low, low_i = float(v[low_k]), int(mine[low_k])
        info = mine[S.event[mine] == E.BPF_PRECOPY_INFO] if dev in v2 else mine[:0]
        flagged = [int(i) for i in info[(np.nan_to_num(S.num["flags"][info]).astype(np.int64) & _REINIT) > 0]]
        if not grew and not flagged:
            continue
        first = grew[0] if grew else flagged[0]
        top = max(S.num["init_bytes"][i] for i in (grew or flagged))
        out.append(Finding(
            "precopy-reinit", dev, "info",
            f"{dev}'s PRE_COPY initial data grew again to {int(top)} bytes at {S.t_ms[first]:.1f} ms after "
            f"falling to {int(low) if low_i is not None else '?'}"
            + (" (VFIO_PRECOPY_INFO_REINIT)" if flagged else "")
            + ": new initial data, e.g. after a device reconfiguration; a switchover ACK given before it "
            "does not cover it, so it goes in pre-copy again or, if the switch-over comes first, in the downtime",
            _ev(S, ([low_i] if low_i is not None else []) + grew[:2] + flagged[:1])))
    return out


def _load_vs_save(m: Migration, S: _Rows, D: _Rows) -> list[Finding]:
    def per_idstr(rows: _Rows, ev: str) -> dict[str, tuple[float, list[int]]]:
        out: dict[str, tuple[float, list[int]]] = {}
        for i in rows.where(ev):
            k = rows.device[i]
            if isinstance(k, str) and k.endswith("/vfio") and not math.isnan(rows.num["dur_ns"][i]):
                ms, ix = out.get(k, (0.0, []))
                out[k] = (ms + rows.num["dur_ns"][i] / 1e6, ix + [i])
        return out

    save, load = per_idstr(S, N.DOWNTIME_SAVE), per_idstr(D, N.DOWNTIME_LOAD)
    threaded = len(D.where("vfio_load_bufs_thread_start")) > 0
    by_idstr = {d.idstr: d.name for d in m.devices if d.kind == "vfio" and d.side != "destination" and d.idstr}
    out = []
    for k in load.keys() & save.keys():
        (ls, li), (ss, si) = load[k], save[k]
        slow = ls > SLOW_LOAD * ss and ls - ss >= 5.0
        out.append(Finding(
            "load-vs-save", by_idstr.get(k, k), "warning" if slow else "info",
            f"{by_idstr.get(k, k)} ({k}) loads in {ls:.1f} ms on the destination against {ss:.1f} ms to save "
            "on the source" + (": the destination's load, not the transfer, sets its share of the switch-over"
                               if slow else "")
            + (" (its stop-copy data loads in the multifd load thread instead, see multifd-load)" if threaded else ""),
            _ev(S, si[:2]) + _ev(D, li[:2])))
    return out


def _multifd_load(D: _Rows) -> list[Finding]:
    start, end = D.where("vfio_load_bufs_thread_start"), D.where("vfio_load_bufs_thread_end")
    if not len(start):
        return []
    out = []
    for dev in dict.fromkeys(D.device[start]):
        def mine(ev: str, dev: str = dev) -> list[int]:
            return [i for i in D.where(ev) if D.device[i] == dev]

        s0 = next(i for i in start if D.device[i] == dev)
        e0 = next((i for i in end if D.device[i] == dev), None)
        span = D.t_ms[e0] - D.t_ms[s0] if e0 is not None else math.nan
        incoming = {D.idx[i]: D.t_ms[i] for i in mine(_BUF + "incoming")}
        starved = mine(_BUF + "starved")
        waits = [incoming.get(D.idx[i], D.t_ms[e0] if e0 is not None else math.nan) - D.t_ms[i] for i in starved]
        waited = float(np.nansum(waits)) if waits else 0.0
        ls, le = mine(_BUF + "load_start"), mine(_BUF + "load_end")
        ends = {D.idx[i]: D.t_ms[i] for i in le}
        loads = [ends.get(D.idx[i], math.nan) - D.t_ms[i] for i in ls]
        share = waited / span if span and span > 0 else math.nan
        msg = (f"{dev}: the multifd load thread ran {span:.1f} ms" if not math.isnan(span)
               else f"{dev}: the multifd load thread never ended")
        if starved:
            msg += (f" and waited {waited:.1f} ms ({share:.0%}) starved for buffers that had not arrived "
                    f"(idx {', '.join(str(int(D.idx[i])) for i in starved if not math.isnan(D.idx[i]))})"
                    if not math.isnan(share) else f"; starved {len(starved)} times")
        if loads:
            msg += f"; {len(loads)} buffer{'s' if len(loads) > 1 else ''} loaded in {np.nansum(loads):.1f} ms"
        warn = bool(starved) and not math.isnan(share) and share > STARVED_SHARE
        if warn:
            msg += ": the destination waited for the network (or the source's save thread), not the device"
        out.append(Finding("multifd-load", dev, "warning" if warn else "info", msg,
                           _ev(D, [s0, *starved[:2], *(mine(_BUF + "incoming")[:1]), *([e0] if e0 is not None else [])])))
    return out
