"""Load any mix of inputs (QEMU logs, simpletrace files, lab runs, recordings, JSONL) onto one timeline."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from profiler import events
from profiler.deferred import pd
from profiler.errors import InputError

SNIFF_BYTES = 4096
SIMPLETRACE_HEAD = bytes.fromhex("ffffffffffffffff") + (0xF2B177CB0AA429B4).to_bytes(8, "little")
MAX_WARNINGS = 100


@dataclass
class Loaded:
    """All inputs on one timeline, with what was dropped and why."""

    events: pd.DataFrame
    malformed: int = 0
    skipped: int = 0
    lines: int = 0
    warnings: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    rows: int = 0  # rows read from all inputs, before ``keep`` (== len(events) without it)


Progress = Callable[[str, int], None]  # (file, bytes of it read so far), after each chunk
_ROWS = "migprof_rows"  # frame.attrs: rows the input had before ``keep``


def _size(frame: pd.DataFrame) -> int:
    return int(frame.attrs.get(_ROWS, len(frame)))


def sniff(path: str) -> str:
    """Kind of a file from its content (name as a tie-break): simpletrace, parquet, arrow,
    jsonl, log, empty, binary."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if not head:
        return "empty"
    if head.startswith(SIMPLETRACE_HEAD):
        return "simpletrace"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x1f\x8b"):
        return "log"  # gzip: QEMU logs are stored compressed (read_log opens them)
    if head.startswith(b"ARROW1"):
        return "arrow"
    # an Arrow IPC stream (a live recording) starts with the 0xffffffff continuation
    # marker and a message length (never -1, which tells it from simpletrace's ~0 id)
    if head[:4] == b"\xff\xff\xff\xff" and head[4:8] != b"\xff\xff\xff\xff":
        return "arrow"
    if path.endswith((".parquet",)):
        return "parquet"
    if path.endswith((".arrow", ".feather", ".ipc")):
        return "arrow"
    if b"\x00" in head:
        return "binary"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # a multi-byte character cut at the sniff boundary is still text
        if e.start < len(head) - 4:
            return "binary"
    if path.endswith(".jsonl") or head.lstrip().startswith(b"{"):
        return "jsonl"
    return "log"


def _read_jsonl(path: str, side: str | None) -> tuple[pd.DataFrame, list[str], int]:
    """Schema rows, one JSON object per line (``sources.jsonl``); bad lines are warnings."""
    from profiler.sources.jsonl import read_events_jsonl

    bad: list[str] = []
    df = read_events_jsonl(path, bad_lines=bad)
    if len(df):
        if side and df["side"].isna().all():
            df["side"] = side
        if df["origin"].isna().all():
            df["origin"] = events.Origin.LAB.value
        df = events.conform(df)
    return df, bad[:MAX_WARNINGS], len(bad)


def _side_of(path: str, sides: list[str] | None, i: int) -> str | None:
    if sides and i < len(sides) and sides[i]:
        s = sides[i]
        if s not in {x.value for x in events.Side}:
            raise InputError(path, f"unknown side {s!r} (source, destination or unknown)")
        return s
    return None


def _load_log(path: str, side: str | None, out: Loaded, keep: Collection[str] | None = None,
              progress: Progress | None = None) -> pd.DataFrame:
    from profiler.sources.qemu_log import read_log

    res = read_log(path, side=side, keep=keep,
                   progress=(lambda done: progress(path, done)) if progress is not None else None)
    out.warnings.extend(res.warnings)
    out.malformed += res.malformed
    out.skipped += res.skipped
    out.lines += res.lines
    out.inputs.append({"path": path, "kind": "qemu-log", "side": res.side, "lines": res.lines,
                       "events": res.events, "skipped": res.skipped, "malformed": res.malformed})
    if len(res.frame) + res.dropped == 0:
        raise InputError(path, f"no QEMU trace lines in {res.lines} lines (is tracing enabled, "
                               "e.g. -trace enable=migrat*,vfio_*?)")
    res.frame.attrs[_ROWS] = len(res.frame) + res.dropped
    return res.frame


def _load_simpletrace(path: str, side: str | None, out: Loaded) -> pd.DataFrame:
    from profiler.sources.simpletrace import read_simpletrace

    res = read_simpletrace(path, side=side)
    out.warnings.extend(res.warnings)
    out.malformed += res.malformed
    out.inputs.append({"path": path, "kind": "simpletrace", "side": res.side, "records": res.records,
                       "events": len(res.frame), "dropped": res.dropped, "malformed": res.malformed})
    if len(res.frame) == 0:
        raise InputError(path, "simpletrace file holds no event records")
    return res.frame


