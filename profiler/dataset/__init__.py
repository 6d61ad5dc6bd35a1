"""The fleet dataset: recordings from many hosts as hive-partitioned Parquet tables.

``DIR/<table>/host=H/date=YYYY-MM-DD/<unit>.parquet`` for the raw ``events`` and the
tables derived from each recording's report: ``recordings``, ``migrations``, ``checks``,
``devices`` (docs/dataset.md lists every column). Modules:

* :mod:`~profiler.dataset.schema`  the tables' Arrow schemas and versions
* :mod:`~profiler.dataset.derive`  a report as rows of the derived tables
* :mod:`~profiler.dataset.write`   add recordings atomically; upgrade old files
* :mod:`~profiler.dataset.scan`    list and check the files (foreign, incomplete, versions)
* :mod:`~profiler.dataset.groups`  per-group metric samples for ``compare``
* :mod:`~profiler.dataset.sql`     SQL over the tables on embedded DuckDB (the only module
  that imports duckdb)
"""

from __future__ import annotations

from profiler.dataset.write import Added, add_recording, add_recordings, upgrade

__all__ = ["Added", "add_recording", "add_recordings", "upgrade"]
