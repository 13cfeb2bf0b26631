"""Draining the disk spool into PostgreSQL once it answers again, and recovering what the
quarantine still holds.

The drain runs as a background task of every collector process. A segment is deleted only
after all its intact records are committed (and its damaged ranges are quarantined); a
failure or crash mid-segment replays it from the start, which event ids (and audit request
ids) make harmless.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from evothesis.errors import StorageUnavailable
from evothesis.storage.spool import Quarantine, Spool
from evothesis.storage.write_buffer import Sink

logger = logging.getLogger("evothesis.spool")


async def drain(spool: Spool, sink: Sink) -> int:
    """Replay every segment ready now; returns the rows replayed. Raises
    ``StorageUnavailable`` when the database fails again (the rest waits)."""
    replayed = 0
    try:
        for segment in await asyncio.to_thread(spool.claim_backlog):
            records = await asyncio.to_thread(spool.read, segment)
            rows = 0
            for record in records:
                await sink(record.rows, record.audits, record.failed)
                rows += len(record.rows)
                spool.replayed_rows += len(record.rows)
            await asyncio.to_thread(spool.done, segment)
            replayed += rows
            logger.info("Replayed %d spooled events from %s", rows, segment.name)
    finally:
        spool.release_adopted()
    return replayed


async def replay_forever(
    spool: Spool, sink: Sink, *, interval: float = 1.0, max_backoff: float = 15.0
) -> None:
    """Check for a backlog every ``interval`` seconds; back off while the database is down."""
    delay = interval
    while True:
        await asyncio.sleep(delay)
        if not await asyncio.to_thread(spool.has_backlog):
            delay = interval
            continue
        try:
            await drain(spool, sink)
            delay = interval
        except StorageUnavailable as exc:
            delay = min(delay * 2, max_backoff)
            logger.warning("Spool replay paused (%s); retrying in %.0f s", exc.message, delay)


@dataclass(frozen=True, slots=True)
class KeptFile:
    """A quarantined file that still holds damaged bytes after its records were replayed."""

    file: str
    records: int
    damaged_bytes: int


@dataclass(slots=True)
class QuarantineReplay:
    """What ``replay_quarantine`` stored, and which files it removed or kept."""

    files: int = 0
    records: int = 0
    events: int = 0
    removed: list[str] = field(default_factory=list)
    kept: list[KeptFile] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def replay_quarantine(quarantine: Quarantine, sink: Sink) -> QuarantineReplay:
    """Store every intact record the quarantined files still hold through ``sink``, the
    same path the replayer takes (so a record stored before is not stored again).

    Such records exist where the reader of the time could not use them: tails that earlier
    versions quarantined whole from their first bad record on, legacy records, payloads
    another version wrote. A file made only of intact records is removed once they are
    committed; any other stays for an operator. Raises ``StorageUnavailable`` when the
    database fails; what was committed by then stays committed, and running it again is
    harmless.
    """
    summary = QuarantineReplay()
    for quarantined in await asyncio.to_thread(quarantine.files):
        decoded = await asyncio.to_thread(quarantined.read)
        summary.files += 1
        for intact in decoded.records:
            record = intact.record
            await sink(record.rows, record.audits, record.failed)
            summary.records += 1
            summary.events += len(record.rows)
        name = quarantined.path.name
        if decoded.damaged:
            damaged = sum(damage.length for damage in decoded.damaged)
            summary.kept.append(KeptFile(name, len(decoded.records), damaged))
        else:
            await asyncio.to_thread(quarantine.remove, quarantined.path)
            summary.removed.append(name)
        logger.info(
            "Quarantined file %s: %d records replayed, %s",
            name,
            len(decoded.records),
            "kept (damaged bytes remain)" if decoded.damaged else "removed",
        )
    return summary
