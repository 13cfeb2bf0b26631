"""The spool's record format: encoding a flush, and reading a segment back after damage.

A record is one flush (its rows, hipaa audit records and failed events)::

    magic b"\\xffEV2" | payload length (u32 LE) | CRC-32 of payload (u32 LE)
                     | CRC-32 of the 12 bytes before it (u32 LE) | payload

with an orjson payload. Each record is recoverable on its own, whatever else in the
segment is damaged:

* The magic starts with ``0xFF``, a byte that never occurs in UTF-8, so never in a JSON
  payload: after damage, the reader scans forward for the magic and finds only record
  starts, not look-alikes inside payloads.
* The header checksum covers the length: a corrupted length is detected before it is
  used, so it can neither make the reader skip the good records after it nor read a
  look-alike header's length as a reason to checksum megabytes.
* A candidate counts as a record only when its header checksum, its payload checksum and
  the payload's decoding all hold; the bytes between the last good record and the next
  one form one damaged range.

Segments written before this format (``"EVS1"``: magic, length, payload CRC, no header
checksum) are still read, record by record, with the same resynchronisation: a collector
upgraded with a spool on disk replays it, and the tails earlier versions quarantined give
back their intact records (``evothesis spool replay-quarantine``).

Everything here is pure: bytes in, records and damaged ranges out.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

import orjson

from evothesis.domain import AuditRecord, EventRow, FailedEvent

__all__ = [
    "HEADER",
    "LEGACY_HEADER",
    "LEGACY_MAGIC",
    "MAGIC",
    "Damage",
    "DamagedRange",
    "DecodedSegment",
    "IntactRecord",
    "SpoolRecord",
    "decode_payload",
    "decode_segment",
    "encode_record",
]

MAGIC: Final = b"\xffEV2"
#: Magic, payload length, payload CRC-32: the part the header checksum covers.
_PREFIX: Final = struct.Struct("<4sII")
#: The whole header: the prefix and its CRC-32.
HEADER: Final = struct.Struct("<4sIII")
#: The format before per-record resynchronisation: no header checksum.
LEGACY_MAGIC: Final = b"EVS1"
LEGACY_HEADER: Final = struct.Struct("<4sII")

_ROW_TIMES: Final = (6, 13)  # EventRow.timestamp, EventRow.created_at
_AUDIT_TIMES: Final = (0,)  # AuditRecord.recorded_at
_FAILED_TIMES: Final = (8,)  # FailedEvent.received_at
#: What decoding a payload whose checksum holds can still raise: a payload of a shape
#: this version does not know (written by another version).
_UNDECODABLE: Final = (ValueError, TypeError, KeyError, IndexError, AttributeError)


class Damage(StrEnum):
    """Why a byte range of a segment is not a record (the start of the range tells)."""

    #: The data ends before the record does: a crash mid-append, before anything was
    #: acknowledged (or a length that runs past the end in a legacy record).
    TORN = "torn"
    #: No record starts here: a damaged magic, or bytes between records.
    BAD_MAGIC = "bad-magic"
    #: The header's own checksum fails: its length cannot be trusted.
    BAD_HEADER = "bad-header"
    #: The payload's checksum fails.
    BAD_CHECKSUM = "bad-checksum"
    #: The checksums hold but the payload is not a flush this version can read.
    UNDECODABLE = "undecodable"


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One spooled flush."""

    rows: list[EventRow]
    audits: list[AuditRecord]
    failed: list[FailedEvent]


@dataclass(frozen=True, slots=True)
class IntactRecord:
    """A record whose checksums and payload hold, and the bytes it occupies."""

    offset: int
    length: int
    record: SpoolRecord


@dataclass(frozen=True, slots=True)
class DamagedRange:
    """Bytes of a segment that hold no intact record: from a place where no record could
    be read to the next intact record (or the end)."""

    offset: int
    length: int
    reason: Damage

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True, slots=True)
class DecodedSegment:
    """A segment read back: every intact record once, in order, and the ranges between
    them; together they cover the segment's bytes exactly."""

    records: list[IntactRecord]
    damaged: list[DamagedRange]


# ------------------------------------------------------------------------------ encoding