def _load_recording(path: str, out: Loaded) -> pd.DataFrame:
    try:
        from profiler.store import read_recording
    except ImportError:
        raise InputError(path, "is a recording, but this build has no recording support "
                               "(profiler.store missing)") from None
    frame, meta, warnings = read_recording(path)
    out.warnings.extend(warnings)
    out.meta.setdefault("recordings", []).append({"path": path, **(meta or {})})
    if isinstance((meta or {}).get("libvirt_jobinfo"), dict):  # a `lab --libvirt --record`
        out.meta["libvirt_jobinfo"] = meta["libvirt_jobinfo"]
    out.inputs.append({"path": path, "kind": "recording", "events": len(frame)})
    return events.conform(frame)


def _load_run_dir(path: str, out: Loaded, keep: Collection[str] | None = None,
                  progress: Progress | None = None) -> list[pd.DataFrame]:
    """A lab run directory: run.json, source.log, destination.log, events.jsonl."""
    d = Path(path)
    frames = []
    try:
        out.meta["run"] = json.loads((d / "run.json").read_text())
    except (OSError, ValueError) as e:
        out.warnings.append(f"{d / 'run.json'}: unreadable ({e})")
    for name, side in (("source.log", "source"), ("destination.log", "destination")):
        p = d / name
        if not p.exists() and (d / (name + ".gz")).exists():
            p = d / (name + ".gz")
        if p.exists():
            try:
                frames.append(_load_log(str(p), side, out, keep, progress))
            except InputError as e:
                out.warnings.append(str(e))
    # events.jsonl: QMP, sock_diag and lab marks; bpf.jsonl: the BPF collector (VFIO lab)
    for p in (d / "events.jsonl", d / "bpf.jsonl"):
        if p.exists():
            df, warnings, bad = _read_jsonl(str(p), None)
            out.warnings.extend(warnings)
            out.malformed += bad
            out.inputs.append({"path": str(p), "kind": "jsonl", "events": len(df), "malformed": bad})
            frames.append(df)
    # a libvirt lab run: libvirt's completed job statistics, shown beside ours
    j = d / "libvirt-jobinfo.json"
    if j.exists():
        try:
            out.meta["libvirt_jobinfo"] = json.loads(j.read_text())
        except (OSError, ValueError) as e:
            out.warnings.append(f"{j}: unreadable ({e})")
    # each side's QEMU command line maps QMP device ids to host device names
    for side in ("source", "destination"):
        c = d / f"{side}.cmdline"
        if c.exists():
            out.meta.setdefault("cmdline", {})[side] = c.read_text(errors="replace")
    if not any(_size(f) for f in frames):
        raise InputError(path, "lab run directory holds no trace events "
                               "(source.log, destination.log, events.jsonl)")
    return frames


def _load_one(path: str, side: str | None, out: Loaded, keep: Collection[str] | None = None,
              progress: Progress | None = None) -> list[pd.DataFrame]:
    if not os.path.exists(path):
        raise InputError(path, "no such file or directory")
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "run.json")):
            return _load_run_dir(path, out, keep, progress)
        traces = sorted(p for p in Path(path).iterdir()
                        if p.suffix in (".log", ".parquet", ".arrow", ".jsonl") and p.is_file())
        if not traces:
            raise InputError(path, "directory holds no traces (expected a lab run with run.json, "
                                   "or *.log / *.parquet / *.jsonl files)")
        frames = []
        for p in traces:
            try:
                frames += _load_one(str(p), None, out, keep, progress)
            except InputError as e:
                out.warnings.append(str(e))
        if not frames:
            raise InputError(path, "no usable trace in this directory")
        return frames
    try:
        kind = sniff(path)
    except OSError as e:
        raise InputError(path, e.strerror or str(e)) from None
    if kind == "empty":
        raise InputError(path, "empty file")
    if kind == "binary":
        raise InputError(path, "binary data that is neither a QEMU simpletrace file nor a recording")
    if kind == "simpletrace":
        return [_load_simpletrace(path, side, out)]
    if kind in ("parquet", "arrow"):
        return [_load_recording(path, out)]
    if kind == "jsonl":
        df, warnings, bad = _read_jsonl(path, side)
        out.warnings.extend(warnings)
        out.malformed += bad
        out.inputs.append({"path": path, "kind": "jsonl", "events": len(df), "malformed": bad})
        if not len(df):
            raise InputError(path, "no JSON event rows")
        return [df]
    return [_load_log(path, side, out, keep, progress)]


