"""The layout shows the data flow: imports go one way (sources -> events -> model -> views)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (package prefix, forbidden import prefixes)
RULES = [
    # the events level: the schema and the event registry (events.py derives from the registry)
    ("profiler/registry.py", ("profiler", "tui", "bcc", "pyroute2", "qemu", "textual", "libvirt")),
    ("profiler/events.py", ("profiler", "tui", "bcc", "pyroute2", "qemu", "textual", "libvirt")),
    # stdlib only: everything may use them, the command line's start-up included
    ("profiler/pipes.py", ("profiler", "tui", "rich", "pandas", "pyarrow", "numpy", "textual")),
    ("profiler/cache.py", ("profiler", "tui", "rich", "pandas", "pyarrow", "numpy", "textual")),
    ("profiler/errors.py", ("profiler", "tui", "rich", "pandas", "pyarrow", "numpy", "textual")),
    ("profiler/deferred.py", ("profiler", "tui", "rich", "pandas", "pyarrow", "numpy", "textual")),
    ("profiler/__init__.py", ("profiler", "tui", "rich", "pandas", "pyarrow", "numpy", "textual")),
    # the command line's start-up: the one command's module is imported by name (importlib)
    ("profiler/cli.py", ("profiler.model", "profiler.sources", "profiler.views", "profiler.lab", "tui",
                         "textual", "rich", "pandas", "pyarrow", "numpy", "bcc", "qemu")),
    ("profiler/sources/", ("profiler.model", "profiler.views", "tui", "textual")),
    # (nothing of migprof but the events level: `report` imports the model on a second thread
    # while the parse imports sources, see profiler/deferred.py)
    ("profiler/model/", ("profiler", "tui", "bcc", "pyroute2", "qemu", "textual", "libvirt")),
    ("profiler/views/", ("bcc", "pyroute2", "qemu", "textual", "profiler.sources", "libvirt")),
    ("profiler/replay.py", ("profiler.sources", "profiler.model", "profiler.views", "tui", "textual", "bcc",
                            "pyroute2", "qemu")),
    ("tui/", ("bcc", "pyroute2", "qemu.qmp", "libvirt")),
    ("profiler/dataset/", ("profiler.sources", "profiler.views", "tui", "textual", "bcc", "pyroute2", "qemu")),
    # the live session and the glue around it: sources in, sinks out, no views of their own
    ("profiler/session.py", ("profiler.model", "profiler.views", "profiler.commands", "tui",
                             "textual", "bcc", "pyroute2", "qemu")),
    ("profiler/attach.py", ("profiler.model", "profiler.views", "profiler.commands", "tui",
                            "textual")),
    ("profiler/qmpctl.py", ("profiler.model", "profiler.views", "profiler.commands", "tui",
                            "textual")),
    ("profiler/lab/", ("profiler.commands", "tui", "textual")),
    ("profiler/commands/", ("bcc", "pyroute2", "qemu", "textual")),
    # files in, events out: recordings and the loaders (stored summaries are model results)
    ("profiler/store.py", ("profiler.sources", "profiler.views", "profiler.commands", "tui", "textual",
                           "bcc", "pyroute2", "qemu")),
    ("profiler/pipeline.py", ("profiler.views", "profiler.commands", "tui", "textual", "bcc",
                              "pyroute2", "qemu")),
    ("profiler/stream.py", ("profiler.model", "profiler.views", "profiler.commands", "tui", "textual")),
    # many QEMUs as one source (top, live -p A -p B)
    ("profiler/targets.py", ("profiler.model", "profiler.views", "profiler.commands", "tui", "textual")),
    ("profiler/metrics_server.py", ("profiler.sources", "profiler.model", "profiler.commands", "tui",
                                    "textual", "bcc", "qemu")),
    # the Spark job runs on executors: nothing of migprof's, only the dataset's files
    ("profiler/jobs/", ("profiler", "tui", "textual", "bcc")),
    ("bpf/", ("profiler", "tui", "pandas", "textual")),
]
# every file is under a rule above (LIBVIRT_ONLY below names each file, so it does not count)
COVERED = tuple(prefix for prefix, _ in RULES)
# libvirt-python only where libvirt is the job (profiler/sources/libvirt.py)
RULES += [(str(p.relative_to(ROOT)), ("libvirt", "libvirt_qemu"))
          for p in sorted((ROOT / "profiler").rglob("*.py")) + sorted((ROOT / "tui").rglob("*.py"))
          if p.relative_to(ROOT).as_posix() != "profiler/sources/libvirt.py"]
# imports a rule's forbidden prefixes would catch but which the layout allows
ALLOWED = {"profiler/events.py": ("profiler.registry", "profiler.deferred"),
           "profiler/model/": ("profiler.model", "profiler.events", "profiler.registry", "profiler.errors")}
# heavy engines, each imported by one module only (the CLI's start-up never pays for them)
ONLY_IN = {"duckdb": ("profiler/dataset/sql.py",), "pyspark": ("profiler/jobs/",)}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "profiler" and node.level == 0:
            names += [f"profiler.{a.name}" for a in node.names]  # from profiler import events
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _files():
    for prefix, forbidden in RULES:
        p = ROOT / prefix
        files = [p] if p.suffix == ".py" else sorted(p.rglob("*.py"))
        for f in files:
            yield f, forbidden, ALLOWED.get(prefix, ())


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in prefixes)


@pytest.mark.parametrize("path,forbidden,allowed", list(_files()),
                         ids=lambda x: str(x)[len(str(ROOT)) + 1 :] if isinstance(x, Path) else "")
def test_imports_go_one_way(path: Path, forbidden: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    bad = [n for n in _imports(path) if _under(n, forbidden) and not _under(n, allowed)]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_engines_are_imported_in_one_place() -> None:
    bad = []
    for f in sorted([*(ROOT / "profiler").rglob("*.py"), *(ROOT / "tui").rglob("*.py")]):
        rel = str(f.relative_to(ROOT))
        for name in _imports(f):
            for engine, allowed in ONLY_IN.items():
                if (name == engine or name.startswith(engine + ".")) and not rel.startswith(allowed):
                    bad.append(f"{rel} imports {name}")
    assert not bad, bad


def test_bcc_from_pypi_is_not_installed() -> None:
    """Debian's bcc is linked into the venv; the unrelated PyPI 'bcc' must never be there."""
    import bcc

    assert hasattr(bcc, "BPF"), f"bcc at {bcc.__file__} is not the BPF Compiler Collection"


