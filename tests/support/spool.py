"""What the spool tests share: rows to spool, records in the legacy ``EVS1`` format as the
previous version wrote them, and a walk over a segment's framing that does not use the
decoder under test."""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from evothesis.domain import AuditRecord, EventRow

MOMENT = datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC)

#: The header of the current format and of the legacy one, as README documents them.
HEADER = struct.Struct("<4sIII")
LEGACY_HEADER = struct.Struct("<4sII")


def spooled_row(event_id: str | None = None, **changes: object) -> EventRow:
    base = EventRow(
        event_id or str(uuid.uuid4()),
        "click",
        "sess",
        None,
        "localhost",
        "client_test",
        MOMENT,
        "https://localhost/a?b=1",
        "/a",
        None,
        "203.0.113.9",
        "ua",
        '{"eventType": "click", "ünïcode": "✓"}',
        MOMENT,
    )
    return base._replace(**changes)


def audit() -> AuditRecord:
    return AuditRecord(
        MOMENT, "clinic", "clinic.example", "vis", 2, "ab" * 32, None, "h:1", str(uuid.uuid4())
    )


def legacy_record(rows: Sequence[EventRow], audits: Sequence[AuditRecord] = ()) -> bytes:
    """One record as the version before per-record resynchronisation appended it:
    ``"EVS1" | length | CRC-32 of payload | payload``."""
    payload = orjson.dumps(
        {"rows": [list(r) for r in rows], "audits": [list(a) for a in audits], "failed": []}
    )
    return LEGACY_HEADER.pack(b"EVS1", len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True)
class Span:
    """Where one record of an undamaged segment lies, and the event ids it holds."""

    offset: int
    length: int
    event_ids: tuple[str, ...]

    def touched_by(self, offsets: set[int]) -> bool:
        return any(self.offset <= at < self.offset + self.length for at in offsets)


def record_spans(data: bytes) -> Iterator[Span]:
    """The records of an undamaged segment (either format), read from the framing alone."""
    offset = 0
    while offset < len(data):
        if data[offset : offset + 4] == b"EVS1":
            _, length, _ = LEGACY_HEADER.unpack_from(data, offset)
            start = offset + LEGACY_HEADER.size
        else:
            _, length, _, _ = HEADER.unpack_from(data, offset)
            start = offset + HEADER.size
        rows = orjson.loads(data[start : start + length])["rows"]
        yield Span(offset, start + length - offset, tuple(values[0] for values in rows))
        offset = start + length


def segment_files(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.glob("*/segment-*.spool"))
