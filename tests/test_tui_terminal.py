"""``migprof replay`` in a real terminal (tmux): the screen shows the model's numbers, and
the terminal is restored on quit and on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_tui import real_run, report_of

from profiler import pipeline
from profiler.cli import main
from profiler.views.fmt import fmt_bytes

ROOT = Path(__file__).resolve().parent.parent
MIGPROF = ROOT / ".venv" / "bin" / "migprof"


class Tmux:
    """A private tmux server (own socket) running one command in a 120x40 pane."""

    def __init__(self, name: str) -> None:
        self.sock = f"migprof-test-{name}-{os.getpid()}"

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.sock, *args], check=True, capture_output=True, text=True, timeout=20
        ).stdout

    def start(self, command: str) -> None:
        self(
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "40",
            "-e",
            "TERM=xterm-256color",
            command,
        )

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "t")

    def wait_for(self, pattern: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if re.search(pattern, text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} never appeared; the pane shows:\n{text}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True, timeout=20)


@pytest.fixture
def tmux(request):
    t = Tmux(request.node.name[:20])
    yield t
    t.kill()


def _command(run: Path, extra: str, pidfile: Path) -> str:
    # the shell stays after migprof exits so the test can read the exit code and tty state
    return (
        f"cd {ROOT} && sh -c 'echo $$ > {pidfile}; exec {MIGPROF} replay {run} {extra}'; "
        "echo MIGPROF_EXIT=$?; stty -a | grep -o -- '-\\?icanon' | sed 's/^/TTY=/'; sleep 60"
    )


def test_replay_screen_shows_the_models_threshold_and_pending(tmux, tmp_path):
    run = real_run("converges", "converg")
    loaded = pipeline.load([str(run)])
    report = report_of(loaded)
    mig = report.migrations[-1]
    last = mig.checks[-1]
    tmux.start(_command(run, "--at end", tmp_path / "pid"))
    screen = tmux.wait_for(r"threshold \S+ \S*B.*\n(.*\n)*.*" + re.escape(mig.devices[0].name))
    assert f"pending {fmt_bytes(last.pending_bytes)}" in screen, screen
    assert f"threshold {fmt_bytes(last.threshold_bytes)}" in screen, screen
    assert mig.outcome.upper() in screen
    for name, value in last.devices.items():
        assert f"{name} {fmt_bytes(value)}" in screen, (name, screen)
    assert "Traceback" not in screen
    tmux("send-keys", "-t", "t", "q")
    after = tmux.wait_for(r"MIGPROF_EXIT=\d+")
    assert "MIGPROF_EXIT=0" in after
    assert "TTY=icanon" in tmux.wait_for(r"TTY=")  # canonical mode is back
    assert "threshold" not in after  # the alternate screen was left


def test_sigterm_restores_the_terminal(tmux, tmp_path):
    run = real_run("converges", "converg")
    pidfile = tmp_path / "pid"
    tmux.start(_command(run, "--speed 0.1", pidfile))
    tmux.wait_for(r"REPLAY")
    os.kill(int(pidfile.read_text()), signal.SIGTERM)
    after = tmux.wait_for(r"TTY=")
    assert "MIGPROF_EXIT=0" in after and "TTY=icanon" in after
    assert "Traceback" not in after and "REPLAY" not in after


def test_replay_of_a_missing_input_is_one_line_and_exit_2(capsys, tmp_path):
    rc = main(["replay", str(tmp_path / "nope.log")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "nope.log" in err and "Traceback" not in err


def test_ctrl_c_quits_and_restores_the_terminal(tmux, tmp_path):
    run = real_run("converges", "converg")
    tmux.start(_command(run, "--speed 0.1", tmp_path / "pid"))
    tmux.wait_for(r"REPLAY")
    tmux("send-keys", "-t", "t", "C-c")
    after = tmux.wait_for(r"TTY=")
    assert "MIGPROF_EXIT=0" in after and "TTY=icanon" in after and "Traceback" not in after
