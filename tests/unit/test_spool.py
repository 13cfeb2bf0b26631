"""The disk spool on a real folder: limits, damage and its quarantine, adoption, replay,
permissions. The record format itself is tested on bytes in test_spool_format.py.

The sink stands where PostgreSQL would be; the database side of replay (idempotent event
ids) is covered by the fault tests in tests/integration/test_spool_faults.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from evothesis.domain import AuditRecord, EventRow, FailedEvent
from evothesis.errors import StorageUnavailable
from evothesis.storage.events import InsertedCount
from evothesis.storage.replay import drain, replay_quarantine
from evothesis.storage.spool import Quarantine, Spool, SpoolFull
from evothesis.storage.spool_format import Damage, encode_record
from evothesis.storage.write_buffer import WriteBuffer
from tests.support.spool import audit, legacy_record, record_spans, segment_files
from tests.support.spool import spooled_row as row


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
    [segment] = segment_files(tmp_path)
    torn = encode_record([row(), row()], [])[:-10]
    with segment.open("ab") as handle:  # a process that died mid-write
        handle.write(torn)
    sink = Sink()
    with caplog.at_level(logging.ERROR, logger="evothesis.spool"):
        assert replay(spool, sink) == 1
    assert [r.event_id for r in sink.rows] == [kept.event_id]
    [bad] = (tmp_path / "quarantine").iterdir()
    assert bad.read_bytes() == torn
    assert bad.name.endswith(".torn.bad")
    assert spool.status().quarantined == 1
    assert "torn" in caplog.text


def damage_first_record(segment: Path) -> tuple[int, list[str]]:
    """Flip a byte in the payload of the segment's first record; its length and ids."""
    data = bytearray(segment.read_bytes())
    first = next(record_spans(bytes(data)))
    data[first.offset + first.length // 2] ^= 0x20
    segment.write_bytes(bytes(data))
    return first.length, list(first.event_ids)


def test_a_damaged_record_costs_only_its_own_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: one flipped byte in a segment's first record quarantined the whole
    segment. Now the other records replay, and only that record's bytes are set aside."""
    spool = Spool(tmp_path, max_bytes=10**9)
    written = [[row(), row(), row()] for _ in range(6)]
    for rows in written:
        spool.append(rows, [])
    [segment] = segment_files(tmp_path)
    length, lost = damage_first_record(segment)
    sink = Sink()
    with caplog.at_level(logging.ERROR, logger="evothesis.spool"):
        assert replay(spool, sink) == 15
    assert [r.event_id for r in sink.rows] == [r.event_id for rows in written[1:] for r in rows]
    [bad] = spool.quarantine.files()
    assert (bad.size, bad.offset, bad.reason) == (length, 0, Damage.BAD_CHECKSUM)
    assert (bad.owner, bad.segment) == (spool.folder.name, segment.name)
    assert spool.status().quarantined == 1
    assert not spool.has_backlog()
    # The log says where and why, never what: no event id of the damaged record.
    assert f"{length} bytes at byte 0 are bad-checksum" in caplog.text
    assert not any(event_id in caplog.text for event_id in lost)


def test_a_replay_interrupted_after_quarantining_counts_the_range_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**9)
    for _ in range(3):
        spool.append([row()], [])
    [segment] = segment_files(tmp_path)
    damage_first_record(segment)
    with pytest.raises(StorageUnavailable):
        replay(spool, Sink(fail_after=1))
    assert replay(spool, Sink()) == 2
    assert spool.status().quarantined == 1
    assert len(spool.quarantine.files()) == 1


def test_a_segment_of_the_previous_format_still_replays(tmp_path: Path) -> None:
    """Segments an earlier version spooled (``EVS1``, left by a process that stopped for
    the upgrade) are adopted and replayed by the new one."""
    old = tmp_path / "oldhost-41-0123abcd"
    old.mkdir(parents=True)
    written = [[row(), row()], [row()], [row(), row(), row()]]
    (old / "segment-000000000001.spool").write_bytes(
        b"".join(legacy_record(rows, [audit()]) for rows in written)
    )
    spool = Spool(tmp_path, max_bytes=10**9)
    sink = Sink()
    assert replay(spool, sink) == 6
    assert [r.event_id for r in sink.rows] == [r.event_id for rows in written for r in rows]
    assert [len(audits) for _, audits in sink.records] == [1, 1, 1]
    assert not old.exists()
    assert spool.status().quarantined == 0