def encode_record(
    rows: Sequence[EventRow], audits: Sequence[AuditRecord], failed: Sequence[FailedEvent] = ()
) -> bytes:
    payload = orjson.dumps(
        {
            "rows": [list(r) for r in rows],
            "audits": [list(a) for a in audits],
            "failed": [list(f) for f in failed],
        }
    )
    prefix = _PREFIX.pack(MAGIC, len(payload), zlib.crc32(payload))
    return prefix + zlib.crc32(prefix).to_bytes(4, "little") + payload


# ------------------------------------------------------------------------------ decoding


def _revive(values: list[Any], times: tuple[int, ...]) -> list[Any]:
    for index in times:
        values[index] = datetime.fromisoformat(values[index])
    return values


def decode_payload(payload: bytes | memoryview) -> SpoolRecord:
    document = orjson.loads(payload)
    return SpoolRecord(
        rows=[EventRow(*_revive(values, _ROW_TIMES)) for values in document["rows"]],
        audits=[AuditRecord(*_revive(values, _AUDIT_TIMES)) for values in document["audits"]],
        # Records spooled before failed events existed have none.
        failed=[
            FailedEvent(*_revive(values, _FAILED_TIMES)) for values in document.get("failed", ())
        ],
    )


def _record_at(data: bytes, offset: int) -> IntactRecord | Damage:
    """The record starting at ``offset``, or why there is none."""
    rest = len(data) - offset
    magic = data[offset : offset + 4]
    if magic == MAGIC:
        if rest < HEADER.size:
            return Damage.TORN
        _, length, checksum, header_checksum = HEADER.unpack_from(data, offset)
        if zlib.crc32(data[offset : offset + _PREFIX.size]) != header_checksum:
            return Damage.BAD_HEADER
        start = offset + HEADER.size
    elif magic == LEGACY_MAGIC:
        if rest < LEGACY_HEADER.size:
            return Damage.TORN
        _, length, checksum = LEGACY_HEADER.unpack_from(data, offset)
        start = offset + LEGACY_HEADER.size
    elif rest < 4 and (MAGIC.startswith(magic) or LEGACY_MAGIC.startswith(magic)):
        return Damage.TORN
    else:
        return Damage.BAD_MAGIC
    end = start + length
    if end > len(data):
        return Damage.TORN
    payload = memoryview(data)[start:end]  # no copy of megabytes per record
    if zlib.crc32(payload) != checksum:
        return Damage.BAD_CHECKSUM
    try:
        record = decode_payload(payload)
    except _UNDECODABLE:
        return Damage.UNDECODABLE
    return IntactRecord(offset, end - offset, record)


def _candidates(data: bytes, start: int) -> Iterator[int]:
    """Offsets from ``start`` on where either magic occurs, in order."""
    found = {magic: data.find(magic, start) for magic in (MAGIC, LEGACY_MAGIC)}
    while True:
        waiting = [offset for offset in found.values() if offset >= 0]
        if not waiting:
            return
        offset = min(waiting)
        yield offset
        for magic, at in found.items():
            if at == offset:
                found[magic] = data.find(magic, offset + 1)


def _next_record(data: bytes, start: int) -> IntactRecord | None:
    """The first intact record that starts at or after ``start``."""
    for offset in _candidates(data, start):
        found = _record_at(data, offset)
        if isinstance(found, IntactRecord):
            return found
    return None


def decode_segment(data: bytes) -> DecodedSegment:
    """Every intact record of ``data`` and the damaged ranges between them.

    Records are read one after the other, each trusted only once its checksums and payload
    hold; where one does not, the reader resynchronises on the next intact record, and the
    bytes in between become one damaged range, named by what was wrong at its start.
    """
    records: list[IntactRecord] = []
    damaged: list[DamagedRange] = []
    offset = 0
    while offset < len(data):
        found = _record_at(data, offset)
        if isinstance(found, Damage):
            following = _next_record(data, offset + 1)
            end = following.offset if following is not None else len(data)
            damaged.append(DamagedRange(offset, end - offset, found))
            if following is None:
                break
            found = following
        records.append(found)
        offset = found.offset + found.length
    return DecodedSegment(records, damaged)
