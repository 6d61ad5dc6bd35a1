"""The model on REAL VFIO migrations: the kernel's mtty device in the nested lab (tests/data/real-vfio).

Each scenario directory is what QEMU 10.0, QMP and the BPF collector produced inside the L1
VM (see the README there). It goes through `migprof report --json DIR`, the path users take
(trace logs, events.jsonl, bpf.jsonl, the QEMU command lines). Expected values are mtty's
exact sizes (vfio-uapi.md §4.1), QEMU's own query-migrate reply, run.json, and the trace read
with a plain regex here, independent of migprof's parser.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from typing import Any

import pytest
from conftest import REAL_VFIO as DATA
from vfio_checks import (
    COMPLETED,
    DESTINATION_STATES,
    EXPECT,
    MTTY_PRECOPY_BYTES,
    MTTY_STOPCOPY_BYTES,
    MTTY_TOTAL_BYTES,
    MTTY_VFIO_TRANSFERRED_MULTIFD,
    SOURCE_STATES,
)

from profiler.cli import main
from profiler.model.aliases import device_aliases

WITH_BPF = [n for n in COMPLETED if (DATA / n / "bpf.jsonl").exists()]
DOWNTIME = re.compile(r":vmstate_downtime_(save|load) type=\S+ idstr=(\S+) instance_id=\d+ downtime=(\d+)")

_cache: dict[tuple[str, bool], Any] = {}


def report(name: str, json_out: bool = True) -> Any:
    """`migprof report [--json] DIR` of one scenario (run once per scenario)."""
    key = (name, json_out)
    if key not in _cache:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["report", *(["--json"] if json_out else []), str(DATA / name)])
        assert rc == 0, err.getvalue()
        _cache[key] = (json.loads(out.getvalue()) if json_out else out.getvalue(), err.getvalue())
    return _cache[key]


def run_info(name: str) -> dict[str, Any]:
    return json.loads((DATA / name / "run.json").read_text())


def qm(name: str) -> dict[str, Any]:
    return json.loads((DATA / name / "query-migrate-source.json").read_text())


def migration(name: str) -> dict[str, Any]:
    return report(name)[0]["migrations"][-1]


def vfio(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(source device, destination device): each side names its mdev by its own UUID."""
    mtty = run_info(name)["mtty"]
    devs = {d["name"]: d for d in migration(name)["devices"] if d["kind"] == "vfio"}
    assert set(devs) == {mtty["source_uuid"], mtty["destination_uuid"]}, "no duplicate for fd14 / mtty0"
    return devs[mtty["source_uuid"]], devs[mtty["destination_uuid"]]


def _norm(s: str) -> str:
    return s.upper().replace("-", "_")


def changes(dev: dict[str, Any], origin: str) -> list[str]:
    """The device's confirmed states from one origin, normalised, from its first state on."""
    return [_norm(s["state"]) for s in dev["states"] if s["origin"] == origin and s["confirmed"]]


def test_every_scenario_is_here() -> None:
    assert sorted(p.name for p in DATA.iterdir() if p.is_dir()) == sorted(EXPECT)
    assert WITH_BPF, "at least one capture ran the BPF collector"


@pytest.mark.parametrize("name", COMPLETED)
def test_outcome_and_times_match_query_migrate(name: str) -> None:
    m, q = migration(name), qm(name)
    assert m["outcome"] == q["status"] == "completed"
    assert m["dest_outcome"] == "completed"
    assert m["dirty_syncs"] == q["ram"]["dirty-sync-count"]
    for key, qkey in (("downtime_ms", "downtime"), ("total_ms", "total-time")):
        if m["sources"].get(key) == "query-migrate":  # the final reply is in events.jsonl
            assert m[key] == q[qkey]
        else:  # from the trace: nested TCG puts QEMU's clock reads tens of ms from the lines
            assert m[key] == pytest.approx(q[qkey], abs=60)


@pytest.mark.parametrize("name", COMPLETED)
def test_mtty_bytes(name: str) -> None:
    """24 bytes in pre-copy, 72 in stop-copy, on the source's device."""
    src, dst = vfio(name)
    assert (src["precopy_bytes"], src["stopcopy_bytes"]) == (MTTY_PRECOPY_BYTES, MTTY_STOPCOPY_BYTES)
    assert src["initial_pending_bytes"] == MTTY_PRECOPY_BYTES
    assert src["stopcopy_size_bytes"] == MTTY_TOTAL_BYTES  # GET MIG_DATA_SIZE / pending exact
    assert src["side"] == "source" and dst["side"] == "destination"


@pytest.mark.parametrize("name", COMPLETED)
def test_vfio_transferred_against_the_device_bytes(name: str) -> None:
    m = migration(name)
    want = EXPECT[name].vfio_transferred
    assert m["vfio_transferred_bytes"] == qm(name)["vfio"]["transferred"] == want
    src, _ = vfio(name)
    if src["stopcopy_thread_ms"] is None:
        assert src["precopy_bytes"] + src["stopcopy_bytes"] == want == MTTY_TOTAL_BYTES
    else:  # multifd: vfio.transferred also counts the device-state packets (headers, config)
        assert want == MTTY_VFIO_TRANSFERRED_MULTIFD
        assert src["stopcopy_bytes"] in (None, MTTY_STOPCOPY_BYTES)
    assert not [w for w in report(name)[0]["warnings"] if "vfio.transferred" in w]


