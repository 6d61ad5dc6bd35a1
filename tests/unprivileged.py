"""Run a Python probe as user nobody, with no capabilities, from what nobody can reach.

A fresh clone may sit in a directory only root can enter (a 0700 ``mktemp -d``), and the
venv with it: nobody could import neither the project nor its dependencies from there. So
the probe runs from a readable temporary directory holding a copy of the ``profiler``
package and hard links (copies across filesystems) of the site-packages entries the
probe's imports load.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]

# the site-packages entries (and the shared libraries beside them) some imports load
_USED = """
import importlib, sys
from pathlib import Path
site = Path(sys.argv[1])
for m in sys.argv[2:]:
    importlib.import_module(m)
names = set()
for mod in list(sys.modules.values()):
    f = getattr(mod, "__file__", None)
    if f and Path(f).is_relative_to(site):
        names.add(Path(f).relative_to(site).parts[0])
names |= {p.name for p in site.glob("*.libs") if p.name[:-5] in names}
print(" ".join(sorted(n for n in names if not n.startswith("__editable__"))))
"""


def run_as_nobody(code: str, *args: str, imports: Iterable[str],
                  timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code args...`` as nobody; ``imports``: the modules it needs."""
    site = Path(sysconfig.get_paths()["purelib"])
    used = subprocess.run([sys.executable, "-c", _USED, str(site), *imports], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.split()
    d = Path(tempfile.mkdtemp(prefix="migprof-nobody-"))
    try:
        (d / "site").mkdir()
        for name in used:
            r = subprocess.run(["cp", "-al", str(site / name), str(d / "site" / name)],
                               capture_output=True)
            if r.returncode:  # another filesystem: copy
                shutil.rmtree(d / "site" / name, ignore_errors=True)
                shutil.copytree(site / name, d / "site" / name, symlinks=True)
        shutil.copytree(ROOT / "profiler", d / "profiler", ignore=shutil.ignore_patterns("__pycache__"))
        for p in [d, *d.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        env = {**os.environ, "PYTHONPATH": f"{d}:{d / 'site'}", "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("VIRTUAL_ENV", None)
        return subprocess.run([*UNPRIVILEGED, os.path.realpath(sys.executable), "-c", code, *args],
                              cwd=d, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(d, ignore_errors=True)
