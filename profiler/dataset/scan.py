"""List and check a dataset's files: complete units only, foreign files named and skipped,
versions older than this migprof (to upgrade) or newer (refused)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from profiler import events as ev
from profiler.dataset import schema as S
from profiler.errors import InputError
from profiler.store import VERSION_KEY

HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TEMP_SUFFIX = ".tmp"  # a unit's file while it is written: ".<unit>.parquet.tmp"


@dataclass(frozen=True, slots=True)
class DataFile:
    """One Parquet file of a table: where it sits and what its footer says."""

    table: str
    host: str
    date: str
    unit: str
    path: Path
    version: int | None = None  # dataset layout version (None: footer not read)
    event_version: int | None = None  # events files: event schema version
    recordings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Scan:
    """What a dataset holds, table by table (``files`` has checked, complete units only)."""

    root: Path
    files: dict[str, tuple[DataFile, ...]]
    checked: tuple[str, ...]  # tables whose footers were read
    foreign: tuple[tuple[str, str], ...] = ()  # (path, why): named, skipped, counted
    incomplete: tuple[str, ...] = ()  # units missing from some table (an add that did not finish)
    stale: tuple[DataFile, ...] = ()  # files at an older version: upgrade them
    temp: tuple[str, ...] = ()  # leftover temp files of an add that died
    units: int = 0

    @property
    def warnings(self) -> list[str]:
        out = [f"{p}: {why}; skipped" for p, why in self.foreign[:20]]
        if len(self.foreign) > 20:
            out.append(f"{self.root}: {len(self.foreign) - 20} more foreign files skipped")
        if self.foreign:
            out.append(f"{self.root}: skipped {len(self.foreign)} foreign file(s)")
        if self.incomplete:
            out.append(f"{self.root}: {len(self.incomplete)} unit(s) missing from some tables "
                       f"(an add that did not finish; add the recording again): "
                       + ", ".join(self.incomplete[:5]) + (" ..." if len(self.incomplete) > 5 else ""))
        return out

    def stale_error(self) -> InputError | None:
        """The refusal for files at an older version than this migprof reads (None: none)."""
        if not self.stale:
            return None
        f = self.stale[0]
        what = (f"event schema v{f.event_version} (this migprof: v{ev.SCHEMA_VERSION})"
                if f.event_version is not None and f.event_version < ev.SCHEMA_VERSION
                else f"dataset v{f.version} (this migprof: v{S.VERSION})")
        tables = sorted({x.table for x in self.stale})
        return InputError(str(self.root),
                          f"mixed schema versions: {len(self.stale)} file(s) of {', '.join(tables)} "
                          f"were written by an older migprof, e.g. {f.path} ({what}); rewrite them "
                          f"with `migprof query {self.root} --upgrade`")


def check_root(root: str | Path, *, create: bool = False) -> Path:
    """The dataset directory, refused with one line when it is missing or not a dataset.

    With ``create``, a missing or empty directory becomes a new dataset.
    """
    p = Path(root)
    marker = p / S.MARKER
    if not p.exists():
        if not create:
            raise InputError(str(p), "no such dataset directory")
        p.mkdir(parents=True)
    if not p.is_dir():
        raise InputError(str(p), "not a directory (a dataset is a directory)")
    if not marker.exists():
        if create and not any(p.iterdir()):
            _write_marker(p)
            return p
        raise InputError(str(p), f"not a migprof dataset (no {S.MARKER}; "
                         "make one with `migprof import ... --dataset DIR`)")
    try:
        m = json.loads(marker.read_text())
        version = int(m["version"])
        assert m["format"] == S.FORMAT
    except (ValueError, KeyError, TypeError, AssertionError, OSError):
        raise InputError(str(marker), f"not a migprof dataset marker (expected JSON with "
                         f"format {S.FORMAT!r} and version)") from None
    if version > S.VERSION:
        raise InputError(str(marker), f"dataset version {version} is newer than this migprof "
                         f"reads (up to {S.VERSION}); upgrade migprof", field="version")
    return p


def marker_version(root: str | Path) -> int:
    """The dataset version its marker names (the layout of the files when it was made or
    last upgraded)."""
    return int(json.loads((Path(root) / S.MARKER).read_text())["version"])


def mark_version(root: str | Path) -> None:
    """Set the marker to this migprof's version (after an upgrade rewrote every old file)."""
    p = Path(root)
    if marker_version(p) < S.VERSION:
        _write_marker(p)


