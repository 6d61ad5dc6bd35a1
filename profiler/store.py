"""Recordings: a crash-safe Arrow IPC stream while live, a Parquet file once finalised.

File formats (told apart by their first bytes, never by the name):

* **stream** (``FILE.partial`` while recording): an Arrow IPC stream with the schema of
  :mod:`profiler.events`. A batch is flushed to the OS every ``flush_rows`` events or
  every ``flush_interval_s`` seconds (default 0.5 s), so a SIGKILLed recorder leaves a
  file readable up to its last flush. Metadata learnt later (QEMU version, migration
  parameters, clock offsets) rides on a later batch's custom metadata.
* **Parquet** (``FILE``): written by :meth:`RecordingWriter.close` from the stream;
  columnar, compressed, with the merged metadata in the schema.
* The Arrow IPC *file* format is read too.

Schema metadata: ``migprof.schema_version`` (int as text) and ``migprof.meta`` (JSON:
host, kernel, qemu_version, migration_params, clock_offsets, migprof_version, sources,
attach, created_ns ...). Older schema versions are upgraded on read through
``UPGRADES``; a newer version is refused with a message saying so.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from profiler import __version__
from profiler import events as ev
from profiler.errors import InputError

log = logging.getLogger(__name__)

META_KEY = b"migprof.meta"
SUMMARY_KEY = b"migprof.summary"  # JSON {"model_key": ..., "report": migprof.report/1}
VERSION_KEY = b"migprof.schema_version"
PARTIAL_SUFFIX = ".partial"

_PARQUET_MAGIC = b"PAR1"
_ARROW_FILE_MAGIC = b"ARROW1"
_ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"  # continuation marker of every IPC message

# pandas dtypes for arrow types on read (dictionary columns become category by themselves)
_TYPES = {
    pa.int64(): pd.Int64Dtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.string(): pd.StringDtype(),
    pa.large_string(): pd.StringDtype(),
}


# ---------------------------------------------------------------------------- metadata


def host_meta() -> dict[str, Any]:
    """What the host says about itself: name, kernel, machine, migprof version."""
    u = platform.uname()
    return {
        "host": u.node,
        "kernel": u.release,
        "machine": u.machine,
        "migprof_version": __version__,
        "schema_version": ev.SCHEMA_VERSION,
        "created_ns": time.time_ns(),
    }


def _schema_with_meta(meta: dict[str, Any], version: int = ev.SCHEMA_VERSION) -> pa.Schema:
    md = dict(ev.ARROW_SCHEMA.metadata or {})
    md[VERSION_KEY] = str(version).encode()
    md[META_KEY] = json.dumps(meta, default=str, sort_keys=True).encode()
    return ev.ARROW_SCHEMA.with_metadata(md)


def frame_to_table(df: pd.DataFrame) -> pa.Table:
    """One schema frame as an Arrow table of ARROW_SCHEMA (no pandas metadata)."""
    t = pa.Table.from_pandas(df, schema=ev.ARROW_SCHEMA, preserve_index=False)
    return t.replace_schema_metadata(ev.ARROW_SCHEMA.metadata)


def _meta_in(df: pd.DataFrame) -> dict[str, Any]:
    """Metadata the events themselves carry: origins, and migration parameters per side
    (the last ``qmp_params`` row), so every recorder stores them without being asked."""
    out: dict[str, Any] = {"origins": [str(o) for o in df["origin"].dropna().unique()]}
    ev_col = df["event"]
    hit = (ev_col == ev.QMP_PARAMS).to_numpy(dtype=bool, na_value=False)
    if hit.any():
        params: dict[str, Any] = {}
        for side, detail in zip(df["side"][hit].astype("string"), df["detail"][hit], strict=True):
            d = _json_meta(detail.encode() if isinstance(detail, str) else None)
            if d:
                params[str(side) if side is not pd.NA else "unknown"] = d.get("return", d)
        if params:
            out["migration_params"] = params
    return out


def _concat_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate schema frames fast (pd.concat; categories re-made once at the end).

    Checked once per flush, not per write: a frame that skipped ``conform()`` (missing
    columns, other dtypes) is conformed here, so one bad source never breaks a flush.
    """
    cols = list(ev.COLUMNS)
    frames = [f if list(f.columns) == cols else ev.conform(f) for f in frames]
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    try:
        ev.validate(df, "recording")
    except ValueError:
        df = ev.conform(df)
    for col in ev.CAT_COLUMNS:
        if not isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype("category")
    return df


