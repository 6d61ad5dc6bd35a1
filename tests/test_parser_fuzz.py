"""Fuzzing the parsers: arbitrary, cut, mangled and interleaved input never crashes and always counts.

Invariants: ``events + skipped + malformed == lines`` (lines = newline-separated pieces),
every kept row is an event or a malformed line, the frame keeps the schema.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as stn

from profiler import events
from profiler.errors import InputError
from profiler.sources import qemu_log
from profiler.sources import simpletrace as st
from profiler.sources.qemu_log import parse_bytes

ROOT = Path(__file__).resolve().parent.parent
REAL_LINES = [
    ln for p in sorted((ROOT / "tests" / "data" / "real").glob("*/source.log"))[:4]
    for ln in p.read_bytes().splitlines()[:60]
]
SYNTH_LINES = [
    b"vfio_save_block  (VFIO user </run/s k>) data_size 1048576",
    b"2025-07-21T18:43:28.089797Z vfio_state_pending_exact  (0000:3b:00.1) precopy 0x10 postcopy 0x0 "
    b"stopcopy size 33554432 precopy initial size 0 precopy dirty size 4096",
    b"777@1753122905917608123 migration_bitmap_sync_end dirty_pages 33",
    b"qemu-system-x86_64(1184284:main): vmstate_downtime_save type=iterable idstr=ram instance_id=0 downtime=12",
    b"vfio_pci_read_config  (0000:00:03.0, @0x4, len=0x2) 0x7",
    b"savevm_state_iterate ",
    b"qemu-system-x86_64: terminating on signal 15 from pid 1",
]
LINES = REAL_LINES + SYNTH_LINES
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def expected_lines(data: bytes) -> int:
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def check(data: bytes) -> qemu_log.ParseResult:
    res = parse_bytes(data, file="fuzz.log")
    assert res.lines == expected_lines(data)
    assert res.events + res.skipped + res.malformed == res.lines
    assert len(res.frame) == res.events + res.malformed
    assert res.events >= 0 and res.skipped >= 0 and res.malformed >= 0
    events.validate(res.frame)
    if len(res.frame):
        assert res.frame["line"].is_monotonic_increasing
        assert res.frame["line"].max() <= res.lines
    return res


@SETTINGS
@given(stn.binary(max_size=4000))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@SETTINGS
@given(stn.lists(stn.sampled_from(LINES), min_size=1, max_size=40), stn.data())
def test_cut_mangled_and_interleaved_lines(lines: list[bytes], draw) -> None:
    out = []
    for ln in lines:
        op = draw.draw(stn.sampled_from(["keep", "cut", "insert", "flip", "join", "dup_space", "nul"]))
        if op == "cut" and ln:
            ln = ln[: draw.draw(stn.integers(0, len(ln)))]
        elif op == "insert":
            at = draw.draw(stn.integers(0, len(ln)))
            ln = ln[:at] + draw.draw(stn.binary(max_size=8)) + ln[at:]
        elif op == "flip" and ln:
            at = draw.draw(stn.integers(0, len(ln) - 1))
            ln = ln[:at] + bytes([ln[at] ^ draw.draw(stn.integers(1, 255))]) + ln[at + 1:]
        elif op == "join":  # two writers interleaved without a newline between them
            other = draw.draw(stn.sampled_from(LINES))
            at = draw.draw(stn.integers(0, len(ln)))
            ln = ln[:at] + other + ln[at:]
        elif op == "dup_space":
            ln = ln.replace(b" ", b"  ", 1)
        elif op == "nul":
            ln = ln + b"\x00"
        out.append(ln)
    data = b"\n".join(out) + draw.draw(stn.sampled_from([b"", b"\n", b"\r\n"]))
    check(data)


@SETTINGS
@given(stn.lists(stn.sampled_from(LINES), min_size=1, max_size=60))
def test_well_formed_lines_are_never_malformed(lines: list[bytes]) -> None:
    res = check(b"\n".join(lines) + b"\n")
    assert res.malformed == 0
    n_other = sum(1 for ln in lines if ln.startswith(b"qemu-system-x86_64:"))
    assert res.skipped == n_other


@settings(max_examples=40, deadline=None)
@given(stn.lists(stn.sampled_from(LINES), min_size=1, max_size=80), stn.integers(16, 400))
def test_chunk_size_never_changes_the_result(lines: list[bytes], chunk: int) -> None:
    data = b"\n".join(lines) + b"\n"
    whole = parse_bytes(data)
    old = qemu_log.CHUNK_BYTES
    qemu_log.CHUNK_BYTES = chunk
    try:
        cut = parse_bytes(data)
    finally:
        qemu_log.CHUNK_BYTES = old
    assert (cut.lines, cut.skipped, cut.malformed) == (whole.lines, whole.skipped, whole.malformed)
    pd.testing.assert_frame_equal(cut.frame, whole.frame)


def _trace() -> bytes:
    out = st.encode_header() + st.encode_mapping(0, "vfio_save_block") + st.encode_mapping(1, "migrate_set_state")
    for i in range(20):
        out += st.encode_event(i % 2, 1000 + i, 7, ["0000:3b:00.1", 4096] if i % 2 == 0 else ["active"])
    return out


TRACE = _trace()


@SETTINGS
@given(stn.integers(0, len(TRACE)), stn.binary(max_size=64), stn.integers(0, len(TRACE)))
def test_simpletrace_cut_and_mangled(cut: int, junk: bytes, at: int) -> None:
    for data in (TRACE[:cut], TRACE[:at] + junk + TRACE[at:]):
        try:
            res = st.parse_simpletrace(data, file="t")
        except InputError as e:
            assert "t" in str(e)
            continue
        events.validate(res.frame)
        assert len(res.frame) == res.records
        assert res.records <= 20 + len(junk)


@SETTINGS
@given(stn.binary(max_size=600))
def test_simpletrace_arbitrary_bytes_after_header(data: bytes) -> None:
    res = st.parse_simpletrace(st.encode_header() + data, file="t")
    events.validate(res.frame)
    assert len(res.frame) == res.records


@pytest.mark.parametrize("data", [b"", b"\n", b"\n\n\n", b"\r\n", b" ", b"\x00" * 10, b"\xff\xfe" * 5])
def test_degenerate_inputs(data: bytes) -> None:
    res = check(data)
    assert res.events == 0