def test_libvirt_imports_stay_in_their_modules() -> None:
    """libvirt-python is imported by profiler/sources/libvirt.py only (the libvirt lab goes
    through it), never at module level (a host without it still runs everything else)."""
    users = sorted(str(f.relative_to(ROOT)) for f in (ROOT / "profiler").rglob("*.py")
                   if any(n in ("libvirt", "libvirt_qemu") for n in _imports(f)))
    assert users == ["profiler/sources/libvirt.py"], users
    for f in users:
        top = [n for n in ast.parse((ROOT / f).read_text()).body
               if isinstance(n, ast.Import | ast.ImportFrom)]
        assert not any(a.name.startswith("libvirt") for n in top if isinstance(n, ast.Import)
                       for a in n.names), f"{f} imports libvirt at module level"


def test_every_module_is_under_a_rule() -> None:
    """A new module (or package) gets a place in the data flow: the rules above cover every
    Python file of profiler/, tui/ and bpf/."""
    loose = [rel for f in sorted([*(ROOT / "profiler").rglob("*.py"), *(ROOT / "tui").rglob("*.py"),
                                  *(ROOT / "bpf").rglob("*.py")])
             if not any((rel := f.relative_to(ROOT).as_posix()) == c or (c.endswith("/") and rel.startswith(c))
                        for c in COVERED)]
    assert not loose, f"no layout rule covers {loose}: add one to RULES"


THIN = 150  # lines: a command parses its options into a config and calls sources, model, views
HELPERS = ("options.py", "flags.py", "recorded.py", "__init__.py")  # what the commands share


def test_commands_are_thin() -> None:
    fat = {f.name: n for f in sorted((ROOT / "profiler" / "commands").glob("*.py"))
           if f.name not in HELPERS and (n := len(f.read_text().splitlines())) >= THIN}
    assert not fat, f"commands over {THIN} lines (move the work to sources/, model/ or views/): {fat}"