@pytest.mark.parametrize("name", COMPLETED)
def test_device_states_on_both_sides(name: str) -> None:
    """Every witness sees the same sequence: the trace's confirmed set_device_state, QMP's
    VFIO_MIGRATION events (joined to the device by the command line) and BPF's SET ioctls."""
    src, dst = vfio(name)
    origins = ["qemu-log", "qmp"] + (["bpf"] if name in WITH_BPF else [])
    for origin in origins:
        s = changes(src, origin)
        assert "PRE_COPY" in s, (origin, s)
        s = s[s.index("PRE_COPY"):]
        assert s[: len(SOURCE_STATES)] == SOURCE_STATES, (origin, s)
        d = changes(dst, origin)
        assert d[: len(DESTINATION_STATES)] == DESTINATION_STATES, (origin, d)
    # the trace's vfio_migration_set_state lines are requests (QEMU >= 9.1), never confirmations
    requested = [_norm(s["state"]) for s in src["states"] if s["origin"] == "qemu-log" and not s["confirmed"]]
    assert requested[requested.index("PRE_COPY"):][:3] == SOURCE_STATES[:3]


@pytest.mark.parametrize("name", COMPLETED)
def test_qmp_device_id_joins_the_host_name(name: str) -> None:
    """QMP says `mtty0`; the command line says `sysfsdev=.../<uuid>,id=mtty0` on each side."""
    info = run_info(name)
    mtty = info["mtty"]
    meta = {"run": info, "cmdline": {s: (DATA / name / f"{s}.cmdline").read_text()
                                     for s in ("source", "destination")}}
    assert device_aliases(meta) == {("source", mtty["qdev_id"]): mtty["source_uuid"],
                                    ("destination", mtty["qdev_id"]): mtty["destination_uuid"]}
    # the command lines alone give the same mapping
    assert device_aliases({"cmdline": meta["cmdline"]}) == device_aliases(meta)
    src, dst = vfio(name)
    assert mtty["qdev_id"] in src["aliases"] and mtty["qdev_id"] in dst["aliases"]
    assert not [d for d in migration(name)["devices"] if d["name"] == mtty["qdev_id"]]


@pytest.mark.parametrize("name", WITH_BPF)
def test_bpf_data_fd(name: str) -> None:
    """Data-fd reads per phase on the source, writes on the destination, latency, and the
    trace and BPF agreeing (no warning)."""
    src, dst = vfio(name)
    rows = [json.loads(x) for x in (DATA / name / "bpf.jsonl").read_text().splitlines() if x.strip()]
    reads = [r for r in rows if r["event"] == "bpf_data_read" and r["side"] == "source"]
    writes = [r for r in rows if r["event"] == "bpf_data_write" and r["side"] == "destination"]
    # BPF names the device by the device fd its data fd came from (fdN): on each side that
    # name, and no other fd, joins the mdev's UUID
    assert {a for a in src["aliases"] if re.fullmatch(r"fd\d+", a)} == {r["device"] for r in reads}
    assert {a for a in dst["aliases"] if re.fullmatch(r"fd\d+", a)} == {r["device"] for r in writes}
    by = src["bytes_by_phase"]
    assert by.get("PRE_COPY", 0) + by.get("PRE_COPY_P2P", 0) == MTTY_PRECOPY_BYTES
    assert by["STOP_COPY"] == MTTY_STOPCOPY_BYTES
    assert dst["bytes_by_phase"] == {"RESUMING": MTTY_TOTAL_BYTES}
    assert (dst["precopy_bytes"], dst["stopcopy_bytes"]) == (MTTY_PRECOPY_BYTES, MTTY_STOPCOPY_BYTES)
    assert src["read_calls"] == len(reads) and dst["write_calls"] == len(writes)
    assert src["read_ms"] == pytest.approx(sum(r["dur_ns"] for r in reads) / 1e6)
    assert src["read_max_us"] == pytest.approx(max(r["dur_ns"] for r in reads) / 1e3)
    assert 0 < src["read_p50_us"] <= src["read_max_us"]
    assert src["sources"]["precopy_bytes"] == "trace+bpf"
    assert src["sources"]["initial_pending_bytes"] == "trace+bpf"  # and they agree: no warning
    multifd = src["stopcopy_thread_ms"] is not None
    assert src["sources"]["stopcopy_bytes"] == ("bpf" if multifd else "trace+bpf")
    assert dst["sources"]["precopy_bytes"] == "bpf"
    assert not [w for w in report(name)[0]["warnings"] if "BPF" in w]


