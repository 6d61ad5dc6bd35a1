"""The declared minimum versions work: the main commands at the floors of pyproject.toml.

scripts/check_floors.py builds (once, cached under $MIGPROF_CACHE/floors) a venv with
exactly each dependency's ``>=`` floor and runs report, compare, import, whatif, query and
every --help there on tests/data; each JSON output must equal this venv's (the newest
versions), and a recording written at either end must read at the other. The first run
installs from the package index (minutes); later runs reuse the venv.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1800)  # the first run builds the venv from the package index
def test_main_commands_at_the_declared_floors() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts/check_floors.py")], cwd=ROOT,
                       capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "check_floors: query: ok" in r.stderr and "recordings across ends: ok" in r.stderr


def test_floors_are_read_from_pyproject(tmp_path) -> None:
    """What the check installs is what pyproject.toml declares, and a dependency without a
    floor is refused (it could not be tested)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_floors
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert len(check_floors.floors()) == len(declared)  # every dependency has its floor tested
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project]\ndependencies = ["pandas>=2.2", "rich"]\n')
    with pytest.raises(SystemExit, match="'rich' has no '>=' floor"):
        check_floors.floors(bad)