def sort_timeline(df: pd.DataFrame) -> pd.DataFrame:
    """``events.sort_timeline``, skipping the full reorder (a copy of every column) when
    the rows are already in timeline order, as a single log's rows usually are."""
    t = df["t_ns"]
    if t.isna().all():
        return df.reset_index(drop=True)
    seq = df["seq"]
    if not t.hasnans and not seq.hasnans and t.is_monotonic_increasing:
        tv = t.to_numpy(np.int64)
        sv = seq.to_numpy(np.int64)
        ties = tv[1:] == tv[:-1]
        if not ties.any() or (sv[1:][ties] >= sv[:-1][ties]).all():
            return df.reset_index(drop=True)
    return events.sort_timeline(df)


def load(paths: list[str], sides: list[str] | None = None, *, keep: Collection[str] | None = None,
         progress: Progress | None = None) -> Loaded:
    """Read every input and merge them on one timeline (``events.sort_timeline``).

    An unusable input is an ``InputError`` when nothing else is usable; otherwise it
    becomes a warning and the rest is kept. ``keep``: only events of these names become
    rows (the others are read, checked and counted in ``rows``, not kept), so memory
    follows the events a caller uses. ``progress`` is told how far each log is read.
    """
    if not paths:
        raise InputError("-", "no input given")
    out = Loaded(events=None)  # type: ignore[arg-type]  (set below; pandas may still be importing)
    frames: list[pd.DataFrame] = []
    errors: list[InputError] = []
    for i, raw in enumerate(paths):
        path = os.fspath(raw)
        try:
            side = _side_of(path, sides, i)
            frames += _load_one(path, side, out, keep, progress)
        except InputError as e:
            errors.append(e)
    out.rows = sum(_size(f) for f in frames)
    if not out.rows:
        raise errors[0] if errors else InputError(paths[0], "no events")
    out.warnings = [str(e) for e in errors] + out.warnings
    if keep is not None:
        frames = [f if _ROWS in f.attrs else f[f["event"].isin(keep).to_numpy(dtype=bool)] for f in frames]
    merged = events.concat([f for f in frames if len(f)])
    out.events = sort_timeline(merged)
    out.meta.setdefault("inputs", [i["path"] for i in out.inputs])
    return out


# ---------------------------------------------------------------------------- compare's inputs
# `migprof compare` loads each input as one run (model/compare.Run): a finalised
# recording's stored summary when its model key matches, else the report built here.

from typing import TYPE_CHECKING  # noqa: E402  (this block is appended to the load path)

if TYPE_CHECKING:
    from profiler.model.compare import Run
    from profiler.model.results import Report


def expand_runs(paths: list[str]) -> list[str]:
    """A directory of recordings (not a lab run directory) is one run per recording."""
    from profiler import store

    out = []
    for p in paths:
        d = Path(p)
        if d.is_dir() and not (d / "run.json").exists():
            recs = sorted(str(f) for f in d.iterdir() if f.is_file() and store.is_recording(f))
            if recs:
                out += recs
                continue
        out.append(p)
    return out


def _run(path: str, report: Report, meta: dict[str, Any], from_summary: bool = False) -> Run:
    from profiler.model.compare import Run

    qv = meta.get("qemu_version")  # the QMP greeting's, or run.json's for a trace (load_run)
    if isinstance(qv, dict):  # one version per side
        qv = ", ".join(sorted({str(v) for v in qv.values() if v}))
    sv = meta.get("stored_schema_version")
    return Run(str(path), report, str(qv) if qv else None, int(sv) if sv is not None else None,
               from_summary)


def cached_run(path: str) -> Run | None:
    """The ``model.compare.Run`` of a finalised recording from its stored summary alone;
    None when it has no usable one (then the events are read)."""
    from profiler import store
    from profiler.model.results import from_json

    cached = store.read_summary(path)
    if cached is None:
        return None
    summary, meta = cached
    try:
        report = from_json(summary)
    except (TypeError, ValueError, KeyError):
        return None  # a summary is an optimisation: rebuild from the events
    return _run(path, report, meta, from_summary=True)


def load_run(path: str, *, use_summary: bool = True) -> Run:
    """The ``model.compare.Run`` of one input: a recording, a trace file or a run directory.

    A finalised recording carries a summary (its report, keyed by the model's code);
    when the key matches this migprof's model, that summary is used and the events
    are not read at all.
    """
    from profiler import store
    from profiler.model import build_report

    if store.is_recording(path):
        if use_summary and (run := cached_run(path)) is not None:
            return run
        df, meta, warns = store.read_recording(path)
        malformed = skipped = 0
    else:
        loaded = load([path])
        df, meta, warns = loaded.events, dict(loaded.meta or {}), list(loaded.warnings)
        malformed, skipped = loaded.malformed, loaded.skipped
        if qv := store.qemu_version_of(meta):
            meta["qemu_version"] = qv
    report = build_report(df, inputs=[path], malformed=malformed, skipped=skipped,
                          warnings=warns, meta=meta)
    return _run(path, report, meta)


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """Why one input gave no run, as it crosses back from a worker process (an exception
    may not survive pickling; ``InputError`` does not)."""

    path: str
    message: str
    exit_code: int = 2
    traceback: str = ""  # an unexpected error's traceback, for --debug