def _write_marker(p: Path) -> None:
    from profiler import __version__

    tmp = p / f".{S.MARKER}{TEMP_SUFFIX}"
    tmp.write_text(json.dumps({"format": S.FORMAT, "version": S.VERSION, "tables": list(S.TABLES),
                               "partitioning": list(S.PARTITIONS),
                               "migprof_version": __version__}, indent=1) + "\n")
    tmp.replace(p / S.MARKER)


def _hidden(name: str) -> bool:
    # what Spark, pyarrow and Hive skip too: _SUCCESS, _temporary, .crc, our own temp files
    return name.startswith(("_", "."))


def _listing(root: Path, tables: Iterable[str]) -> tuple[dict[str, dict[tuple[str, str, str], Path]], list, list]:
    """The files of ``tables`` by (host, date, unit), foreign entries, leftover temp files."""
    found: dict[str, dict[tuple[str, str, str], Path]] = {t: {} for t in tables}
    foreign: list[tuple[str, str]] = []
    temp: list[str] = []
    for top in sorted(root.iterdir()):
        if _hidden(top.name):
            continue
        if top.name not in S.TABLES:
            foreign.append((str(top), "not a table of a migprof dataset"))
            continue
        if not top.is_dir():
            foreign.append((str(top), "a file where a table directory belongs"))
            continue
        if top.name not in found:
            continue
        for hd in sorted(top.iterdir()):
            if _hidden(hd.name):
                continue
            host = hd.name.removeprefix("host=")
            if not (hd.is_dir() and hd.name.startswith("host=") and HOST_RE.match(host)):
                foreign.append((str(hd), "not a host=HOST partition"))
                continue
            for dd in sorted(hd.iterdir()):
                if _hidden(dd.name):
                    continue
                date = dd.name.removeprefix("date=")
                if not (dd.is_dir() and dd.name.startswith("date=") and DATE_RE.match(date)):
                    foreign.append((str(dd), "not a date=YYYY-MM-DD partition"))
                    continue
                for f in sorted(dd.iterdir()):
                    if f.name.startswith(".") and f.name.endswith(TEMP_SUFFIX):
                        temp.append(str(f))
                    elif _hidden(f.name):
                        continue
                    elif f.name.endswith(".parquet") and f.is_file():
                        found[top.name][(host, date, f.name[: -len(".parquet")])] = f
                    else:
                        foreign.append((str(f), "not a Parquet file"))
    return found, foreign, temp


def _kv_fast(path: Path) -> dict[bytes, bytes] | None:
    """The two keys this dataset writes, found in the raw footer bytes; None when not both
    are there as a Thrift KeyValue (then pyarrow parses the whole footer).

    pyarrow's full footer parse costs ~0.25 ms of CPU a file (every column's statistics,
    the Arrow schema), and a query checks every file of the tables it names; two reads and
    a byte search cost a tenth of that. A match cannot be a chance one: the pattern is a
    KeyValue's field header, the key's length and the key, then the value's header.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(-8, os.SEEK_END)
            tail = fh.read(8)
            n = int.from_bytes(tail[:4], "little")
            if tail[4:] != b"PAR1" or n <= 0:
                return None
            fh.seek(-8 - n, os.SEEK_END)
            footer = fh.read(n)
    except OSError:
        return None
    out = {}
    for key in (S.FILE_KEY, VERSION_KEY):
        i = footer.find(b"\x18" + bytes([len(key)]) + key + b"\x18")
        if i < 0:
            continue
        j = i + len(key) + 3
        size = shift = 0
        while j < len(footer):  # the value's length: an unsigned varint
            b = footer[j]
            size |= (b & 0x7F) << shift
            j += 1
            shift += 7
            if not b & 0x80:
                break
        out[key] = footer[j: j + size]
    return out if S.FILE_KEY in out else None


def read_footer(f: DataFile) -> DataFile | str:
    """The file with its footer's versions, or why it is not a file of this dataset."""
    md = _kv_fast(f.path)
    if md is None:
        try:
            md = pq.read_metadata(str(f.path)).metadata or {}
        except (pa.ArrowInvalid, OSError) as e:
            return f"unreadable Parquet ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"
    raw = md.get(S.FILE_KEY)
    if raw is None:
        return "a Parquet file, but not part of a migprof dataset (no migprof.dataset in its metadata)"
    try:
        info = json.loads(raw)
        version = int(info["version"])
        table = info["table"]
        recs = tuple(str(r) for r in info.get("recordings") or ())
    except (ValueError, KeyError, TypeError):
        return "bad migprof.dataset metadata"
    if info.get("format") != S.FORMAT or table != f.table:
        return f"a migprof dataset file of table {table!r} in the {f.table} directory"
    if version > S.VERSION:
        raise InputError(str(f.path), f"dataset file version {version} is newer than this "
                         f"migprof reads (up to {S.VERSION}); upgrade migprof", field="migprof.dataset")
    ev_version = None
    if f.table == "events":
        try:
            ev_version = int(md.get(VERSION_KEY, b"-1"))
        except ValueError:
            ev_version = -1
        if ev_version < 0:
            return "an events file without migprof.schema_version"
        if ev_version > ev.SCHEMA_VERSION:
            raise InputError(str(f.path), f"recording schema version {ev_version} is newer than "
                             f"this migprof reads (up to {ev.SCHEMA_VERSION}); upgrade migprof",
                             field="migprof.schema_version")
    return DataFile(f.table, f.host, f.date, f.unit, f.path, version, ev_version, recs)


