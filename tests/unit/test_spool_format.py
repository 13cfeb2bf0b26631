"""The spool's record format on crafted bytes: every intact record is read exactly once,
whatever is damaged around it, and nothing damaged is ever read as a record."""

from __future__ import annotations

import struct
import zlib

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evothesis.storage.spool_format import (
    HEADER,
    MAGIC,
    Damage,
    DamagedRange,
    DecodedSegment,
    decode_segment,
    encode_record,
)
from tests.support.spool import audit, legacy_record, record_spans, spooled_row


def current(count: int) -> list[bytes]:
    return [encode_record([spooled_row(), spooled_row()], [audit()]) for _ in range(count)]


def legacy(count: int) -> list[bytes]:
    return [legacy_record([spooled_row(), spooled_row()]) for _ in range(count)]


def ids(decoded: DecodedSegment) -> list[str]:
    return [row.event_id for intact in decoded.records for row in intact.record.rows]


def ids_of(*parts: bytes) -> list[str]:
    return [
        event_id for part in parts for span in record_spans(part) for event_id in span.event_ids
    ]


def assert_tiles(decoded: DecodedSegment, size: int) -> None:
    """Records and damaged ranges cover the segment exactly, in order, without overlap."""
    spans = sorted(
        [(r.offset, r.length) for r in decoded.records]
        + [(d.offset, d.length) for d in decoded.damaged]
    )
    position = 0
    for offset, length in spans:
        assert offset == position and length > 0
        position += length
    assert position == size


def flip(data: bytes, at: int, mask: int = 0x5A) -> bytes:
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]


def test_a_segment_round_trips_exactly() -> None:
    rows = [spooled_row(), spooled_row(session_id=None, ip_address=None)]
    audits = [audit()]
    data = encode_record(rows, audits) + encode_record([spooled_row()], [])
    decoded = decode_segment(data)
    assert decoded.damaged == []
    first = decoded.records[0]
    assert (first.offset, first.record.rows, first.record.audits) == (0, rows, audits)
    assert first.record.rows[0].timestamp.tzinfo is not None
    assert decode_segment(b"") == DecodedSegment([], [])


def test_the_header_is_framed_as_documented() -> None:
    record = encode_record([spooled_row()], [])
    magic, length, checksum, header_checksum = HEADER.unpack_from(record)
    assert magic == MAGIC == b"\xffEV2"
    assert length == len(record) - HEADER.size
    assert checksum == zlib.crc32(record[HEADER.size :])
    assert header_checksum == zlib.crc32(record[:12])


#: (region of a record, offset within the record, the reason its range is given).
REGIONS = [
    ("magic", 0, Damage.BAD_MAGIC),
    ("magic", 3, Damage.BAD_MAGIC),
    ("length", 4, Damage.BAD_HEADER),
    ("length", 7, Damage.BAD_HEADER),
    ("payload crc", 9, Damage.BAD_HEADER),
    ("header crc", 14, Damage.BAD_HEADER),
    ("payload", HEADER.size, Damage.BAD_CHECKSUM),
    ("payload", -1, Damage.BAD_CHECKSUM),
]


@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize(
    ("region", "at", "reason"), REGIONS, ids=[f"{r[0]}@{r[1]}" for r in REGIONS]
)
def test_a_flipped_byte_costs_only_its_own_record(
    position: str, region: str, at: int, reason: Damage
) -> None:
    parts = current(5)
    index = {"first": 0, "middle": 2, "last": 4}[position]
    offset = sum(len(part) for part in parts[:index])
    data = b"".join(parts)
    damaged = flip(data, offset + at % len(parts[index]))
    decoded = decode_segment(damaged)
    assert decoded.damaged == [DamagedRange(offset, len(parts[index]), reason)]
    assert ids(decoded) == ids_of(*parts[:index], *parts[index + 1 :])
    assert_tiles(decoded, len(data))


def test_a_corrupted_length_cannot_make_the_reader_skip_good_records() -> None:
    parts = current(4)
    data = bytearray(b"".join(parts))
    # The first record claims to span the next two as well (its header checksum now fails).
    struct.pack_into("<I", data, 4, len(parts[0]) + len(parts[1]) + len(parts[2]) - HEADER.size)
    decoded = decode_segment(bytes(data))
    assert decoded.damaged == [DamagedRange(0, len(parts[0]), Damage.BAD_HEADER)]
    assert ids(decoded) == ids_of(*parts[1:])


