"""pandas off the parse path (profiler.deferred): `report` imports it on a second thread while
the log is parsed, which only overlaps if parsing itself never needs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from profiler.deferred import Deferred, import_behind

ROOT = Path(__file__).resolve().parent.parent
LOG = next(p for p in sorted((ROOT / "tests" / "data" / "real").glob("*/*.log")) if p.stat().st_size > 10_000)


def _fresh(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_parse_runs_without_pandas() -> None:
    """Every chunk of a real log is parsed (names, prefixes, bodies, columns) before pandas is
    imported; only the final frame needs it."""
    out = _fresh(
        "import sys\n"
        "from profiler import pipeline\n"
        "from profiler.model.names import kept\n"
        "from profiler.sources import qemu_log as Q\n"
        "acc = Q._Acc('x')\n"
        f"Q._parse_chunk(open({str(LOG)!r}, 'rb').read(), acc, Q.known_event_names(), kept())\n"
        "print('rows', sum(t['_n'] for t in acc.tables), 'pandas' in sys.modules)\n"
        f"r = Q.read_log({str(LOG)!r}, keep=kept())\n"
        "print('frame', len(r.frame), 'pandas' in sys.modules)\n")
    first, second = out.split("\n")[:2]
    rows = int(first.split()[1])
    assert rows > 0 and first.endswith("False"), out
    assert second == f"frame {rows} True", out


def test_deferred_attributes_are_the_module_s() -> None:
    import json

    j = Deferred("json")
    assert j.dumps is json.dumps and j.module() is json


def test_import_behind_imports_on_a_thread() -> None:
    out = _fresh("import sys\nfrom profiler.deferred import import_behind\n"
                 "t = import_behind('colorsys', 'no_such_module_here', 'fractions')\nt.join()\n"
                 "print('colorsys' in sys.modules, 'fractions' in sys.modules)")
    # a module that cannot be imported ends the thread quietly: its first use raises
    assert out.split() == ["True", "False"]
    assert import_behind().name == "import-behind"
