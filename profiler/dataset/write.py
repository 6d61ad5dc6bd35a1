"""Add recordings to a dataset (every table's file written to a temp name, then renamed into
place), and upgrade files an older migprof wrote."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from profiler import events as ev
from profiler import store
from profiler.dataset import schema as S
from profiler.dataset.derive import derive
from profiler.dataset.scan import DATE_RE, HOST_RE, TEMP_SUFFIX, check_root, mark_version, scan
from profiler.errors import InputError
from profiler.model.results import Report


@dataclass(frozen=True, slots=True)
class Prepared:
    """One recording ready to be written: its id, partition and a table per dataset table."""

    recording: str
    host: str
    date: str
    tables: dict[str, pa.Table]  # every name in schema.TABLES
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Added:
    """One unit written: its files, and what they hold."""

    unit: str
    host: str
    date: str
    recordings: tuple[str, ...]
    migrations: int
    events: int
    files: tuple[Path, ...]
    warnings: tuple[str, ...] = ()


def recording_id(events: pa.Table) -> str:
    """16 hex digits of a hash of the events: the same recording added twice is one unit."""
    h = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, events.schema) as w:
        w.write_table(events)
    h.update(memoryview(sink.getvalue()))
    return h.hexdigest()[:16]


def partition(meta: Mapping[str, Any], where: str, host: str | None = None,
              date: str | dt.date | None = None) -> tuple[str, str]:
    """(host, YYYY-MM-DD): as given, else the recording's ``host`` and ``created_ns`` (UTC)."""
    h = host if host is not None else meta.get("host")
    if not h:
        raise InputError(where, "the recording names no host; give one (--host)", field="host")
    if not HOST_RE.match(str(h)):
        raise InputError(where, f"host {h!r} cannot name a partition (letters, digits, '.', '_', "
                         "'-'); give one with --host", field="host")
    if date is None:
        ns = meta.get("created_ns")
        if not isinstance(ns, int | float) or ns <= 0:
            raise InputError(where, "the recording has no created_ns to date it by", field="created_ns")
        d = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).date().isoformat()
    else:
        d = date.isoformat() if isinstance(date, dt.date) else str(date)
        try:
            dt.date.fromisoformat(d)
        except ValueError:
            raise InputError(where, f"date {d!r} is not YYYY-MM-DD", field="date") from None
    if not DATE_RE.match(d):
        raise InputError(where, f"date {d!r} is not YYYY-MM-DD", field="date")
    return str(h), d


def events_table(df, recording: str) -> pa.Table:
    """A recording's events (current schema) with its id in front."""
    t = store.frame_to_table(df)
    rec = pa.array(np.full(len(t), recording, dtype=object), type=pa.string())
    return pa.Table.from_arrays([rec, *t.columns], schema=S.events_schema())


def prepare(path: str | os.PathLike[str], *, host: str | None = None,
            date: str | dt.date | None = None, report: Report | None = None) -> Prepared:
    """Read one recording (upgraded by :func:`profiler.store.read_recording`) and build its
    tables; ``report`` skips rebuilding it when the caller already has it."""
    from profiler.model import build_report

    df, meta, warnings = store.read_recording(path)
    h, d = partition(meta, str(path), host, date)
    if report is None:
        report = build_report(df, inputs=[str(path)], warnings=warnings, meta=meta,
                              malformed=int(meta.get("malformed_lines") or 0),
                              skipped=int(meta.get("skipped_lines") or 0))
    evt = events_table(df, "")
    rid = recording_id(evt.drop_columns(["recording"]))
    evt = evt.set_column(0, S.events_schema().field("recording"),
                         pa.array(np.full(len(evt), rid, dtype=object), type=pa.string()))
    tables = {"events": evt, **derive(report, rid, meta, source_path=str(path), events=len(df))}
    return Prepared(rid, h, d, tables, dict(meta), tuple(warnings))


def _unit_name(recs: Sequence[Prepared]) -> str:
    if len(recs) == 1:
        return recs[0].recording
    ids = "\n".join(sorted(r.recording for r in recs))
    return "b-" + hashlib.sha256(ids.encode()).hexdigest()[:16]


def _file_meta(table: str, recs: Sequence[Prepared]) -> dict[bytes, bytes]:
    md = {S.FILE_KEY: json.dumps({"format": S.FORMAT, "version": S.VERSION, "table": table,
                                  "recordings": [r.recording for r in recs]}).encode()}
    if table == "events":  # a single-recording events file is also a recording store reads
        meta = recs[0].meta if len(recs) == 1 else {"dataset_unit": _unit_name(recs),
                                                     "recordings": [r.recording for r in recs]}
        md[store.VERSION_KEY] = str(ev.SCHEMA_VERSION).encode()
        md[store.META_KEY] = json.dumps(meta, default=str, sort_keys=True).encode()
    return md