@pytest.mark.parametrize("keep", [1, 3, HEADER.size - 1, HEADER.size + 5, -1])
def test_a_torn_tail_is_one_range_to_the_end(keep: int) -> None:
    parts = current(3)
    torn = parts[2][:keep]
    decoded = decode_segment(parts[0] + parts[1] + torn)
    assert decoded.damaged == [DamagedRange(len(parts[0]) + len(parts[1]), len(torn), Damage.TORN)]
    assert ids(decoded) == ids_of(parts[0], parts[1])


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00" * 3,
        b"not a record at all",
        MAGIC + b"\x01\x00\x00\x00" * 3 + b"x",  # a look-alike header whose checksum fails
        b"EVS1\x05\x00\x00\x00\x00\x00\x00\x00hello",  # a legacy look-alike, bad checksum
        bytes(range(256)),
    ],
)
def test_garbage_between_records_is_one_range_and_every_record_survives(garbage: bytes) -> None:
    parts = current(3)
    data = parts[0] + garbage + parts[1] + garbage + parts[2]
    decoded = decode_segment(data)
    first = len(parts[0])
    second = first + len(garbage) + len(parts[1])
    assert [(d.offset, d.length) for d in decoded.damaged] == [
        (first, len(garbage)),
        (second, len(garbage)),
    ]
    assert ids(decoded) == ids_of(*parts)
    assert_tiles(decoded, len(data))


def test_garbage_alone_is_one_range() -> None:
    decoded = decode_segment(b"\xff" * 40)
    assert decoded == DecodedSegment([], [DamagedRange(0, 40, Damage.BAD_MAGIC)])


def test_a_payload_this_version_cannot_read_is_its_own_range() -> None:
    payload = orjson.dumps({"rows": [[1, 2]], "audits": []})
    prefix = struct.pack("<4sII", MAGIC, len(payload), zlib.crc32(payload))
    alien = prefix + zlib.crc32(prefix).to_bytes(4, "little") + payload
    parts = current(2)
    decoded = decode_segment(parts[0] + alien + parts[1])
    assert decoded.damaged == [DamagedRange(len(parts[0]), len(alien), Damage.UNDECODABLE)]
    assert ids(decoded) == ids_of(*parts)


def test_an_evs1_segment_of_the_previous_version_is_read() -> None:
    parts = legacy(4)
    data = b"".join(parts)
    decoded = decode_segment(data)
    assert decoded.damaged == []
    assert ids(decoded) == ids_of(*parts)
    # Damage in a legacy record (no header checksum) still costs only that record.
    decoded = decode_segment(flip(data, len(parts[0]) + 5))
    assert [(d.offset, d.length) for d in decoded.damaged] == [(len(parts[0]), len(parts[1]))]
    assert ids(decoded) == ids_of(parts[0], *parts[2:])


def test_legacy_and_current_records_mix() -> None:
    parts = [legacy(1)[0], *current(1), legacy(1)[0]]
    decoded = decode_segment(b"".join(parts))
    assert decoded.damaged == []
    assert ids(decoded) == ids_of(*parts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.data(),
    st.integers(min_value=1, max_value=12),
    st.booleans(),
)
def test_random_flips_lose_only_the_records_they_touch(
    data: st.DataObject, count: int, old_format: bool
) -> None:
    parts = legacy(count) if old_format else current(count)
    segment = b"".join(parts)
    flips = data.draw(
        st.dictionaries(
            st.integers(min_value=0, max_value=len(segment) - 1),
            st.integers(min_value=1, max_value=255),
            max_size=8,
        ),
        label="flips",
    )
    damaged = bytearray(segment)
    for at, mask in flips.items():
        damaged[at] ^= mask
    decoded = decode_segment(bytes(damaged))

    spans = list(record_spans(segment))
    untouched = [span for span in spans if not span.touched_by(set(flips))]
    # Every untouched record exactly once, at its place; no touched record at all.
    assert [(r.offset, r.length) for r in decoded.records] == [
        (span.offset, span.length) for span in untouched
    ]
    assert ids(decoded) == [event_id for span in untouched for event_id in span.event_ids]
    # Every flipped byte lies in a damaged range; together they cover the segment.
    for at in flips:
        assert any(d.offset <= at < d.end for d in decoded.damaged)
    assert_tiles(decoded, len(segment))
