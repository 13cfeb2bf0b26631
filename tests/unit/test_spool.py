"""The disk spool on a real folder: codec, limits, corruption, adoption, replay.

The sink stands where PostgreSQL would be; the database side of replay (idempotent event
ids) is covered by the fault tests in tests/integration/test_spool_faults.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from evothesis.domain import AuditRecord, EventRow, FailedEvent
from evothesis.errors import StorageUnavailable
from evothesis.storage.events import InsertedCount
from evothesis.storage.replay import drain
from evothesis.storage.spool import (
    HEADER,
    CorruptRecord,
    Spool,
    SpoolFull,
    decode_records,
    encode_record,
)
from evothesis.storage.write_buffer import WriteBuffer

MOMENT = datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC)


def row(event_id: str | None = None, **changes: object) -> EventRow:
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


class Sink:
    """Records what was replayed; can fail once after ``fail_after`` records."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.records: list[tuple[list[EventRow], list[AuditRecord]]] = []
        self.failed: list[FailedEvent] = []
        self.fail_after = fail_after

    async def __call__(
        self,
        rows: Sequence[EventRow],
        audits: Sequence[AuditRecord] = (),
        failed: Sequence[FailedEvent] = (),
    ) -> list[InsertedCount]:
        if self.fail_after is not None and len(self.records) >= self.fail_after:
            self.fail_after = None
            raise StorageUnavailable("database went away again")
        self.records.append((list(rows), list(audits)))
        self.failed.extend(failed)
        return []

    @property
    def rows(self) -> list[EventRow]:
        return [r for rows, _ in self.records for r in rows]


def test_a_record_round_trips_exactly() -> None:
    rows = [row(), row(session_id=None, ip_address=None)]
    audits = [audit()]
    [(offset, record)] = list(decode_records(encode_record(rows, audits)))
    assert offset == 0
    assert record.rows == rows and record.audits == audits
    assert record.rows[0].timestamp.tzinfo is not None


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: d[:-1], "torn payload"),
        (lambda d: d[: HEADER.size - 2], "torn header"),
        (lambda d: b"XXXX" + d[4:], "bad magic"),
        (lambda d: d[:-3] + b"zzz", "checksum mismatch"),
    ],
)
def test_damage_is_detected_after_the_intact_records(damage: object, reason: str) -> None:
    good = encode_record([row()], [])
    bad = damage(encode_record([row()], []))  # type: ignore[operator]
    decoded = decode_records(good + bad)
    assert next(decoded)[0] == 0
    with pytest.raises(CorruptRecord) as raised:
        next(decoded)
    assert raised.value.args == (len(good), reason)


def test_append_is_bounded_and_durable(tmp_path: Path) -> None:
    record_size = len(encode_record([row()], []))
    spool = Spool(tmp_path, max_bytes=record_size * 3)
    for _ in range(3):
        spool.append([row()], [])
    with pytest.raises(SpoolFull, match="disk spool is full"):
        spool.append([row()], [])
    assert spool.status().bytes == record_size * 3
    spool.close()
    # Not empty: the folder stays for adoption, its lock released.
    assert len(list(tmp_path.glob("*/segment-*.spool"))) == 1


def test_segments_roll_over(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**9, segment_bytes=1)
    for _ in range(3):
        spool.append([row()], [])
    assert spool.status().segments == 3


def replay(spool: Spool, sink: Sink) -> int:
    return asyncio.run(drain(spool, sink))


def test_replay_applies_everything_then_frees_the_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**9)
    written = [[row(), row()], [row()]]
    for rows in written:
        spool.append(rows, [audit()])
    spool.append([row()], [])  # after the claim below would start a new segment
    sink = Sink()
    assert replay(spool, sink) == 4
    assert [r.event_id for r in sink.rows][:3] == [r.event_id for rows in written for r in rows]
    assert not spool.has_backlog()
    assert spool.status().replayed_rows == 4
    spool.append([row()], [])  # appending after a replay starts a fresh segment
    assert replay(spool, Sink()) == 1


def test_a_replay_interrupted_midway_resumes_without_losing_anything(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**9)
    ids = []
    for _ in range(5):
        r = row()
        ids.append(r.event_id)
        spool.append([r], [])
    failing = Sink(fail_after=2)
    with pytest.raises(StorageUnavailable):
        replay(spool, failing)
    assert spool.has_backlog()
    again = Sink()
    assert replay(spool, again) == 5  # the segment is replayed from its start
    assert {r.event_id for r in failing.rows} | {r.event_id for r in again.rows} == set(ids)
    assert not spool.has_backlog()


def test_a_torn_tail_is_quarantined_and_reported_not_half_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, max_bytes=10**9)
    kept = row()
    spool.append([kept], [])
    [segment] = tmp_path.glob("*/segment-*.spool")
    with segment.open("ab") as handle:  # a process that died mid-write
        handle.write(encode_record([row(), row()], [])[:-10])
    sink = Sink()
    with caplog.at_level(logging.ERROR, logger="evothesis.spool"):
        assert replay(spool, sink) == 1
    assert [r.event_id for r in sink.rows] == [kept.event_id]
    [bad] = (tmp_path / "quarantine").iterdir()
    assert bad.stat().st_size > 0
    assert spool.status().quarantined == 1
    assert "torn payload" in caplog.text


def test_a_dead_processes_folder_is_adopted_and_a_live_ones_is_not(tmp_path: Path) -> None:
    dead = Spool(tmp_path, max_bytes=10**9)
    orphan = row()
    dead.append([orphan], [])
    os.close(dead._lock_fd)  # the process died: the kernel dropped its lock
    alive = Spool(tmp_path, max_bytes=10**9)
    alive.append([row()], [])
    survivor = Spool(tmp_path, max_bytes=10**9)
    sink = Sink()
    assert replay(survivor, sink) == 1
    assert [r.event_id for r in sink.rows] == [orphan.event_id]
    assert not dead.folder.exists()
    assert alive.has_backlog()  # still there: its owner replays it
    empty = Spool(tmp_path, max_bytes=10**9)
    os.close(empty._lock_fd)  # died with nothing spooled
    replay(survivor, Sink())
    assert not empty.folder.exists()  # its folder is cleaned up, not kept forever


def test_the_write_buffer_spools_a_failed_flush_and_refuses_when_full(tmp_path: Path) -> None:
    async def always_down(
        rows: Sequence[EventRow], audits: Sequence[AuditRecord] = ()
    ) -> list[InsertedCount]:
        raise StorageUnavailable("connection refused")

    record_size = len(encode_record([row(), row()], []))
    spool = Spool(tmp_path, max_bytes=record_size + record_size // 2)

    async def scenario() -> tuple[bool, BaseException | None]:
        buffer = WriteBuffer(
            always_down, max_events=100, max_delay=0, concurrency=1, max_pending=1000, spool=spool
        )
        buffer.start()
        try:
            spooled = await buffer.write([row(), row()])
            try:
                await buffer.write([row(), row()])
            except StorageUnavailable as exc:
                return spooled, exc
            return spooled, None
        finally:
            await buffer.close()

    spooled, refused = asyncio.run(scenario())
    assert spooled is True
    assert isinstance(refused, SpoolFull)
    replayed = Sink()
    assert replay(spool, replayed) == 2