def qemu_version_of(meta: dict[str, Any]) -> str | None:
    """The QEMU version a recording or lab run names (QMP greeting first, then run.json)."""
    qv = meta.get("qemu_version")
    if isinstance(qv, str) and qv:
        return qv
    run = meta.get("run")
    q = run.get("qemu") if isinstance(run, dict) else None
    if isinstance(q, dict):
        for k in ("qmp_version", "version"):
            if q.get(k):
                return str(q[k])
    for r in meta.get("recordings") or []:
        if isinstance(r, dict) and r.get("qemu_version"):
            return str(r["qemu_version"])
    return None


@functools.lru_cache(maxsize=1)
def model_key() -> str:
    """Fingerprint of the code that turns events into a report (model + event schema + registry).

    A recording's stored summary is used only while this matches, so a changed model
    never serves stale numbers.
    """
    import profiler.model as model
    from profiler import registry

    h = hashlib.sha256(f"{__version__}/{ev.SCHEMA_VERSION}".encode())
    # model/compare.py compares reports and builds none: changing it keeps the summaries
    for f in sorted(f for f in Path(model.__file__).parent.glob("*.py") if f.name != "compare.py") + [
            Path(ev.__file__), Path(registry.__file__)]:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def summarise(df: pd.DataFrame, meta: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The report of a recording's events (``migprof.report/1`` JSON), or None if the model fails."""
    try:
        from profiler.model import build_report
        from profiler.model.results import to_json

        report = build_report(df, inputs=[where], meta=meta)
        return to_json(report)
    except Exception as e:  # a summary is an optimisation; the events are what count
        log.warning("%s: no summary stored (%s: %s)", where, type(e).__name__, e)
        return None


# ---------------------------------------------------------------------------- writer


class RecordingWriter:
    """Write events to ``path``: an Arrow IPC stream at ``path.partial`` while open,
    finalised to Parquet at ``path`` by :meth:`close`.

    ``write`` only buffers; a batch reaches the file every ``flush_rows`` events, or
    at most ``flush_interval_s`` after the oldest buffered event (a small thread sees
    to that when writes stop arriving). An I/O error (disk full, file size limit)
    stops the recording cleanly: ``error`` says why, everything flushed before stays
    readable, later events are counted in ``dropped``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: dict[str, Any] | None = None,
        *,
        flush_rows: int = 65536,
        flush_interval_s: float = 0.5,
        finalise: bool = True,
        summary: bool = True,
    ):
        self.path = Path(path)
        self.partial_path = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.meta: dict[str, Any] = host_meta()
        self.meta.update(meta or {})
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.finalise = finalise
        self.summary = summary
        self.rows_written = 0  # events that reached the file
        self.batches_written = 0
        self.dropped = 0  # events refused after an I/O error
        self.error: str | None = None
        self.final_path: Path | None = None  # the file left behind after close()
        self._buf: list[pd.DataFrame] = []
        self._buf_rows = 0
        self._buf_since: float | None = None  # monotonic time of the oldest buffered event
        self._meta_dirty = False
        self._lock = threading.Lock()
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sink = pa.OSFile(str(self.partial_path), "wb")
        try:
            self._writer = pa.ipc.new_stream(self._sink, _schema_with_meta(self.meta))
            self._sink.flush()
        except OSError as e:
            self._fail(e)
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="recording-flush", daemon=True)
        self._ticker.start()

    # context manager: a clean exit and an error exit both finalise what was written
    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update_meta(self, **kv: Any) -> None:
        """Merge metadata learnt while recording; it rides on the next flushed batch."""
        with self._lock:
            self.meta.update(kv)
            self._meta_dirty = True
            if self._buf_since is None:
                self._buf_since = time.monotonic()

    def write(self, df: pd.DataFrame) -> None:
        """Buffer one schema frame (``events.conform`` output); flushes when due."""
        n = len(df)
        if n == 0:
            return
        with self._lock:
            if self.error is not None or self._closed:
                self.dropped += n
                return
            self._buf.append(df)
            self._buf_rows += n
            if self._buf_since is None:
                self._buf_since = time.monotonic()
            if self._buf_rows >= self.flush_rows:
                self._flush_locked()

    def flush(self) -> None:
        """Write whatever is buffered now."""
        with self._lock:
            self._flush_locked()

    def _tick(self) -> None:
        step = min(0.1, self.flush_interval_s / 2)
        while not self._stop.wait(step):
            with self._lock:
                if (
                    self._buf_since is not None
                    and time.monotonic() - self._buf_since >= self.flush_interval_s
                ):
                    self._flush_locked()

    def _flush_locked(self) -> None:
        if self.error is not None or (not self._buf and not self._meta_dirty):
            return
        frames, self._buf = self._buf, []
        rows, self._buf_rows = self._buf_rows, 0
        self._buf_since = None
        if frames:
            df = _concat_frames(frames)
            self._learn(df)
            table = frame_to_table(df).combine_chunks()
            batches = table.to_batches() or [pa.RecordBatch.from_pylist([], schema=ev.ARROW_SCHEMA)]
        else:
            batches = [pa.RecordBatch.from_pylist([], schema=ev.ARROW_SCHEMA)]
        custom = None
        if self._meta_dirty:
            custom = {META_KEY: json.dumps(self.meta, default=str, sort_keys=True).encode()}
            self._meta_dirty = False
        try:
            for i, b in enumerate(batches):
                self._writer.write_batch(b, custom_metadata=custom if i == 0 else None)
            self._sink.flush()
        except OSError as e:
            self.dropped += rows
            self._fail(e)
            return
        self.rows_written += rows
        self.batches_written += len(batches)

    def _learn(self, df: pd.DataFrame) -> None:
        """Merge what the events say about the recording into its metadata (once a flush)."""
        for k, v in _meta_in(df).items():
            if k == "origins":
                v = sorted(set(self.meta.get("origins", [])) | set(v))
            elif k == "migration_params":
                v = {**self.meta.get("migration_params", {}), **v}
            if self.meta.get(k) != v:
                self.meta[k] = v
                self._meta_dirty = True

    def _fail(self, e: OSError) -> None:
        self.error = f"{self.partial_path}: {e.strerror or e}"
        log.warning("recording stopped: %s; kept %d events", self.error, self.rows_written)
        with contextlib.suppress(OSError):
            self._sink.close()

    def close(self) -> Path:
        """Flush, end the stream and finalise to Parquet; returns the file left behind.

        When the disk filled up, or Parquet cannot be written, the stream file stays
        (it reads back the same way) and ``final_path`` names it.
        """
        with self._lock:
            if self._closed:
                return self.final_path or self.partial_path
            self._flush_locked()
            self._closed = True
        self._stop.set()
        self._ticker.join(timeout=2)
        if self.error is None:
            try:
                self._writer.close()  # writes the end-of-stream marker
                self._sink.close()
            except OSError as e:
                self._fail(e)
        self.final_path = self.partial_path
        if self.finalise and self.error is None:
            try:
                finalise(self.partial_path, self.path, summary=self.summary)
                self.final_path = self.path
            except OSError as e:
                self.error = f"{self.path}: could not finalise to Parquet ({e.strerror or e}); the stream {self.partial_path} keeps every event"
                log.warning("%s", self.error)
        return self.final_path


def finalise(stream_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *,
             summary: bool = True) -> Path:
    """Turn an Arrow IPC stream recording into a Parquet file (atomic rename); remove the stream.

    With ``summary``, the report of the events is stored beside them (``migprof.summary``)
    so ``compare`` can skip rebuilding it while the model code is unchanged.
    """
    stream_path, out_path = Path(stream_path), Path(out_path)
    meta = {}
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        with pa.OSFile(str(stream_path), "rb") as f:
            reader = pa.ipc.open_stream(f)
            version = int((reader.schema.metadata or {}).get(VERSION_KEY, b"0"))
            meta = _json_meta((reader.schema.metadata or {}).get(META_KEY))
            tables = []
            for batch, custom in _iter_batches(reader):
                if custom and META_KEY in custom:
                    meta.update(_json_meta(custom[META_KEY]))
                tables.append(batch)
        # one dictionary per column for the whole file: unify the per-batch dictionaries
        table = pa.Table.from_batches(tables, schema=reader.schema).unify_dictionaries()
        md = _schema_with_meta(meta, version).metadata
        if summary and version == ev.SCHEMA_VERSION:
            rep = summarise(table_to_frame(table, version, str(out_path)), meta, str(out_path))
            if rep is not None:
                md[SUMMARY_KEY] = json.dumps({"model_key": model_key(), "report": rep},
                                             default=str).encode()
        table = table.replace_schema_metadata(md)
        # page checksums: a recording damaged in transit is refused, never read as garbage
        pq.write_table(table, str(tmp), compression="zstd", row_group_size=1 << 20,
                       write_page_checksum=True)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    stream_path.unlink(missing_ok=True)
    return out_path


def _iter_batches(reader: pa.ipc.RecordBatchStreamReader) -> Iterator[tuple[pa.RecordBatch, Any]]:
    while True:
        try:
            yield reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            return


def _json_meta(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        v = json.loads(raw)
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


# ---------------------------------------------------------------------------- reader


def sniff(path: str | os.PathLike[str]) -> str | None:
    """'parquet', 'arrow-file', 'arrow-stream', or None when ``path`` is not one of those."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except (IsADirectoryError, FileNotFoundError, PermissionError):
        return None
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if head.startswith(_ARROW_FILE_MAGIC):
        return "arrow-file"
    # a simpletrace file starts with eight 0xff bytes; an IPC message length never is -1
    if head.startswith(_ARROW_STREAM_MAGIC) and head[4:8] != _ARROW_STREAM_MAGIC:
        return "arrow-stream"
    return None


def is_recording(path: str | os.PathLike[str]) -> bool:
    """True for a file that looks like Parquet or Arrow IPC (a migprof recording or foreign)."""
    return sniff(path) is not None


def read_summary(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(report JSON, meta)`` stored in a finalised recording, read from its footer only;
    None when there is none or it was made by other model code (then rebuild it)."""
    if sniff(path) != "parquet":
        return None
    try:
        md = pq.read_schema(str(path)).metadata or {}
    except (pa.ArrowInvalid, OSError):
        return None
    raw = md.get(SUMMARY_KEY)
    if not raw or VERSION_KEY not in md or md[VERSION_KEY] != str(ev.SCHEMA_VERSION).encode():
        return None
    s = _json_meta(raw)
    if s.get("model_key") != model_key() or not isinstance(s.get("report"), dict):
        return None
    try:  # the summary stands for the events only if they are intact (page checksums)
        pq.read_table(str(path), page_checksum_verification=True)
    except (pa.ArrowInvalid, OSError):
        return None
    meta = _json_meta(md.get(META_KEY))
    meta["stored_schema_version"] = int(md[VERSION_KEY])
    return s["report"], meta


def read_recording(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any], list[str]]:
    """Read a recording (stream, Arrow file or Parquet): ``(events, meta, warnings)``.

    A stream cut short (SIGKILL, disk full) yields every complete batch and a warning
    naming the byte offset where it breaks. Older schema versions are upgraded; a newer
    one, a foreign Arrow/Parquet file or anything else raises ``InputError``.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(str(p), "no such file")
    if p.is_dir():
        raise InputError(str(p), "is a directory, not a recording")
    kind = sniff(p)
    warnings: list[str] = []
    if kind is None:
        size = p.stat().st_size
        what = "empty file" if size == 0 else "not a migprof recording (neither Parquet nor Arrow IPC)"
        raise InputError(str(p), what)
    try:
        if kind == "parquet":
            table = pq.read_table(str(p), page_checksum_verification=True)
            schema_md = table.schema.metadata or {}
            extra: dict[str, Any] = {}
        elif kind == "arrow-file":
            with pa.memory_map(str(p)) as src:
                table = pa.ipc.open_file(src).read_all()
            schema_md = table.schema.metadata or {}
            extra = {}
        else:
            table, schema_md, extra, warnings = _read_stream(p)
    except InputError:
        raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as e:
        raise InputError(str(p), f"unreadable {kind.replace('-', ' ')}: {_first_line(e)}") from None
    if VERSION_KEY not in schema_md:
        raise InputError(
            str(p), f"a {kind.replace('-', ' ')} file, but not a migprof recording "
            "(no migprof.schema_version in its metadata)", field="migprof.schema_version")
    try:
        version = int(schema_md[VERSION_KEY])
    except ValueError:
        raise InputError(str(p), f"bad schema version {schema_md[VERSION_KEY]!r}",
                         field="migprof.schema_version") from None
    if version > ev.SCHEMA_VERSION:
        raise InputError(
            str(p), f"recording schema version {version} is newer than this migprof "
            f"({__version__}) reads (up to {ev.SCHEMA_VERSION}); upgrade migprof",
            field="migprof.schema_version")
    meta = _json_meta(schema_md.get(META_KEY))
    meta.update(extra)
    df = table_to_frame(table, version, str(p))
    meta.setdefault("schema_version", version)
    meta["stored_schema_version"] = version
    if version < ev.SCHEMA_VERSION:
        meta["upgraded_from"] = version
    return df, meta, warnings


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def _read_stream(p: Path) -> tuple[pa.Table, dict, dict[str, Any], list[str]]:
    """Every complete batch of an IPC stream; stops at the first broken one."""
    warnings: list[str] = []
    meta: dict[str, Any] = {}
    batches: list[pa.RecordBatch] = []
    size = p.stat().st_size
    with pa.OSFile(str(p), "rb") as src:
        try:
            reader = pa.ipc.open_stream(src)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(str(p), f"unreadable Arrow IPC stream at byte 0: {_first_line(e)}") from None
        schema = reader.schema
        good = src.tell()
        clean_end = False
        while True:
            try:
                batch, custom = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                clean_end = True
                break
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as e:
                warnings.append(
                    f"{p}: recording breaks at byte {good} of {size} ({_first_line(e)}); "
                    f"kept {sum(b.num_rows for b in batches)} events from {len(batches)} complete batches")
                break
            if custom and META_KEY in custom:
                meta.update(_json_meta(custom[META_KEY]))
            batches.append(batch)
            good = src.tell()
        if clean_end and good < size and not _ends_with_eos(p, good, size):
            # a stream that stops at a message boundary without end-of-stream marker
            warnings.append(f"{p}: recording was not closed (no end-of-stream marker at byte {good}); "
                            "the recorder was probably killed; kept every complete batch")
        elif clean_end and good == size:
            warnings.append(f"{p}: recording was not closed (it ends at byte {size} without an "
                            "end-of-stream marker); the recorder was probably killed; kept every complete batch")
    table = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
    return table, dict(schema.metadata or {}), meta, warnings


def _ends_with_eos(p: Path, good: int, size: int) -> bool:
    with open(p, "rb") as f:
        f.seek(good)
        tail = f.read(16)
    return tail in (b"\xff\xff\xff\xff\x00\x00\x00\x00", b"\x00\x00\x00\x00")


def table_to_frame(table: pa.Table, version: int = ev.SCHEMA_VERSION, where: str = "recording") -> pd.DataFrame:
    """An Arrow table of schema ``version`` as a frame of the current schema."""
    df = table.to_pandas(types_mapper=_TYPES.get, ignore_metadata=True)
    for v in range(version, ev.SCHEMA_VERSION):
        df = UPGRADES[v](df)
    unknown = [c for c in df.columns if c not in ev.COLUMNS]
    if unknown:
        df = df.drop(columns=unknown)
    try:
        df = ev.conform(df)
        ev.validate(df, where)
    except (TypeError, ValueError) as e:
        col = _column_in(str(e))
        raise InputError(where, f"column does not fit the event schema: {_first_line(e)}", field=col) from None
    return df


def _column_in(msg: str) -> str | None:
    for c in ev.COLUMNS:
        if repr(c) in msg:
            return c
    return None


# ---------------------------------------------------------------------------- upgrades
# UPGRADES[v] turns a frame of schema version v into version v + 1.


def _upgrade_v0(df: pd.DataFrame) -> pd.DataFrame:
    """v0, the prototype layout: ``ts_ns`` (epoch ns), ``name`` for the event,
    ``value`` for the main byte count, ``text`` for the raw line, sides ``src``/``dst``,
    no raw clock. v1 renames those, spells sides out and fills ``clock``/``clock_ns``.
    """
    df = df.rename(columns={"ts_ns": "t_ns", "name": "event", "value": "bytes", "text": "raw"})
    if "side" in df.columns:
        side = df["side"].astype("string").replace({"src": ev.Side.SOURCE.value, "dst": ev.Side.DESTINATION.value})
        df["side"] = side.fillna(ev.Side.UNKNOWN.value).astype("category")
    if "t_ns" in df.columns:
        t = df["t_ns"].astype("Int64")
        df["clock_ns"] = t
        clock = np.where(t.notna().to_numpy(dtype=bool), ev.Clock.REALTIME.value, ev.Clock.NONE.value)
        df["clock"] = pd.Categorical(clock)
    return df


# v1 -> v2: the meanings v1 kept in ``count``/``ret`` move to their named columns
UPGRADES: dict[int, Callable[[pd.DataFrame], pd.DataFrame]] = {0: _upgrade_v0, 1: ev.upgrade_v1}


def write_recording(path: str | os.PathLike[str], df: pd.DataFrame, meta: dict[str, Any] | None = None) -> Path:
    """Write a whole frame as a finalised recording (used by import and tests)."""
    with RecordingWriter(path, meta, flush_rows=1 << 20, flush_interval_s=3600) as w:
        w.write(df)
    if w.error:
        raise OSError(w.error)
    return w.final_path or Path(path)
