"""`migprof report` end to end through profiler.cli.main: exit codes, stdout, JSON, stderr."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from profiler.cli import main

HERE = Path(__file__).resolve().parent
SYN = HERE / "data" / "synthetic" / "migrations"
REAL = HERE / "data" / "real"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["report", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_terminal_report(capsys) -> None:
    rc, out, err = run(capsys, str(SYN / "v9.2-cancel-retry.log"))
    assert rc == 0, err
    assert "Migration 1" in out and "Migration 2" in out
    assert "cancelled" in out and "completed" in out
    assert "Verdict: did not converge" in out and "Verdict: converged" in out
    assert "more" in out  # 60 checks are trimmed
    rc, out_all, _ = run(capsys, "--all-checks", str(SYN / "v9.2-cancel-retry.log"))
    assert rc == 0 and " more " not in out_all and out_all.count("\n") > out.count("\n") + 40


def test_json_output(capsys) -> None:
    rc, out, err = run(capsys, "--json", str(SYN / "v10.0-multifd.source.log"),
                       str(SYN / "v10.0-multifd.destination.log"))
    assert rc == 0, err
    j = json.loads(out)
    assert j["schema"] == "migprof.report/1" and j["malformed_lines"] == 0
    (m,) = j["migrations"]
    assert m["outcome"] == "completed" and m["dest_outcome"] == "completed"
    assert isinstance(m["verdict"], str) and m["converged"] is True
    assert [c["kind"] for c in m["checks"]][-1] == "exact"
    assert {d["kind"] for d in m["devices"]} == {"ram", "vfio", "other"}


def test_sides_given_per_input(capsys, tmp_path: Path) -> None:
    # names that say nothing about the side, so only --side tells
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    shutil.copy(SYN / "v10.0-multifd.source.log", a)
    shutil.copy(SYN / "v10.0-multifd.destination.log", b)
    rc, out, err = run(capsys, "--json", "--side", "source", "--side", "destination", str(a), str(b))
    assert rc == 0, err
    assert json.loads(out)["migrations"][0]["dest_outcome"] == "completed"
    rc, out, err = run(capsys, "--side", "source", str(a), str(b))
    assert rc == 2 and "--side" in err and out == ""


def test_real_run_directory_matches_query_migrate(capsys) -> None:
    run_dir = REAL / "10.0-converges"
    q = json.loads((run_dir / "query-migrate-source.json").read_text())
    rc, out, err = run(capsys, "--json", str(run_dir))
    assert rc == 0, err
    m = json.loads(out)["migrations"][0]
    assert m["dirty_syncs"] == q["ram"]["dirty-sync-count"]
    assert m["downtime_ms"] == pytest.approx(q["downtime"], abs=3)
    assert m["total_ms"] == pytest.approx(q["total-time"], abs=3)


def test_missing_file_is_reported_and_the_rest_still_printed(capsys, tmp_path: Path) -> None:
    missing = tmp_path / "nope.log"
    rc, out, err = run(capsys, str(missing), str(SYN / "v8.1-converging.log"))
    assert rc == 2
    assert str(missing) in err
    assert "Migration 1" in out and "completed" in out


def test_only_missing_file(capsys, tmp_path: Path) -> None:
    rc, out, err = run(capsys, str(tmp_path / "nope.log"))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "nope.log" in err


@pytest.mark.parametrize("content", [b"", b"\x00\x01\x02\xff" * 300,
                                     b"qemu-system-x86_64: -incoming: hello\nnot a trace line\n"],
                         ids=["empty", "binary", "no-trace-lines"])
def test_unusable_input_exit_2(capsys, tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.log"
    bad.write_bytes(content)
    rc, out, err = run(capsys, str(bad))
    assert rc == 2 and str(bad) in err and "Traceback" not in err
    rc, out, err = run(capsys, "--json", str(bad), str(SYN / "v8.1-converging.log"))
    assert rc == 2 and str(bad) in err
    assert json.loads(out)["migrations"][0]["outcome"] == "completed"


def test_log_without_migration(capsys, tmp_path: Path) -> None:
    log = tmp_path / "idle.log"
    log.write_text("4200@1764000000.000100:vfio_migration_set_state  (0000:3b:00.1) state RUNNING\n")
    rc, out, err = run(capsys, str(log))
    assert rc == 2
    assert "no migration found" in err and str(log) in err


def test_malformed_lines_are_warned_with_file_and_line(capsys, tmp_path: Path) -> None:
    src = (SYN / "v8.1-converging.log").read_text().splitlines()
    n = next(i for i, s in enumerate(src) if "migrate_pending_estimate" in s)
    src[n] = src[n].split(":migrate_pending_estimate")[0] + ":migrate_pending_estimate estimate pending size x"
    log = tmp_path / "mangled.log"
    log.write_text("\n".join(src) + "\n")
    rc, out, err = run(capsys, "--json", str(log))
    assert rc == 0
    j = json.loads(out)
    assert j["malformed_lines"] == 1
    assert f"{log}:{n + 1}:" in err
    assert j["migrations"][0]["outcome"] == "completed"


def test_help_has_examples(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["report", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--json" in out