def test_multifd_stop_copy_thread() -> None:
    """QEMU 10.0 multifd: stop-copy data leaves in a thread and no vfio_save_block is traced;
    the thread's time is the device's, BPF supplies the bytes the trace lacks."""
    src, _ = vfio("multifd")
    assert src["stopcopy_thread_ms"] is not None and src["stopcopy_thread_ms"] > 0
    assert src["idstr"] == "0000:00:02.0/vfio"
    text = (DATA / "multifd" / "source.log").read_text()
    assert "vfio_save_complete_precopy_thread_start" in text
    if "multifd" in WITH_BPF:
        assert src["stopcopy_bytes"] == MTTY_STOPCOPY_BYTES


def test_switchover_ack() -> None:
    m = migration("switchover-ack")
    assert m["switchover_approved_ms"] is not None and m["switchover_ack_ms"] is not None
    # the destination approves, then the source's return path thread sees the ACK
    assert m["switchover_approved_ms"] <= m["switchover_ack_ms"] + 5
    assert m["switchover_ack_ms"] <= m["switchover_ms"]


@pytest.mark.parametrize("name", COMPLETED)
def test_per_device_downtime(name: str) -> None:
    """vmstate_downtime_save / _load (µs) per idstr, summed over its iterable and
    non-iterable entries: the save time is the source device's, the load time the destination's."""
    want: dict[tuple[str, str], float] = {}
    for side in ("source", "destination"):
        for kind, idstr, us in DOWNTIME.findall((DATA / name / f"{side}.log").read_text()):
            want[(kind, idstr)] = want.get((kind, idstr), 0.0) + int(us) / 1e3
    src, dst = vfio(name)
    assert src["idstr"] == dst["idstr"] == "0000:00:02.0/vfio"
    assert src["downtime_ms"] == pytest.approx(want[("save", src["idstr"])])
    assert dst["load_ms"] == pytest.approx(want[("load", dst["idstr"])])
    assert src["load_ms"] is None and dst["downtime_ms"] is None
    ram = migration(name)["devices"][0]
    assert ram["downtime_ms"] == pytest.approx(want[("save", "ram")])


def test_no_dirty_tracking_fails_without_device_bytes() -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        main(["report", "--json", str(DATA / "no-dirty-tracking")])
    m = json.loads(out.getvalue())["migrations"][-1]
    assert m["outcome"] == "failed"
    devs = [d for d in m["devices"] if d["kind"] == "vfio"]
    assert [d["name"] for d in devs] == [run_info("no-dirty-tracking")["mtty"]["source_uuid"]]
    assert devs[0]["precopy_bytes"] is None and devs[0]["stopcopy_bytes"] is None


@pytest.mark.parametrize("name", WITH_BPF)
def test_terminal_report_shows_the_data_fd(name: str) -> None:
    text, _ = report(name, json_out=False)
    assert "VFIO data fd (BPF)" in text
    assert f"RESUMING {MTTY_TOTAL_BYTES}" in text
    assert f"STOP_COPY {MTTY_STOPCOPY_BYTES}" in text
    assert "[bpf, qemu-log, qmp]" in text  # one timeline line per state change, with its witnesses


def test_downtime_raise_is_a_marker_and_the_limit_in_force() -> None:
    """The lab raised downtime-limit 300 -> 2000 ms at the 4th sync; switch-over came after."""
    m = migration("downtime-raised")
    mark = next(mk for mk in m["markers"] if mk["label"].startswith("raise-downtime-limit"))
    assert "downtime-limit=2000" in mark["label"]
    sets = [json.loads(r["detail"]) for r in map(json.loads, (DATA / "downtime-raised" / "events.jsonl")
                                                  .read_text().splitlines())
            if r["event"] == "qmp_params" and r["side"] == "source" and "downtime-limit" in (r.get("detail") or "")]
    assert [x["downtime-limit"] for x in sets] == [300, 2000]  # the lab's QMP commands, as sent
    assert m["downtime_limit_ms"] == 2000
    assert m["converged"] is True
    assert m["switchover_ms"] > mark["t_ms"]
    at = m["verdict_detail"]["converged_at_check"]
    assert m["checks"][at]["t_ms"] > mark["t_ms"]


def test_multifd_ram_bytes_are_not_the_main_channel_figure() -> None:
    """With multifd, query-migrate's precopy-bytes / downtime-bytes count the main channel
    only (80 and 0 here while 3.8 MB of pages went over multifd): the model does not pass
    them off as RAM's pre-copy / stop-copy bytes, and says why."""
    ram = migration("multifd")["devices"][0]
    assert qm("multifd")["ram"]["multifd-bytes"] > 0
    assert ram["precopy_bytes"] is None and ram["stopcopy_bytes"] is None
    assert "multifd" in ram["sources"]["precopy_bytes"]
    ram = migration("converges")["devices"][0]
    assert ram["precopy_bytes"] == qm("converges")["ram"]["precopy-bytes"]
    assert ram["sources"]["precopy_bytes"] == "query-migrate"
