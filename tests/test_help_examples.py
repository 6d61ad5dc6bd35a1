"""Every example in every command's --help runs as written.

Each example line is read from the command's own --help (the lines under "examples:" that
start with ``migprof``) and run by bash, as typed, in a directory holding the files the
examples name: src.log, dst.log, a.log, b.log and old.log are real QEMU trace logs from
tests/data/real, run/ a real lab run directory, *.parquet recordings imported from them,
base/, cand/, a/, b/, c/ directories of such recordings, fleet/ a dataset of them, tests/
the checkout's. The only text substituted is what the epilogs say stands for the user's
own: a QEMU pid (4242), its QMP socket (/run/qemu/src.qmp), a libvirt domain (vm1) and its
URI (qemu:///system); the test starts those for real. trace-12345 is the one file no QEMU
here can write (Debian builds QEMU with the log back end only): it is built byte-exactly
as tests/test_simpletrace.py does.

`live` and `record` examples run against a real QEMU migrating to a second one, and end
on Ctrl-C (SIGINT) once the migration completed; `replay` runs in a real pseudo-terminal
and quits on q. A lab or demo example is a real lab run (root: namespaces).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REAL, ROOT
from test_live_qemu import Qmp, _qemu, _wait_completed
from test_simpletrace import MAP, _file, _records

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent  # the venv's, with the migprof script
COMMANDS = ("report", "live", "record", "lab", "demo", "replay", "import", "compare", "whatif",
            "query", "top")
EXIT_OK = {"compare": {0, 1}}  # compare: 1 = a --fail-on rule fired, as documented


def examples(command: str) -> list[str]:
    """The example lines of ``migprof COMMAND --help``, as printed."""
    text = subprocess.run([str(BIN / "migprof"), command, "--help"], capture_output=True,
                          text=True, check=True, env={**os.environ, "COLUMNS": "200"}).stdout
    lines = text.splitlines()
    start = lines.index("examples:") + 1
    out = []
    for ln in lines[start:]:
        if not ln.startswith(" ") or not ln.strip():
            break
        if ln.strip().startswith("migprof "):
            out.append(ln.strip())
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "COLUMNS": "200"}


def _import(src: list[Path], out: Path) -> None:
    r = subprocess.run([str(BIN / "migprof"), "import", *map(str, src), "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def stock(tmp_path_factory) -> Path:
    """The files the examples name, made once."""
    d = tmp_path_factory.mktemp("stock")
    conv = REAL / "7.2-converges"
    shutil.copy(conv / "source.log", d / "src.log")
    shutil.copy(conv / "destination.log", d / "dst.log")
    shutil.copy(REAL / "10.0-converges/source.log", d / "a.log")
    shutil.copy(REAL / "10.0-converges/destination.log", d / "b.log")
    shutil.copy(REAL / "10.0-downtime-raise/source.log", d / "old.log")
    shutil.copytree(REAL / "7.2-downtime-raise", d / "run")
    (d / "tests").symlink_to(ROOT / "tests")
    (d / "trace-12345").write_bytes(_file(_records(), MAP))
    runs72 = sorted(REAL.glob("7.2-*"))
    runs10 = sorted(REAL.glob("10.0-*"))
    for sub, runs in (("base", runs72), ("cand", runs10)):
        (d / sub).mkdir()
        for r in runs:
            _import([r], d / sub / f"{r.name}.parquet")
    for sub, src in (("a", "base"), ("b", "cand"), ("c", "base")):
        shutil.copytree(d / src, d / sub)
    for name, src in (("run.parquet", "base/7.2-converges.parquet"),
                      ("mig.parquet", "base/7.2-converges.parquet"),
                      ("base.parquet", "base/7.2-converges.parquet"),
                      ("cand.parquet", "cand/10.0-converges.parquet"),
                      ("new.parquet", "cand/10.0-downtime-raise.parquet"),
                      ("b1.parquet", "base/7.2-cancel-retry.parquet"),
                      ("b2.parquet", "base/7.2-downtime-raise.parquet"),
                      ("c1.parquet", "cand/10.0-cancel-retry.parquet"),
                      ("c2.parquet", "cand/10.0-transferred-bytes.parquet")):
        shutil.copy(d / src, d / name)
    for host, runs in (("hv1", runs72), ("hv2", runs10)):
        r = subprocess.run([str(BIN / "migprof"), "import", *map(str, runs), "--dataset",
                            str(d / "fleet"), "--host", host], capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr
    return d


@pytest.fixture
def ws(stock: Path, tmp_path: Path) -> Path:
    w = tmp_path / "ws"
    shutil.copytree(stock, w, symlinks=True)
    return w


def _run(line: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -o pipefail; {line}"], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _failures(command: str, results: list[tuple[str, int, str]]) -> list[str]:
    ok = EXIT_OK.get(command, {0})
    return [f"{line}\n  exit {rc}: {err.strip()[-600:]}" for line, rc, err in results
            if rc not in ok or "Traceback" in err]


@pytest.mark.parametrize("command", ["report", "import", "compare", "whatif", "query", "lab",
                                     "demo"])
def test_examples_run(command: str, ws: Path) -> None:
    lines = examples(command)
    assert lines, f"migprof {command} --help has no examples"
    results = []
    for line in lines:
        r = _run(line, ws)
        results.append((line, r.returncode, r.stderr))
    bad = _failures(command, results)
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------- live and record


@contextlib.contextmanager
def _pair(tmp: Path) -> Iterator[dict]:
    """A source QEMU (two monitors: src.qmp for migprof, src.test.qmp for the test) and a
    destination waiting on -incoming."""
    tmp.mkdir(parents=True, exist_ok=True)
    mig = tmp / "mig.sock"
    dst = _qemu(tmp, "dst", "-incoming", f"unix:{mig}")
    src = _qemu(tmp, "src")
    try:
        yield {"src": src, "dst": dst, "qs": Qmp(tmp / "src.test.qmp"), "mig": mig,
               "qmp": tmp / "src.qmp"}
    finally:
        for p in (src, dst):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def _until_banner(p: subprocess.Popen, timeout: float = 120) -> str:
    got = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        got += line
        if "Hit Ctrl-C to end." in line:
            return got
    p.kill()
    raise AssertionError(f"no banner: {got}")


def _attached(line: str, cwd: Path, subs: dict[str, str], during=None) -> tuple[int, str]:
    """Run a live/record example with the placeholders filled in; once attached, run
    ``during`` (a migration), then Ctrl-C; (exit status, stderr)."""
    for k, v in subs.items():
        line = re.sub(rf"(?<![\w/.:-]){re.escape(k)}(?![\w/.:-])", v, line)
    p = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=cwd, env=_env(), text=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    try:
        err = _until_banner(p)
        if during is not None:
            during()
        p.send_signal(signal.SIGINT)
        rest = p.stderr.read()
        return p.wait(timeout=120), err + rest
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _live_like(command: str, ws: Path) -> list[tuple[str, int, str]]:
    results = []
    for i, line in enumerate(examples(command)):
        word = line.split()[1]
        if word == "replay":
            rc, err = _in_terminal(line, ws)
        elif word not in ("live", "record"):
            r = _run(line, ws)
            rc, err = r.returncode, r.stderr
        elif "--domain" in line:
            from test_libvirt_live import Host

            (ws / "libvirt").mkdir()
            h = Host(ws / "libvirt")
            try:
                rc, err = _attached(line, ws, {"vm1": h.name, "qemu:///system": h.uri})
            finally:
                h.close()
        else:
            with _pair(ws / f"q{i}") as q:
                def migrate(q=q) -> None:
                    q["qs"].cmd("migrate", uri=f"unix:{q['mig']}")
                    assert _wait_completed(q["qs"])["status"] == "completed"

                rc, err = _attached(line, ws, {"4242": str(q["src"].pid), "4343": str(q["dst"].pid),
                                               "/run/qemu/src.qmp": str(q["qmp"])}, migrate)
        results.append((line, rc, err))
    return results


def test_live_examples_run(ws: Path) -> None:
    bad = _failures("live", _live_like("live", ws))
    assert not bad, "\n".join(bad)


def test_record_examples_run(ws: Path) -> None:
    """Each record example writes mig.parquet afresh; the report and replay examples after
    them read that recording of a real migration."""
    (ws / "mig.parquet").unlink()
    bad = _failures("record", _live_like("record", ws))
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------- replay: a terminal


def _in_terminal(line: str, cwd: Path, timeout: float = 120, ready: bytes = b"REPLAY") -> tuple[int, str]:
    """Run ``line`` on a pseudo-terminal (120x40); once the TUI shows ``ready``, press q."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**_env(), "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    # Textual draws on stderr: all three on the terminal, as a user's shell has them
    p = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=cwd, env=env, stdin=slave,
                         stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = b""
    quit_sent = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([master], [], [], 0.5)
            if readable:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not quit_sent and ready in seen:
                os.write(master, b"q")
                quit_sent = True
            if p.poll() is not None:
                break
        rc = p.wait(timeout=30)
        screen = re.sub(r"\x1b(\[[0-9;?<>=$]*[a-zA-Z~]|\][^\x07]*\x07|[()][0-9A-Z]|.)", "",
                        seen.decode(errors="replace"))
        err = "" if rc == 0 else screen[-1500:]
        if not quit_sent:
            err += f"\n(the TUI never showed {ready.decode()})"
            rc = rc or 1
        return rc, err
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()


