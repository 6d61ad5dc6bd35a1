"""The QEMU log parser: every prefix x every version's line forms, device names, counts, real logs.

The per-version lines below are synthetic: written from the exact format strings quoted
in shared/reference/qemu-trace.md (sections 1.1, 1.4, 2), with the values in the
expectations. ``test_real_binary_formats_*`` checks the same table against the format
strings compiled into the real QEMU 7.2 and 10.0 binaries on this machine, and
``test_real_logs_*`` parses logs captured from real migrations (tests/data/real).
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from profiler import events
from profiler.errors import InputError
from profiler.sources import qemu_log
from profiler.sources.qemu_log import detect_side, parse_bytes, read_log
from profiler.sources.trace_formats import FIELD_MAP, as_signed64, formats

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "tests" / "data" / "real"
LINES = ROOT / "tests" / "data" / "synthetic" / "lines"
DEV = "0000:3b:00.1"

# (version, body line without prefix, expected columns)
CASES: list[tuple[str, str, dict]] = [
    # --- 7.2: VFIO protocol v1, hex sizes, migrate_pending with the threshold
    # --- monitor/trace-events (the libvirt lab's QMP_TRACE): the whole JSON in detail
    ("7.2", 'handle_qmp_command mon 0x55d0c0a8e000 req: {"execute": "cont", "id": "libvirt-412"}',
     dict(detail='{"execute": "cont", "id": "libvirt-412"}')),
    ("7.2", 'monitor_qmp_respond mon 0x55d0c0a8e000 resp: {"return": {}, "id": "libvirt-412"}',
     dict(detail='{"return": {}, "id": "libvirt-412"}')),
    ("7.2", "migrate_pending pending size 67108864 max 65381941 (pre = 67108864 compat=0 post=0)",
     dict(bytes=67108864, threshold_bytes=65381941, pre_bytes=67108864, compat_bytes=0, post_bytes=0)),
    ("7.2", "migrate_transferred transferred 4194304 time_spent 100 bandwidth 41943 max_size 2097150",
     dict(bytes=4194304, dur_ns=100_000_000, bw_bytes_per_ms=41943.0, threshold_bytes=2097150,
          switchover_bw_bytes_per_ms=None)),
    ("7.2", f"vfio_save_pending  ({DEV}) precopy 0x4000000 postcopy 0x0 compatible 0x10",
     dict(device=DEV, pre_bytes=0x4000000, post_bytes=0, compat_bytes=16)),
    ("7.2", f"vfio_update_pending  ({DEV}) pending 0x100000", dict(device=DEV, stopcopy_bytes=0x100000)),
    ("7.2", f"vfio_save_buffer  ({DEV}) Offset 0x1000 size 0x100000 pending 0x200000",
     dict(device=DEV, offset_bytes=0x1000, bytes=0x100000, stopcopy_bytes=0x200000)),
    ("7.2", f"vfio_save_iterate  ({DEV}) data_size 1048576", dict(device=DEV, bytes=1048576)),
    ("7.2", f"vfio_migration_set_state  ({DEV}) state 3", dict(device=DEV, state="PRE_COPY")),
    ("7.2", f"vfio_vmstate_change  ({DEV}) running 0 reason finish-migrate device state 2",
     dict(device=DEV, flags=0, detail="finish-migrate", state="STOP_COPY")),
    ("7.2", f"vfio_load_state_device_data  ({DEV}) Offset 0x0 size 0x100000",
     dict(device=DEV, bytes=0x100000, ret=None)),
    ("7.2", f"vfio_save_setup  ({DEV})", dict(device=DEV, bytes=None)),
    ("7.2", f"vfio_save_complete_precopy  ({DEV})", dict(device=DEV, ret=None)),
    ("7.2", f"vfio_migration_state_notifier  ({DEV}) state completed", dict(device=DEV, state="completed")),
    ("7.2", f"vfio_migration_probe  ({DEV}) Region 9", dict(device=DEV)),
    ("7.2", "vfio_get_dirty_bitmap container fd=25, iova=0x0 size= 0x8000000 bitmap_size=0x1000 start=0x0",
     dict(bytes=0x8000000, dirty_pages=None)),
    ("7.2", "migrate_fd_error error=Unable to write to socket: Broken pipe",
     dict(detail="Unable to write to socket: Broken pipe")),
    ("7.2", "process_incoming_migration_co_end ret=0 postcopy-state=0", dict(ret=0, state="postcopy-none")),
    # --- 8.0: protocol v2, stop-copy only
    ("8.0", f"vfio_state_pending_exact  ({DEV}) precopy 0x1000 postcopy 0x0 stopcopy size 0x2000000",
     dict(device=DEV, pre_bytes=0x1000, post_bytes=0, stopcopy_bytes=0x2000000, init_bytes=None)),
    ("8.0", f"vfio_save_setup  ({DEV}) data buffer size 0x100000", dict(device=DEV, bytes=0x100000)),
    ("8.0", f"vfio_save_block  ({DEV}) data_size 1048576", dict(device=DEV, bytes=1048576)),
    ("8.0", f"vfio_save_complete_precopy  ({DEV}) ret -5", dict(device=DEV, ret=-5)),
    ("8.0", f"vfio_load_state_device_data  ({DEV}) size 0x100000 ret 0", dict(device=DEV, bytes=0x100000, ret=0)),
    ("8.0", f"vfio_load_state  ({DEV}) data 0xffffffffef100004",
     dict(device=DEV, flags=as_signed64(0xFFFFFFFFEF100004))),
    ("8.0", f"vfio_migration_set_state  ({DEV}) state STOP_COPY", dict(device=DEV, state="STOP_COPY")),
    ("8.0", f"vfio_vmstate_change  ({DEV}) running 1 reason running device state RUNNING",
     dict(device=DEV, flags=1, detail="running", state="RUNNING")),
    ("8.0", "migrate_pending_estimate estimate pending size 1073741824 (pre = 1073741824 post=0)",
     dict(bytes=1073741824, pre_bytes=1073741824, post_bytes=0)),
    ("8.0", "migrate_pending_exact exact pending size 5242880 (pre = 5242880 post=0)",
     dict(bytes=5242880, pre_bytes=5242880, post_bytes=0)),
    ("8.0", "migration_thread_low_pending 5242880", dict(bytes=5242880)),
    ("8.0", "migration_bitmap_sync_end dirty_pages 1280", dict(dirty_pages=1280)),
    ("8.0", "migration_completion_vm_stop ret 0", dict(ret=0)),
    ("8.0", "migrate_set_state new state active", dict(state="active")),
    ("8.0", "savevm_section_start ram, section_id 2", dict(device="ram", section_id=2)),
    ("8.0", "savevm_section_end 0000:00:03.0/vfio, section_id 3 -> 1",
     dict(device="0000:00:03.0/vfio", section_id=3, ret=1)),
    ("8.0", "ram_load_complete exit_code 0 seq iteration 7", dict(count=7)),
    # --- 8.1: pre-copy, hex
    ("8.1", f"vfio_state_pending_estimate  ({DEV}) precopy 0x4400000 postcopy 0x0 precopy initial size 0x0 "
            "precopy dirty size 0x400000",
     dict(device=DEV, pre_bytes=0x4400000, post_bytes=0, init_bytes=0, dirty_bytes=0x400000)),
    ("8.1", f"vfio_state_pending_exact  ({DEV}) precopy 0x4400000 postcopy 0x0 stopcopy size 0x2000000 "
            "precopy initial size 0x100000 precopy dirty size 0x400000",
     dict(device=DEV, stopcopy_bytes=0x2000000, init_bytes=0x100000, dirty_bytes=0x400000)),
    ("8.1", f"vfio_save_iterate  ({DEV}) precopy initial size 0x0 precopy dirty size 0x400000",
     dict(device=DEV, init_bytes=0, dirty_bytes=0x400000, bytes=None)),
    ("8.1", "migrate_transferred transferred 8388608 time_spent 101 bandwidth 83055 max_size 24916500",
     dict(bytes=8388608, dur_ns=101_000_000, bw_bytes_per_ms=83055.0, threshold_bytes=24916500)),
    ("8.1", f"vfio_migration_realize  ({DEV})", dict(device=DEV)),
    ("8.1", "vfio_get_dirty_bitmap container fd=25, iova=0x0 size= 0x8000000 bitmap_size=0x1000 start=0x0 "
            "dirty_pages=77", dict(bytes=0x8000000, dirty_pages=77)),
    # --- 8.2: switchover_bw, P2P, downtime tracepoints
    ("8.2", "migrate_transferred transferred 8388608 time_spent 100 bandwidth 83886 switchover_bw 125000 "
            "max_size 25165800",
     dict(bytes=8388608, dur_ns=100_000_000, bw_bytes_per_ms=83886.0, switchover_bw_bytes_per_ms=125000.0,
          threshold_bytes=25165800)),
    ("8.2", f"vfio_vmstate_change_prepare  ({DEV}) running 0 reason finish-migrate device state PRE_COPY_P2P",
     dict(device=DEV, flags=0, detail="finish-migrate", state="PRE_COPY_P2P")),
    ("8.2", "vmstate_downtime_save type=iterable idstr=0000:00:03.0/vfio instance_id=0 downtime=12345",
     dict(state="iterable", device="0000:00:03.0/vfio", instance_id=0, dur_ns=12_345_000)),
    ("8.2", "vmstate_downtime_load type=non-iterable idstr=timer instance_id=0 downtime=7",
     dict(state="non-iterable", device="timer", instance_id=0, dur_ns=7000)),
    ("8.2", "vmstate_downtime_checkpoint src-downtime-start", dict(state="src-downtime-start")),
    # --- 9.0 / 9.1
    ("9.0", f"vfio_migration_state_notifier  ({DEV}) state 1", dict(device=DEV, state="precopy-done")),
    ("9.1", f"vfio_migration_set_state  ({DEV}) new state STOP_COPY, recover state ERROR",
     dict(device=DEV, state="STOP_COPY", detail="ERROR")),
    ("9.1", f"vfio_migration_set_device_state  ({DEV}) state UNKNOWN STATE", dict(device=DEV, state="UNKNOWN STATE")),
    ("9.1", "migrate_error error=Unable to write to socket: Connection reset by peer",
     dict(detail="Unable to write to socket: Connection reset by peer")),
    # --- 9.2: decimal sizes, new *_start events
    ("9.2", f"vfio_state_pending_estimate  ({DEV}) precopy 71303168 postcopy 0 precopy initial size 0 "
            "precopy dirty size 4194304",
     dict(device=DEV, pre_bytes=71303168, post_bytes=0, init_bytes=0, dirty_bytes=4194304)),
    ("9.2", f"vfio_state_pending_exact  ({DEV}) precopy 33554432 postcopy 0 stopcopy size 33554432 "
            "precopy initial size 0 precopy dirty size 0",
     dict(device=DEV, pre_bytes=33554432, stopcopy_bytes=33554432, init_bytes=0, dirty_bytes=0)),
    ("9.2", f"vfio_save_iterate  ({DEV}) precopy initial size 0 precopy dirty size 3145728",
     dict(device=DEV, init_bytes=0, dirty_bytes=3145728)),
    ("9.2", f"vfio_save_setup  ({DEV}) data buffer size 1048576", dict(device=DEV, bytes=1048576)),
    ("9.2", f"vfio_load_state_device_data  ({DEV}) size 1048576 ret 0", dict(device=DEV, bytes=1048576, ret=0)),
    ("9.2", f"vfio_save_iterate_start  ({DEV})", dict(device=DEV)),
    ("9.2", f"vfio_save_complete_precopy_start  ({DEV})", dict(device=DEV)),
    ("9.2", f"vfio_save_block_precopy_empty_hit  ({DEV})", dict(device=DEV)),
    ("9.2", "multifd_send_thread_end channel 1 packets 300", dict(count=300)),
    # --- 10.0: multifd device state
    ("10.0", f"vfio_save_complete_precopy_thread_start  ({DEV}) idstr 0000:00:03.0/vfio instance 0",
     dict(device=DEV, detail="0000:00:03.0/vfio", instance_id=0)),
    ("10.0", f"vfio_save_complete_precopy_thread_end  ({DEV}) ret 1", dict(device=DEV, ret=1)),
    ("10.0", f"vfio_load_state_device_buffer_incoming  ({DEV}) idx 17", dict(device=DEV, buffer_idx=17)),
    ("10.0", f"vfio_load_bufs_thread_start  ({DEV})", dict(device=DEV)),
    ("10.0", f"vfio_load_device_config_state_start  ({DEV})", dict(device=DEV)),
    ("10.0", "vfio_get_dirty_bitmap iova=0x0 size= 0x8000000 bitmap_size=0x1000 start=0x0 dirty_pages=12",
     dict(bytes=0x8000000, dirty_pages=12)),
    ("10.0", "migrate_set_state new state device", dict(state="device")),
    # --- 10.1 / 10.2
    ("10.1", "vfio_container_query_dirty_bitmap iova=0x0 size= 0x8000000 bitmap_size=0x1000 start=0x0 "
             "dirty_pages=3", dict(bytes=0x8000000, dirty_pages=3)),
    ("10.2", "vfio_container_query_dirty_bitmap iova=0x0 size= 0x8000000 bitmap_size=0x1000 gpa=0x0 "
             "dirty_pages=4", dict(bytes=0x8000000, dirty_pages=4)),
    ("10.2", "process_incoming_migration_co_end ret=-22", dict(ret=-22, state=None)),
    # empty formats print a trailing space
    ("10.2", "savevm_state_iterate ", dict()),
    ("10.2", "migration_bitmap_sync_start ", dict()),
]

T_SEC, T_USEC = 1733829000, 12345
T_NS = T_SEC * 1_000_000_000 + T_USEC * 1000

# prefix name -> (formatter, expected t_ns, tid, pid)
PREFIXES = {
    "tid": (lambda b: f"4242@{T_SEC}.{T_USEC:06d}:{b}", T_NS, 4242, None),
    "iso": (lambda b: f"2024-12-10T11:10:00.012345Z {b}", T_NS, None, None),
    "iso-nofrac": (lambda b: f"2024-12-10T11:10:00Z {b}", T_SEC * 1_000_000_000, None, None),
    "bare": (lambda b: b, None, None, None),
    "prog": (lambda b: f"qemu-system-x86_64(4242:live_migration): {b}", None, 4242, None),
    "iso-guest-prog": (lambda b: f"2024-12-10T11:10:00.012345Z [fish food] qemu-system-x86_64(4242:mig/src/main): {b}",
                       T_NS, 4242, None),
    "stap": (lambda b: f"777@{T_NS + 321} {b}", T_NS + 321, None, 777),
}


def _case_id(c: tuple) -> str:
    return f"{c[0]}-{c[1].split()[0]}"


@pytest.mark.parametrize("prefix", list(PREFIXES))
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_every_prefix_and_version_line(prefix: str, case: tuple) -> None:
    version, body, want = case
    fmt, t_ns, tid, pid = PREFIXES[prefix]
    line = fmt(body)
    res = parse_bytes(("qemu-system-x86_64: some unrelated message\n" + line + "\n").encode(), file="t.log")
    assert (res.lines, res.skipped, res.malformed, res.events) == (2, 1, 0, 1), res.warnings
    row = res.frame.iloc[0]
    assert row["event"] == body.split(" ", 1)[0]
    assert row["raw"] == line
    assert row["line"] == 2 and row["seq"] == 2 and row["file"] == "t.log"
    assert row["origin"] == "qemu-log"
    if t_ns is None:
        assert pd.isna(row["t_ns"]) and row["clock"] == "none"
    else:
        assert row["t_ns"] == t_ns and row["clock_ns"] == t_ns and row["clock"] == "realtime"
    assert (pd.isna(row["tid"]) if tid is None else row["tid"] == tid)
    assert (pd.isna(row["pid"]) if pid is None else row["pid"] == pid)
    event = row["event"]
    for col, val in want.items():
        if val is None:
            assert pd.isna(row[col]), (col, row[col])
        else:
            assert row[col] == val, (col, row[col], val)
    # columns the event does not fill stay NA; device only where the format says so
    filled = set(FIELD_MAP.get(event, {}))
    for col in ("device", "bytes", "state", "detail", "count", "ret", "dur_ns", "threshold_bytes", "flags",
                "dirty_pages", "section_id", "instance_id", "buffer_idx", "compat_bytes", "offset_bytes",
                "switchover_bw_bytes_per_ms"):
        if col not in filled:
            assert pd.isna(row[col]), (col, row[col])


def test_case_table_covers_every_event_of_the_schema() -> None:
    covered = {c[1].split(" ", 1)[0] for c in CASES}
    # the device-only VFIO events share one grammar; a sample of them is in CASES
    device_only = {e for e, cols in events.EVENT_FIELDS.items() if set(cols) <= {"device", "buffer_idx"}
                   and e.startswith("vfio_")}
    assert set(events.EVENT_FIELDS) - device_only <= covered, set(events.EVENT_FIELDS) - device_only - covered
    assert len(device_only & covered) >= 8


@pytest.mark.parametrize("event", sorted(events.EVENT_FIELDS))
def test_every_schema_event_sets_its_device_only_from_the_format(event: str) -> None:
    variants = formats()[event]
    for v in variants:
        starts_with_name = v.fmt.startswith(" (%s)")
        assert ("device" in FIELD_MAP[event]) == (
            starts_with_name or event in ("vmstate_downtime_save", "vmstate_downtime_load",
                                          "savevm_section_start", "savevm_section_end")), event


def test_field_map_matches_the_schema_contract() -> None:
    # every event the schema documents is parsed into (a subset of) its documented columns
    for ev, cols in events.EVENT_FIELDS.items():
        assert ev in formats(), ev
        assert set(FIELD_MAP[ev]) <= set(cols), ev
    for ev, cols in FIELD_MAP.items():
        assert ev in formats(), ev
        assert set(cols) <= set(events.EVENT_FIELDS[ev]), ev


@pytest.mark.parametrize("name", [
    "VFIO user </run/vfio-user/sock 1>",
    "mdev (odd) name",
    "0000:3b:00.1) data_size 7",  # the name itself holds the literal that follows it
    "a b  c",
])
def test_device_names_follow_the_format(name: str) -> None:
    lines = [
        f"vfio_save_block  ({name}) data_size 4096",
        f"vfio_save_setup  ({name})",
        f"vfio_vmstate_change  ({name}) running 0 reason finish-migrate device state STOP_COPY",
        f"vfio_state_pending_exact  ({name}) precopy 0 postcopy 0 stopcopy size 1 "
        "precopy initial size 2 precopy dirty size 3",
    ]
    res = parse_bytes(("\n".join(lines) + "\n").encode())
    assert res.malformed == 0 and res.events == 4, res.warnings
    df = res.frame
    assert list(df["device"]) == [name] * 4
    assert df.loc[0, "bytes"] == 4096
    assert df.loc[3, "dirty_bytes"] == 3


def test_more_than_a_name_in_parentheses_never_invents_a_device() -> None:
    text = (
        "vfio_pci_read_config  (0000:00:03.0, @0x4, len=0x2) 0x7\n"
        "vfio_pci_write_config  (0000:00:03.0, @0x4, 0x7, len=0x2)\n"
        "vfio_region_read  (0000:00:03.0:region0+0x10, 4) = 0x0\n"
        "1@1.000000:vfio_pci_read_config  (0000:00:03.0, @0x4, len=0x2) 0x7\n"
    )
    res = parse_bytes(text.encode())
    assert res.events == 4 and res.malformed == 0 and res.skipped == 0
    assert res.frame["device"].isna().all()
    assert set(res.frame["event"]) == {"vfio_pci_read_config", "vfio_pci_write_config", "vfio_region_read"}


def test_hex_and_decimal_sizes_whatever_the_version() -> None:
    # RHEL's "9.1" prints the 9.2 decimal format; an old build may print hex where the
    # newest format says decimal: both read the same
    hexl = f"vfio_save_iterate  ({DEV}) precopy initial size 0x100 precopy dirty size 0x0"
    decl = f"vfio_save_iterate  ({DEV}) precopy initial size 256 precopy dirty size 0"
    res = parse_bytes(f"{hexl}\n{decl}\n".encode())
    assert list(res.frame["init_bytes"]) == [256, 256]
    assert res.malformed == 0


def test_malformed_known_events_are_counted_kept_and_reported() -> None:
    good = "migrate_set_state new state active"
    bad = [
        "migrate_pending_exact exact pending size lots (pre = 1 post=0)",
        f"vfio_save_block  ({DEV}) data_size",
        "migration_bitmap_sync_end dirty_pages 12 extra",
        "vmstate_downtime_save type=iterable",
    ]
    text = "\n".join([good] + bad) + "\n"
    res = parse_bytes(text.encode(), file="x.log")
    assert (res.lines, res.events, res.malformed, res.skipped) == (5, 1, 4, 0)
    assert len(res.frame) == 5
    assert [w.split(":")[1] for w in res.warnings[:4]] == ["2", "3", "4", "5"]
    assert all(w.startswith("x.log:") for w in res.warnings)
    bad_rows = res.frame.iloc[1:]
    assert bad_rows[["bytes", "device", "count", "state"]].isna().all().all()
    assert list(bad_rows["raw"]) == bad


def test_warning_list_is_capped_but_the_count_exact() -> None:
    n = qemu_log.MAX_WARNINGS * 3
    text = "migrate_set_state new state\n" * n
    res = parse_bytes(text.encode(), file="y.log")
    assert res.malformed == n
    assert len(res.warnings) <= qemu_log.MAX_WARNINGS + 1
    assert str(n) in res.warnings[-1]


def test_non_trace_lines_are_skipped_and_counted() -> None:
    text = (
        "qemu-system-x86_64: -device vfio-pci,host=0000:3b:00.1: warning: something\n"
        "2025-07-21T18:43:28.089819Z qemu-system-x86_64: terminating on signal 15\n"
        "2024-01-01 12:00:00.000+0000: starting up libvirt version: 9.0.0\n"
        "LC_ALL=C PATH=/usr/bin QEMU_AUDIO_DRV=none /usr/bin/qemu-system-x86_64 -name guest=vm\n"
        "\n"
        "hello world\n"
        "notanevent_name_at_all with text\n"
        "migrate_set_state new state active\n"
    )
    res = parse_bytes(text.encode())
    assert (res.lines, res.skipped, res.events) == (8, 7, 1)


def test_tid_prefixed_unknown_events_are_kept() -> None:
    # only tracing prints TID@sec.usec:, so an event newer than our name list is kept
    res = parse_bytes(b"7@1.000001:brand_new_event_of_qemu_11 x=1\nbrand_new_event_of_qemu_11 x=1\n")
    assert res.events == 1 and res.skipped == 1
    assert res.frame.loc[0, "event"] == "brand_new_event_of_qemu_11"


def test_crlf_and_missing_final_newline() -> None:
    res = parse_bytes(b"migrate_set_state new state setup\r\nmigration_thread_low_pending 5")
    assert res.events == 2 and res.malformed == 0
    assert list(res.frame["raw"]) == ["migrate_set_state new state setup", "migration_thread_low_pending 5"]
    assert res.frame.loc[1, "bytes"] == 5


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    res = parse_bytes(b"migrate_error error=bad \xff\xfe bytes\nmigrate_set_state new state failed\n")
    assert res.events == 2
    assert "\ufffd" in res.frame.loc[0, "detail"]


def test_chunk_boundaries_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "".join(f"{i}@1.{i:06d}:migrate_pending_exact exact pending size {i} (pre = {i} post=0)\n"
                   for i in range(2000)).encode()
    whole = parse_bytes(text)
    monkeypatch.setattr(qemu_log, "CHUNK_BYTES", 977)
    cut = parse_bytes(text)
    assert cut.lines == whole.lines == 2000
    pd.testing.assert_frame_equal(cut.frame, whole.frame)
    assert list(cut.frame["line"]) == list(range(1, 2001))


def test_read_log_matches_parse_bytes_and_opens_gzip(tmp_path: Path) -> None:
    text = "\n".join(c[1] for c in CASES) + "\n"
    p = tmp_path / "source.log"
    p.write_text(text)
    g = tmp_path / "source.log.gz"
    g.write_bytes(gzip.compress(text.encode()))
    a = read_log(p)
    b = read_log(g)
    assert a.malformed == 0 and a.skipped == 0 and a.events == len(CASES)
    pd.testing.assert_frame_equal(a.frame.drop(columns="file"), b.frame.drop(columns="file"))
    assert a.frame.loc[0, "file"] == str(p)


def test_missing_file_and_directory_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.log"):
        read_log(tmp_path / "nope.log")
    with pytest.raises(InputError, match="directory"):
        read_log(tmp_path)


@pytest.mark.parametrize(("names", "path", "side"), [
    ({"loadvm_state_setup", "vfio_load_state"}, None, "destination"),
    ({"process_incoming_migration_co_end"}, "whatever.log", "destination"),
    ({"migrate_pending_exact", "migrate_set_state"}, None, "source"),
    ({"loadvm_state_setup", "migrate_pending_estimate"}, None, "source"),
    ({"migrate_set_state"}, "/x/dst.log", "destination"),
    ({"migrate_set_state"}, "/x/qemu-destination.log", "destination"),
    ({"migrate_set_state"}, "/x/src-host.log", "source"),
    ({"migrate_set_state"}, "/x/vm1.log", "unknown"),
])
def test_side_detection(names: set, path: str | None, side: str) -> None:
    assert detect_side(names, path) == side


# ---------------------------------------------------------------------------
# the format table against the real binaries


def _binary_formats(path: str) -> dict[str, str]:
    data = Path(path).read_bytes()
    out = {}
    for m in re.finditer(rb"%d@%zu\.%06zu:([A-Za-z0-9_]+) ([^\x00\n]*)\n\x00", data):
        out[m.group(1).decode()] = m.group(2).decode("latin-1")
    return out


def _render(fmt: str) -> tuple[str, list]:
    """printf a format with sample values: strings = a device name with a space."""
    vals: list = []

    def sub(m: re.Match) -> str:
        conv = m.group(2)
        if conv == "%":
            return "%"
        if conv == "s":
            vals.append("dev one")
            return "dev one"
        if conv in "xX":
            vals.append(0x1F)
            return "1f"
        if conv == "p":
            return "0x55d925bd9490"
        vals.append(31)
        return "31"

    return re.sub(r"%([-+ #0]*\d*(?:\.\d+)?(?:hh|h|ll|l|z|j|t)?)([diouxXcsp%])", sub, fmt), vals


QEMU10 = Path(os.environ.get("MIGPROF_CACHE", "/var/cache/migprof")) / "qemu-10.0/usr/bin/qemu-system-x86_64"


ABSENT_IN = {
    # 7.2: migrate_transferred has no avail_bw, vfio_save_setup no data_buffer_size,
    # vfio_save_iterate only data_size, vfio_get_dirty_bitmap no dirty_pages
    "/usr/bin/qemu-system-x86_64": {("migrate_transferred", "switchover_bw_bytes_per_ms"), ("vfio_save_setup", "bytes"),
                                    ("vfio_save_iterate", "init_bytes"), ("vfio_save_iterate", "dirty_bytes"),
                                    ("vfio_get_dirty_bitmap", "dirty_pages")},
    # 10.0: vfio_save_iterate prints the precopy sizes, no data_size
    str(QEMU10): {("vfio_save_iterate", "bytes")},
}


@pytest.mark.parametrize("binary", ["/usr/bin/qemu-system-x86_64", str(QEMU10)], ids=["7.2", "10.0"])
def test_real_binary_formats_parse(binary: str) -> None:
    """Every migration/VFIO event compiled into the real binary parses with its fields."""
    fmts = _binary_formats(binary)
    ours = [e for e in FIELD_MAP if e in fmts]
    assert len(ours) >= 20, sorted(fmts)[:5]
    lines = []
    for ev in ours:
        body, _ = _render(fmts[ev])
        lines.append(f"{ev} {body}")
    res = parse_bytes(("\n".join(lines) + "\n").encode())
    assert res.malformed == 0, res.warnings
    assert res.events == len(ours)
    df = res.frame.set_index("event")
    absent = set()
    for ev in ours:
        if fmts[ev].startswith(" (%s)"):
            assert df.loc[ev, "device"] == "dev one", ev
        for col in FIELD_MAP[ev]:
            if col in ("bytes", "count", "init_bytes", "dirty_bytes", "stopcopy_bytes", "pre_bytes", "dirty_pages",
                       "switchover_bw_bytes_per_ms", "compat_bytes", "offset_bytes", "section_id", "instance_id",
                       "buffer_idx"):
                v = df.loc[ev, col]
                if pd.isna(v):
                    absent.add((ev, col))
                else:
                    assert v == 31, (ev, col, v)
    # NA only where this version's format has no such argument (FIELD_MAP covers all versions)
    assert absent == ABSENT_IN[binary], sorted(absent)


# ---------------------------------------------------------------------------
# real logs


REAL_LOGS = sorted(p for p in REAL.glob("*/*.log*") if p.name.split(".")[0] in ("source", "destination"))


def test_real_logs_exist() -> None:
    assert len(REAL_LOGS) >= 10


@pytest.mark.parametrize("path", REAL_LOGS, ids=[f"{p.parent.name}/{p.name}" for p in REAL_LOGS])
def test_real_logs_parse_without_malformed_lines(path: Path) -> None:
    res = read_log(path)
    assert res.malformed == 0, res.warnings[:3]
    assert res.skipped == 0
    assert res.events == res.lines > 0
    assert res.side == path.name.split(".")[0]
    events.validate(res.frame)
    df = res.frame
    if "no-timestamps" in path.parent.name:
        assert df["t_ns"].isna().all()
    else:
        assert df["t_ns"].notna().all() and df["tid"].notna().all()
        assert df["t_ns"].is_monotonic_increasing
    ev = set(df["event"])
    if res.side == "source":
        assert ev & {"migrate_pending", "migrate_pending_estimate"}
        thr = df.loc[df["event"] == "migrate_transferred", "threshold_bytes"]
        assert thr.notna().all()
    if path.parent.name.startswith("10.0") and res.side == "source":
        save = df[df["event"] == "vmstate_downtime_save"]
        if len(save):
            assert save["dur_ns"].notna().all() and save["device"].notna().all()


FIXTURES = sorted(LINES.glob("*.log"))


def test_line_fixtures_exist() -> None:
    assert len(FIXTURES) >= 15


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_synthetic_line_fixtures(path: Path) -> None:
    text = path.read_text()
    res = read_log(path)
    other = sum(1 for ln in text.splitlines() if ln.startswith("qemu-system-x86_64:"))
    assert res.malformed == 0, res.warnings
    assert res.skipped == other
    assert res.events == len(text.splitlines()) - other
    if "-tid" in path.name or "iso" in path.name or "stap" in path.name:
        assert res.frame["t_ns"].notna().all()


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_read_log_small_chunks_equal_one_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               chunk: int) -> None:
    src = next(p for p in REAL_LOGS if p.suffix == ".log" and "cancel-retry" in p.parent.name)
    text = src.read_bytes() + b"qemu-system-x86_64: not a trace line\n" + src.read_bytes()[:500]
    p = tmp_path / "x.log"
    p.write_bytes(text)
    whole = read_log(p)
    monkeypatch.setattr(qemu_log, "CHUNK_BYTES", chunk)
    cut = read_log(p)
    assert (cut.lines, cut.skipped, cut.malformed) == (whole.lines, whole.skipped, whole.malformed)
    pd.testing.assert_frame_equal(cut.frame, whole.frame)


# ---------------------------------------------------------------------------
# nothing to compile or cache: a report writes nothing but its output

REPORT_RUN = REAL / "10.0-converges"
FSIZE_LIMIT = 4096  # any cache file a parser wrote would hit it


def _report_json(env: dict[str, str], prefix: list[str] | None = None, fsize: int | None = None) -> str:
    """`migprof report --json` of a real run in a fresh process; stdout is a pipe (no FSIZE)."""
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    r = subprocess.run([*(prefix or []), sys.executable, "-m", "profiler.cli", "report", "--json",
                        str(REPORT_RUN / "source.log"), str(REPORT_RUN / "destination.log")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                       preexec_fn=limit if fsize is not None else None)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    return r.stdout


@pytest.mark.slow
def test_report_under_tiny_rlimit_fsize(tmp_path: Path) -> None:
    """Disk full (RLIMIT_FSIZE), with empty caches: the report is the normal one, twice (the
    parser compiles nothing, so there is nothing to cache or to find half-written)."""
    want = _report_json(dict(os.environ))
    cold = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), HOME=str(tmp_path))
    assert _report_json(cold, fsize=FSIZE_LIMIT) == want
    assert _report_json(cold) == want
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


@pytest.mark.slow
def test_report_with_read_only_package_and_no_writable_cache_dir(tmp_path: Path) -> None:
    """As in the nested lab (repo on a read-only 9p share) with no writable home either: the
    report is the normal one (nothing needs writing)."""
    want = _report_json(dict(os.environ))
    ro = ROOT / "tests" / "data"  # read-only inside the mount namespace below
    env = dict(os.environ)
    env.update(HOME=str(ro), XDG_CACHE_HOME=str(ro / "no-cache-here"))
    # a private mount namespace where the whole checkout (and so the package) is read-only
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              f'mount --bind -o ro "{ROOT}" "{ROOT}" && exec "$0" "$@"']
    assert _report_json(env, prefix=prefix) == want
    assert not (ro / "no-cache-here").exists()


def test_cut_gzip_keeps_what_was_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .gz cut short (a copy interrupted): one warning, and the lines before the cut."""
    src = next(p for p in REAL_LOGS if p.suffix == ".log" and "cancel-retry" in p.parent.name)
    packed = gzip.compress(src.read_bytes())
    p = tmp_path / "cut.log.gz"
    monkeypatch.setattr(qemu_log, "CHUNK_BYTES", 4096)  # several chunks before the cut
    p.write_bytes(packed)
    whole = read_log(p)
    p.write_bytes(packed[: len(packed) * 2 // 3])
    cut = read_log(p)
    assert len(cut.warnings) == 1 and cut.warnings[0].startswith(f"{p}: ")
    assert f"parsed the first {cut.lines} lines" in cut.warnings[0]
    assert 0 < cut.lines < whole.lines and cut.malformed <= 1  # the last line may be cut mid-way
    n = cut.events - cut.malformed
    pd.testing.assert_frame_equal(cut.frame.iloc[:n].drop(columns="seq", errors="ignore"),
                                  whole.frame.iloc[:n].drop(columns="seq", errors="ignore"),
                                  check_categorical=False)  # fewer event names seen before the cut


def test_bandwidth_past_float_precision_parses() -> None:
    """A uint64 bandwidth beyond 2**53 (a fuzzed or capped value) lands in its float column
    rounded instead of failing the whole parse in Arrow's safe cast."""
    big = 18014398509481985  # 2**54 + 1
    data = (f"migrate_transferred transferred 1 time_spent 100 bandwidth {big} switchover_bw {big} "
            "max_size 1000\n").encode()
    res = parse_bytes(data, file="huge.log")
    assert res.malformed == 0
    row = res.frame.iloc[0]
    assert row["bw_bytes_per_ms"] == pytest.approx(float(big))
    assert row["switchover_bw_bytes_per_ms"] == pytest.approx(float(big))
