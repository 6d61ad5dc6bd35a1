"""The simpletrace parser on files built byte-exactly from trace/simple.c's layout (synthetic).

No real simpletrace file exists here: Debian builds QEMU with the ``log`` back end only
(qemu-trace.md section 5.3), so QEMU on this machine cannot write one. The files below
are written struct by struct from section 5.1 (header, mapping records, event records,
dropped records) and checked against the field values they encode.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
import pytest

from profiler import events
from profiler.errors import InputError
from profiler.sources import simpletrace as st
from profiler.sources.qemu_log import parse_bytes
from profiler.sources.trace_formats import as_signed64

DEV = "VFIO user </run/sock 1>"


def _file(records: list[bytes], mappings: dict[int, str]) -> bytes:
    out = st.encode_header()
    for eid, name in mappings.items():
        out += st.encode_mapping(eid, name)
    return out + b"".join(records)


MAP = {0: "vfio_state_pending_exact", 1: "migrate_transferred", 2: "vmstate_downtime_save",
       3: "vfio_vmstate_change", 4: "vfio_migration_set_state", 5: "pci_nvme_some_event",
       6: "migrate_pending", 7: "vfio_save_block", 8: "vfio_load_state",
       9: "process_incoming_migration_co_end"}


def _records() -> list[bytes]:
    ts0 = 5_000_000_000
    return [
        st.encode_event(0, ts0, 99, [DEV, 100, 0, 33554432, 4096, 8192]),  # >=8.1: 6 args
        st.encode_event(0, ts0 + 1, 99, [DEV, 100, 0, 33554432]),  # 8.0: 4 args
        st.encode_event(1, ts0 + 2, 99, [8388608, 100, 83886, 125000, 25165800]),  # >=8.2
        st.encode_event(1, ts0 + 3, 99, [8388608, 100, 83886, 25165800]),  # <=8.1
        st.encode_event(2, ts0 + 4, 99, ["iterable", "0000:00:03.0/vfio", 0, 12345]),
        st.encode_event(3, ts0 + 5, 99, [DEV, 0, "finish-migrate", "STOP_COPY"]),
        st.encode_event(3, ts0 + 6, 99, [DEV, 0, "finish-migrate", 2]),  # 7.2 v1 bits
        st.encode_event(4, ts0 + 7, 99, [DEV, "STOP_COPY", "ERROR"]),  # 9.1
        st.encode_event(5, ts0 + 8, 99, [1, 2, 3]),  # unknown to migprof: kept generically
        st.encode_dropped(ts0 + 9, 99, 17),
        st.encode_event(6, ts0 + 10, 99, [67108864, 65381941, 67108864, 0, 0]),
        st.encode_event(7, ts0 + 11, 99, [DEV, -1]),  # int data_size -1 sign-extended
        st.encode_event(8, ts0 + 12, 99, [DEV, 0xFFFFFFFFEF100001]),
        st.encode_event(9, ts0 + 13, 99, [-22]),  # 10.2: one int arg
    ]


def test_header_layout_is_byte_exact() -> None:
    assert st.encode_header() == struct.pack("<QQQ", 2**64 - 1, 0xF2B177CB0AA429B4, 4)
    m = st.encode_mapping(7, "vfio_save_block")
    assert m == struct.pack("<QQI", 0, 7, 15) + b"vfio_save_block"
    e = st.encode_event(7, 123, 42, ["ab", 5])
    assert e == struct.pack("<QQQII", 1, 7, 123, 24 + 4 + 2 + 8, 42) + struct.pack("<I", 2) + b"ab" + \
        struct.pack("<Q", 5)


def test_decodes_every_record_with_shared_field_filling(tmp_path: Path) -> None:
    p = tmp_path / "trace-99"
    p.write_bytes(_file(_records(), MAP))
    res = st.read_simpletrace(p)
    assert res.records == 14 and res.dropped == 17 and res.malformed == 0 and not res.warnings
    df = res.frame
    events.validate(df)
    assert (df["origin"] == "simpletrace").all() and (df["clock"] == "monotonic").all()
    assert df["t_ns"].isna().all() and df["clock_ns"].iloc[0] == 5_000_000_000
    assert (df["pid"] == 99).all() and df["tid"].isna().all()
    assert list(df["seq"]) == list(range(14))
    r = df.iloc
    assert (r[0]["device"], r[0]["stopcopy_bytes"], r[0]["init_bytes"], r[0]["dirty_bytes"]) == (DEV, 33554432, 4096, 8192)
    assert pd.isna(r[1]["init_bytes"]) and r[1]["stopcopy_bytes"] == 33554432
    assert (r[2]["bytes"], r[2]["dur_ns"], r[2]["bw_bytes_per_ms"], r[2]["switchover_bw_bytes_per_ms"], r[2]["threshold_bytes"]) == \
        (8388608, 100_000_000, 83886.0, 125000, 25165800)
    assert pd.isna(r[3]["switchover_bw_bytes_per_ms"]) and r[3]["threshold_bytes"] == 25165800
    assert (r[4]["state"], r[4]["device"], r[4]["instance_id"], r[4]["dur_ns"]) == ("iterable", "0000:00:03.0/vfio", 0, 12_345_000)
    assert (r[5]["state"], r[5]["detail"], r[5]["flags"]) == ("STOP_COPY", "finish-migrate", 0)
    assert r[6]["state"] == "STOP_COPY"
    assert (r[7]["state"], r[7]["detail"]) == ("STOP_COPY", "ERROR")
    assert r[8]["event"] == "pci_nvme_some_event" and "0x1 0x2 0x3" in r[8]["raw"]
    assert r[9]["event"] == st.DROPPED_EVENT and r[9]["count"] == 17
    assert (r[10]["bytes"], r[10]["threshold_bytes"]) == (67108864, 65381941)
    assert r[11]["bytes"] == -1
    assert r[12]["flags"] == as_signed64(0xFFFFFFFFEF100001)
    assert r[13]["ret"] == -22
    assert res.side == "source"


def test_same_columns_as_the_log_parser() -> None:
    """One event through both parsers gives the same typed columns."""
    log = parse_bytes(b"vfio_state_pending_exact  (VFIO user </run/sock 1>) precopy 100 postcopy 0 "
                      b"stopcopy size 33554432 precopy initial size 4096 precopy dirty size 8192\n").frame
    bin_ = st.parse_simpletrace(_file(_records()[:1], MAP)).frame
    cols = ["event", "device", "pre_bytes", "post_bytes", "stopcopy_bytes", "init_bytes", "dirty_bytes"]
    pd.testing.assert_frame_equal(log[cols], bin_[cols])


def test_monotonic_offset_gives_wall_clock() -> None:
    res = st.parse_simpletrace(_file(_records()[:2], MAP), monotonic_offset_ns=1_700_000_000_000_000_000)
    assert list(res.frame["t_ns"]) == [1_700_000_005_000_000_000, 1_700_000_005_000_000_001]


@pytest.mark.parametrize("cut", [1, 7, 23, 40])
def test_truncated_file_keeps_whole_records_and_names_the_offset(tmp_path: Path, cut: int) -> None:
    data = _file(_records(), MAP)
    last = st.encode_event(0, 1, 99, [DEV, 1, 2, 3, 4, 5])
    p = tmp_path / "trace-cut"
    p.write_bytes(data + last[:cut])
    res = st.read_simpletrace(p)
    assert res.records == 14
    assert len(res.warnings) == 1
    assert str(p) in res.warnings[0] and f"byte {len(data)}" in res.warnings[0]
    assert "truncated" in res.warnings[0]


def test_mappings_may_come_later_and_unmapped_ids_are_kept() -> None:
    data = st.encode_header() + st.encode_event(3, 10, 1, [DEV, 1, "running", "RUNNING"]) + \
        st.encode_mapping(3, "vfio_vmstate_change") + st.encode_event(3, 11, 1, [DEV, 1, "running", "RUNNING"])
    res = st.parse_simpletrace(data, file="t")
    assert list(res.frame["event"]) == ["simpletrace_event_3", "vfio_vmstate_change"]
    assert res.frame.loc[1, "state"] == "RUNNING"
    assert "no mapping" in res.warnings[0]


def test_args_that_fit_no_known_list_are_malformed_not_fatal() -> None:
    data = _file([st.encode_event(7, 1, 1, [1, 2, 3, 4])], {7: "vfio_save_block"})
    res = st.parse_simpletrace(data, file="t")
    assert res.records == 1 and res.malformed == 1
    assert res.frame.loc[0, "event"] == "vfio_save_block" and pd.isna(res.frame.loc[0, "device"])


def test_bad_headers_are_input_errors() -> None:
    with pytest.raises(InputError, match="too short"):
        st.parse_simpletrace(b"\xff" * 10, file="a")
    with pytest.raises(InputError, match="magic"):
        st.parse_simpletrace(b"\xff" * 8 + b"\0" * 16, file="b")
    with pytest.raises(InputError, match="version 3"):
        st.parse_simpletrace(struct.pack("<QQQ", 2**64 - 1, 0xF2B177CB0AA429B4, 3), file="c")


def test_unknown_record_type_stops_with_a_warning() -> None:
    data = _file(_records()[:2], MAP) + struct.pack("<Q", 7) + b"junk" * 10
    res = st.parse_simpletrace(data, file="t")
    assert res.records == 2 and res.malformed == 1 and "unknown record type 7" in res.warnings[0]