def test_replay_examples_run(ws: Path) -> None:
    results = [(line, *_in_terminal(line, ws)) for line in examples("replay")]
    bad = _failures("replay", results)
    assert not bad, "\n".join(bad)


def test_every_command_has_examples_that_a_test_runs() -> None:
    """The tests above cover every command (a new command brings its examples here)."""
    from profiler.cli import COMMANDS as CLI_COMMANDS

    assert set(CLI_COMMANDS) == set(COMMANDS)
    assert all(examples(c) for c in COMMANDS)


def _first_output(line: str, cwd: Path) -> tuple[int, str]:
    """Run a ``top --no-tui``/``--json`` example until its first block is out, then Ctrl-C."""
    p = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=cwd, env=_env(), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        first = p.stdout.readline()
        p.send_signal(signal.SIGINT)
        p.stdout.read()
        rc, err = p.wait(timeout=120), p.stderr.read()
        return (rc if first else rc or 1), err + ("" if first else "\n(no output)")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_top_examples_run(ws: Path) -> None:
    """Every `migprof top --help` example, with two QEMUs on the host (one of them a libvirt
    domain where the line names a URI): tables and JSON lines until their first output, the
    TUI until it shows its summary; then Ctrl-C or q."""
    from test_libvirt_live import Host

    results = []
    with _pair(ws / "top"):
        for line in examples("top"):
            if "qemu:///system" in line:
                (ws / "libvirt").mkdir(exist_ok=True)
                h = Host(ws / "libvirt")
                try:
                    line = line.replace("qemu:///system", h.uri).replace("'web-.*'", f"'^{h.name}$'")
                    rc, err = _in_terminal(line, ws, ready=b"migrating")
                finally:
                    h.close()
            elif "--no-tui" in line or "--json" in line:
                rc, err = _first_output(line, ws)
            else:
                rc, err = _in_terminal(line, ws, ready=b"migrating")
            results.append((line, rc, err))
    bad = _failures("top", results)
    assert not bad, "\n".join(bad)
