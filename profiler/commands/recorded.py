"""What every recorder does once its recording is closed: a short one is an error, a whole one may go into a fleet dataset.

`record`, `live --record`, `lab --record` and `demo --record` call ``finish`` after the
writer is closed (by the session's RecordingSink, or by the lab once run.json is in the
metadata), so the rule is in this one place.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from profiler.commands.options import DatasetTarget
from profiler.errors import EXIT_OK, EXIT_USAGE, InputError, MigprofError, SetupError


def finish(writer: Any, dataset: DatasetTarget | None, rc: int = EXIT_OK, *,
           err: IO[str] | None = None) -> int:
    """The exit status once ``writer`` (a closed ``store.RecordingWriter``) is final.

    A recording an I/O error cut short (disk full, file size limit) is an error, exit 2:
    a script must never take it for a whole one, and it is not added anywhere. Otherwise,
    with ``dataset`` and a run that went well (``rc`` 0), the recording is added to the
    dataset as one unit (atomic: a failed add leaves nothing readers take); a failure to
    add is one line and exit 2, and the recording file stays.
    """
    err = err or sys.stderr
    if writer.error:
        if rc == EXIT_OK:
            print(f"migprof: error: recording incomplete: {writer.error}; every event before it "
                  f"is kept in {writer.final_path}", file=err)
        return rc or EXIT_USAGE
    if dataset is None or rc != EXIT_OK:
        return rc
    from profiler.dataset import add_recording

    try:
        a = add_recording(dataset.dir, writer.final_path, host=dataset.host)
    except OSError as e:
        raise InputError(dataset.dir, f"cannot add the recording ({e.strerror or e}); it is kept "
                         f"in {writer.final_path}") from None
    print(f"migprof: added to {dataset.dir}: host={a.host} date={a.date} recording {a.unit}: "
          f"{a.migrations} migration(s), {a.events} events", file=err)
    return rc


def open_writer(path: str | None, meta: dict):
    if not path:
        return None
    try:
        from profiler.store import RecordingWriter
    except ImportError:
        raise SetupError("--record needs profiler.store (recordings), which is missing") from None
    try:
        return RecordingWriter(path, meta=meta)
    except OSError as e:
        raise MigprofError(f"{path}: cannot write the recording: {e.strerror or e}") from None


def libvirt_end(sources: list, rc: int) -> int:
    """--domain: libvirt's own statistics of the job after the summary; a domain that
    ended mid-run without migrating is an error (exit 2)."""
    for s in sources:
        if getattr(s, "completed_job", None):
            from profiler.views.libvirt import job_line

            print(job_line(s.completed_job))
    for problem in filter(None, (s.end_problem() for s in sources if hasattr(s, "end_problem"))):
        print(f"migprof: error: {problem}", file=sys.stderr)
        rc = EXIT_USAGE
    return rc