def _load_or_failure(path: str) -> Run | LoadFailure:
    """``load_run`` of an input whose summary was already tried, or its LoadFailure."""
    from profiler.errors import MigprofError

    try:
        return load_run(path, use_summary=False)
    except MigprofError as e:
        return LoadFailure(path, str(e), e.exit_code)
    except Exception as e:  # a model bug on this input: name the input, as for bad input
        import traceback

        return LoadFailure(path, f"{path}: cannot build its report ({type(e).__name__}: {e})",
                           traceback=traceback.format_exc())


def _load_chunk(paths: list[str]) -> list[Run | LoadFailure]:
    return [_load_or_failure(p) for p in paths]


def _load_alone(path: str) -> Run | LoadFailure:
    """``_load_or_failure`` in a process of its own, so a death names its input."""
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as ex:
        try:
            return ex.submit(_load_or_failure, path).result()
        except cf.process.BrokenProcessPool:
            return LoadFailure(path, f"{path}: the process loading it died (killed by a signal, "
                                     "e.g. out of memory)")
        except Exception as e:  # e.g. a result that cannot cross back
            return LoadFailure(path, f"{path}: its worker process failed ({type(e).__name__}: {e})")


def _load_in_processes(todo: list[str], jobs: int) -> list[Run | LoadFailure]:
    """``_load_or_failure`` of every input, in ``jobs`` forked processes. A worker that dies
    (killed, out of memory) breaks the pool and every input still in it; those are loaded
    again one process each, so the sound ones are kept and the one that kills is named."""
    import concurrent.futures as cf
    import multiprocessing as mp

    size = max(1, len(todo) // (jobs * 4))
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    done: dict[str, Run | LoadFailure] = {}
    # fork: the children start with pandas and the model already imported
    with cf.ProcessPoolExecutor(min(jobs, len(todo)), mp_context=mp.get_context("fork")) as ex:
        futures = [ex.submit(_load_chunk, c) for c in chunks]
        for chunk, f in zip(chunks, futures, strict=True):
            if f.exception() is None:  # else the pool broke: loaded again below
                done.update(zip(chunk, f.result(), strict=True))
    for p in todo:
        if p not in done:
            done[p] = _load_alone(p)
    return [done[p] for p in todo]


def load_runs(paths: list[str], jobs: int, use_summary: bool = True) -> list[Run | LoadFailure]:
    """Every input as a ``model.compare.Run``, or the LoadFailure that says why not, in the
    order given: stored summaries first, the rest rebuilt, in ``jobs`` processes when
    there are four or more."""
    runs: dict[str, Run | LoadFailure] = {}
    if use_summary:
        for p in paths:
            if (r := cached_run(p)) is not None:
                runs[p] = r
    todo = list(dict.fromkeys(p for p in paths if p not in runs))
    if jobs <= 1 or len(todo) < 4:
        runs.update((p, _load_or_failure(p)) for p in todo)
    else:
        runs.update(zip(todo, _load_in_processes(todo, jobs), strict=True))
    return [runs[p] for p in paths]


def every_run(loaded: list[Run | LoadFailure]) -> list[Run]:
    """The runs, when every input gave one; else ``MigprofError`` with the one-line reason of
    the first unusable input in the order given (whichever worker finished first)."""
    import logging

    from profiler.errors import MigprofError

    failed = [r for r in loaded if isinstance(r, LoadFailure)]
    for f in failed:
        if f.traceback:
            logging.getLogger(__name__).debug("%s:\n%s", f.path, f.traceback)
    if failed:
        err = MigprofError(failed[0].message)
        err.exit_code = failed[0].exit_code
        raise err
    return loaded  # type: ignore[return-value]  # no LoadFailure left


def unusable(paths: list[str], loaded: Loaded) -> list[str]:
    """Inputs that gave no event (empty, binary junk, no trace lines): the loader keeps the
    others and lists what it read per file in ``loaded.inputs``."""
    got: dict[str, int] = {}
    for i in loaded.inputs:
        p = os.path.abspath(str(i.get("path", "")))
        got[p] = got.get(p, 0) + int(i.get("events") or 0)
    bad = []
    for p in paths:
        a = os.path.abspath(p)
        n = sum(v for k, v in got.items() if k == a or k.startswith(a.rstrip(os.sep) + os.sep))
        if n == 0:
            bad.append(p)
    return bad


def release_freed_memory() -> None:
    """Return the memory freed by the parse to the system: the allocators keep it (glibc in
    the worker threads' arenas, Arrow's pool), so the peak would add the model on top."""
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)