def scan(root: str | Path, tables: Iterable[str] = S.TABLES) -> Scan:
    """List ``tables`` of the dataset at ``root`` and read their files' footers (only the
    tables a query names: a fleet has thousands of files in each).

    A unit counts when the migrations table and every table listed have its file: an add
    renames its files into place one by one, migrations last, so a crash between leaves
    it incomplete, and it is left out (``incomplete`` names it when the tables listed
    show it). A file that is not the dataset's is named in ``foreign`` and skipped. A
    version newer than this migprof is refused; an older one lands in ``stale``.
    ``files`` has an entry for each table listed: ``tables`` and migrations.
    """
    p = check_root(root)
    tables = tuple(t for t in S.TABLES if t in set(tables))
    listed = tuple(t for t in S.TABLES if t in tables or t == "migrations")
    found, foreign, temp = _listing(p, listed)
    keys = [set(found[t]) for t in listed]
    complete = set.intersection(*keys)
    partial = set.union(*keys) - complete
    incomplete = set()
    for key in sorted(partial):  # a foreign file with a unit-like name is foreign, not an add
        for t in listed:
            if key in found[t]:
                r = read_footer(DataFile(t, *key, found[t][key]))
                if isinstance(r, str):
                    foreign.append((str(found[t][key]), r))
                else:
                    incomplete.add("/".join(key))
    files: dict[str, tuple[DataFile, ...]] = {}
    stale: list[DataFile] = []
    for t in listed:
        out = []
        for key in sorted(complete):
            f = DataFile(t, *key, found[t][key])
            if t in tables:
                r = read_footer(f)
                if isinstance(r, str):
                    foreign.append((str(f.path), r))
                    continue
                f = r
                if f.version < S.VERSION or (f.event_version is not None and f.event_version < ev.SCHEMA_VERSION):
                    stale.append(f)
            out.append(f)
        files[t] = tuple(out)
    return Scan(p, files, tables, tuple(foreign), tuple(sorted(incomplete)), tuple(stale),
                tuple(temp), len(complete))


@dataclass(frozen=True, slots=True)
class Check:
    """The result of checking a whole dataset (``migprof query DIR --check``)."""

    scan: Scan
    files: dict[str, int]
    rows: dict[str, int]
    duplicates: dict[str, int] = field(default_factory=dict)  # recording id -> units holding it

    @property
    def ok(self) -> bool:
        s = self.scan
        return not (s.foreign or s.incomplete or s.stale or self.duplicates)

    def to_json(self) -> dict:
        s = self.scan
        return {"dataset": str(s.root), "version": S.VERSION, "event_schema_version": ev.SCHEMA_VERSION,
                "units": s.units, "files": self.files, "rows": self.rows,
                "foreign": [{"path": p, "why": w} for p, w in s.foreign],
                "incomplete_units": list(s.incomplete), "stale": [str(f.path) for f in s.stale],
                "temp_files": list(s.temp), "duplicate_recordings": self.duplicates, "ok": self.ok}


def check(root: str | Path) -> Check:
    """Read every footer, count rows, and find recordings added twice (in two units)."""
    s = scan(root)
    files = {t: len(fs) for t, fs in s.files.items()}
    rows = {t: sum(pq.read_metadata(str(f.path)).num_rows for f in fs) for t, fs in s.files.items()}
    seen: dict[str, list[str]] = {}
    for f in s.files["recordings"]:
        for r in f.recordings:
            seen.setdefault(r, []).append(f"{f.host}/{f.date}/{f.unit}")
    dups = {r: len(u) for r, u in seen.items() if len(u) > 1}
    return Check(s, files, rows, dups)