@pytest.fixture(params=[0o000, 0o277], ids=["umask-000", "umask-277"])
def umask(request: pytest.FixtureRequest) -> Iterator[None]:
    """The most permissive umask, and one that takes away the owner's own bits: the modes
    must come out the same under both."""
    previous = os.umask(request.param)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask")
def test_spool_folders_and_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = Spool(root, max_bytes=10**9)
    for _ in range(2):
        spool.append([row()], [])
    [segment] = segment_files(root)
    damage_first_record(segment)
    replay(spool, Sink())
    spool.append([row()], [])
    [fresh] = segment_files(root)
    [bad] = spool.quarantine.files()
    assert {mode(path) for path in (root, spool.folder, spool.quarantine.folder)} == {0o700}
    assert {mode(path) for path in (fresh, bad.path)} == {0o600}


def test_an_existing_world_readable_spool_folder_is_tightened(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)  # as earlier versions left it
    Spool(root, max_bytes=10**9).close()
    assert mode(root) == 0o700


def test_quarantined_files_tell_where_they_came_from(tmp_path: Path) -> None:
    folder = tmp_path / "quarantine"
    folder.mkdir()
    names = [
        "host.example.com-7-89abcdef.segment-000000000002.0-512.bad-header.bad",
        "oldhost-41-0123abcd-segment-000000000003.spool-2048.bad",  # an earlier version's
        "something-else.bad",
    ]
    for name in names:
        (folder / name).write_bytes(b"x" * 10)
    (folder / ".half-written.bad.partial").write_bytes(b"x")
    described = {file.path.name: file for file in Quarantine(folder).files()}
    assert sorted(described) == sorted(names)
    current = described[names[0]]
    assert (current.owner, current.segment, current.offset, current.reason) == (
        "host.example.com-7-89abcdef",
        "segment-000000000002.spool",
        0,
        Damage.BAD_HEADER,
    )
    assert current.origin == "host.example.com-7-89abcdef/segment-000000000002.spool@0"
    earlier = described[names[1]]
    assert (earlier.owner, earlier.segment, earlier.offset, earlier.reason) == (
        "oldhost-41-0123abcd",
        "segment-000000000003.spool",
        2048,
        None,
    )
    assert described[names[2]].origin == "unknown"


def test_replaying_the_quarantine_recovers_intact_records_and_removes_spent_files(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "quarantine"
    folder.mkdir()
    # An earlier version set aside a whole tail from its first bad record on.
    tail = [legacy_record([row(), row()]) for _ in range(4)]
    bad_first = bytearray(tail[0])
    bad_first[20] ^= 1
    old = folder / "oldhost-41-0123abcd-segment-000000000001.spool-0.bad"
    old.write_bytes(bytes(bad_first) + b"".join(tail[1:]))
    # Records another version wrote and this one could not read then, whole and intact.
    whole = [encode_record([row()], []) for _ in range(2)]
    readable = folder / "host-1-00000000.segment-000000000001.0-999.undecodable.bad"
    readable.write_bytes(b"".join(whole))
    garbage = folder / "host-1-00000000.segment-000000000002.0-7.bad-magic.bad"
    garbage.write_bytes(b"garbage")
    sink = Sink()

    summary = asyncio.run(replay_quarantine(Quarantine(folder), sink))

    expected = [
        i for part in [*tail[1:], *whole] for span in record_spans(part) for i in span.event_ids
    ]
    assert sorted(r.event_id for r in sink.rows) == sorted(expected)
    assert (summary.files, summary.records, summary.events) == (3, 5, 8)
    assert summary.removed == [readable.name]
    assert [(k.file, k.records, k.damaged_bytes) for k in summary.kept] == [
        (garbage.name, 0, 7),
        (old.name, 3, len(tail[0])),
    ]
    assert sorted(path.name for path in folder.iterdir()) == sorted([old.name, garbage.name])


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
