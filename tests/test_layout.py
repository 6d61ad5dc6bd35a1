"""The layout shows the data flow: imports go one way (sources -> events -> model -> views)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (package prefix, forbidden import prefixes)
RULES = [
    ("profiler/events.py", ("profiler", "tui", "bcc", "pyroute2", "qemu", "textual")),
    ("profiler/sources/", ("profiler.model", "profiler.views", "tui", "textual")),
    ("profiler/model/", ("profiler.sources", "profiler.views", "tui", "bcc", "pyroute2", "qemu", "textual")),
    ("profiler/views/", ("bcc", "pyroute2", "qemu", "textual", "profiler.sources")),
    ("tui/", ("bcc", "pyroute2", "qemu.qmp")),
    # the live session and the glue around it: sources in, sinks out, no views of their own
    ("profiler/session.py", ("profiler.model", "profiler.views", "profiler.commands", "tui",
                             "textual", "bcc", "pyroute2", "qemu")),
    ("profiler/attach.py", ("profiler.model", "profiler.views", "profiler.commands", "tui",
                            "textual")),
    ("profiler/qmpctl.py", ("profiler.model", "profiler.views", "profiler.commands", "tui",
                            "textual")),
    ("profiler/lab/", ("profiler.views", "profiler.commands", "tui", "textual")),
    ("profiler/commands/", ("bcc", "pyroute2", "qemu", "textual")),
]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _files():
    for prefix, forbidden in RULES:
        p = ROOT / prefix
        files = [p] if p.suffix == ".py" else sorted(p.rglob("*.py"))
        for f in files:
            yield f, forbidden


@pytest.mark.parametrize("path,forbidden", list(_files()), ids=lambda x: str(x)[len(str(ROOT)) + 1 :] if isinstance(x, Path) else "")
def test_imports_go_one_way(path: Path, forbidden: tuple[str, ...]) -> None:
    bad = [n for n in _imports(path) if any(n == f or n.startswith(f + ".") for f in forbidden)]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_bcc_from_pypi_is_not_installed() -> None:
    """Debian's bcc is linked into the venv; the unrelated PyPI 'bcc' must never be there."""
    import bcc

    assert hasattr(bcc, "BPF"), f"bcc at {bcc.__file__} is not the BPF Compiler Collection"