def _write_atomic(table: pa.Table, final: Path, md: dict[bytes, bytes], durable: bool) -> Path:
    tmp = final.with_name(f".{final.name}{TEMP_SUFFIX}")
    try:
        pq.write_table(table.replace_schema_metadata(md), str(tmp), compression="zstd",
                       write_page_checksum=True)
        if durable:  # the data is on disk before the name is: a power loss leaves no torn file
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_unit(root: str | os.PathLike[str], recs: Sequence[Prepared], *,
               durable: bool = True, name: str | None = None) -> Added:
    """Write recordings of one partition as one unit: a file per table, each written under a
    temp name (``.<unit>.parquet.tmp``, which readers skip) and renamed into place, the
    migrations file last. Adding the same recordings again replaces the unit; ``name``
    keeps a unit's name when it is rewritten (upgrade)."""
    if not recs:
        raise ValueError("write_unit: no recordings")
    parts = {(r.host, r.date) for r in recs}
    if len(parts) != 1:
        raise ValueError(f"write_unit: recordings of several partitions {sorted(parts)}")
    host, date = parts.pop()
    p = check_root(root, create=True)
    unit = name or _unit_name(recs)
    staged: list[tuple[Path, Path]] = []
    try:
        for t in S.TABLES:
            d = p / t / f"host={host}" / f"date={date}"
            d.mkdir(parents=True, exist_ok=True)
            parts_t = [r.tables[t] for r in recs]
            table = parts_t[0] if len(parts_t) == 1 else pa.concat_tables(parts_t).unify_dictionaries()
            final = d / f"{unit}.parquet"
            staged.append((_write_atomic(table, final, _file_meta(t, recs), durable), final))
        for tmp, final in staged:
            os.replace(tmp, final)
        if durable:
            for d in {f.parent for _, f in staged}:
                fd = os.open(d, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return Added(unit, host, date, tuple(r.recording for r in recs),
                 sum(r.tables["migrations"].num_rows for r in recs),
                 sum(r.tables["events"].num_rows for r in recs),
                 tuple(f for _, f in staged), tuple(w for r in recs for w in r.warnings))


def write_units(root: str | os.PathLike[str], recs: Iterable[Prepared], *,
                durable: bool = True) -> list[Added]:
    """One unit per partition (host, date) of ``recs``."""
    by: dict[tuple[str, str], list[Prepared]] = {}
    for r in recs:
        by.setdefault((r.host, r.date), []).append(r)
    return [write_unit(root, rs, durable=durable) for _, rs in sorted(by.items())]


def add_recording(root: str | os.PathLike[str], recording_path: str | os.PathLike[str], *,
                  host: str | None = None, date: str | dt.date | None = None,
                  report: Report | None = None) -> Added:
    """Add one finalised recording to the dataset at ``root`` (made when missing or empty).

    What ``record``/``live --record``/``lab --record`` call with ``--dataset`` after the
    recording is finalised. Host and date come from the recording's metadata (``host``,
    ``created_ns``) unless given. Raises InputError for a bad recording or partition.
    """
    check_root(root, create=True)  # refuse a directory that is not a dataset before any work
    return write_unit(root, [prepare(recording_path, host=host, date=date, report=report)])


def add_recordings(root: str | os.PathLike[str], paths: Iterable[str | os.PathLike[str]], *,
                   host: str | None = None, date: str | dt.date | None = None) -> list[Added]:
    """Add many recordings at once: one unit (one file per table) per partition."""
    check_root(root, create=True)
    return write_units(root, [prepare(p, host=host, date=date) for p in paths])


# ---------------------------------------------------------------------------- upgrade


@dataclass(frozen=True, slots=True)
class Upgraded:
    units: int
    recordings: int
    files: int
    skipped: tuple[str, ...] = ()  # units that could not be rebuilt, and why


def _rebuild_unit(unit_files: dict[str, Any]) -> list[Prepared]:
    """A unit's recordings rebuilt from its events file: read through the store (which
    upgrades old event schemas), each recording's report and derived tables made anew."""
    from profiler.model import build_report

    ev_path = unit_files["events"]
    df, _, _ = store.read_recording(ev_path)
    ids = pq.read_table(str(ev_path), columns=["recording"])["recording"].to_numpy(zero_copy_only=False)
    if len(ids) != len(df):
        raise InputError(str(ev_path), f"{len(ids)} recording ids for {len(df)} events")
    recs = pq.read_table(str(unit_files["recordings"]), columns=["recording", "meta_json", "source_path"])
    metas = {r: (json.loads(m) if m else {}, sp) for r, m, sp in zip(
        recs["recording"].to_pylist(), recs["meta_json"].to_pylist(), recs["source_path"].to_pylist(),
        strict=True)}
    out = []
    for rid in dict.fromkeys(ids.tolist()):
        sub = df[ids == rid].reset_index(drop=True)
        meta, src = metas.get(rid, ({}, None))
        report = build_report(sub, inputs=[src or str(ev_path)], meta=meta)
        tables = {"events": events_table(sub, rid),
                  **derive(report, rid, meta, source_path=src or "", events=len(sub))}
        out.append(Prepared(rid, unit_files["host"], unit_files["date"], tables, meta))
    return out


def upgrade(root: str | os.PathLike[str]) -> Upgraded:
    """Rewrite every unit that has a file an older migprof wrote (event schema or dataset
    layout): events through :func:`profiler.store.read_recording`, derived tables rebuilt
    from them. Each unit is replaced atomically, file by file, under the same name."""
    s = scan(root)
    todo = sorted({(f.host, f.date, f.unit) for f in s.stale})
    n_rec = n_files = 0
    skipped = []
    for host, date, unit in todo:
        files = {t: next(f.path for f in s.files[t] if (f.host, f.date, f.unit) == (host, date, unit))
                 for t in S.TABLES}
        try:
            recs = _rebuild_unit({**files, "host": host, "date": date})
        except InputError as e:
            skipped.append(f"{host}/{date}/{unit}: {e}")
            continue
        added = write_unit(s.root, recs, name=unit)
        n_rec += len(recs)
        n_files += len(added.files)
    if not skipped:  # every file is at this version now: so is the dataset
        mark_version(s.root)
    return Upgraded(len(todo) - len(skipped), n_rec, n_files, tuple(skipped))

