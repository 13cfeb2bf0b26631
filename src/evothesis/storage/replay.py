"""Draining the disk spool into PostgreSQL once it answers again.

Runs as a background task of every collector process. A segment is deleted only after
all its records are committed; a failure or crash mid-segment replays it from the start,
which event ids (and audit request ids) make harmless.
"""

from __future__ import annotations

import asyncio
import logging

from evothesis.errors import StorageUnavailable
from evothesis.storage.spool import Spool
from evothesis.storage.write_buffer import Sink

logger = logging.getLogger("evothesis.spool")


async def drain(spool: Spool, sink: Sink) -> int:
    """Replay every segment ready now; returns the rows replayed. Raises
    ``StorageUnavailable`` when the database fails again (the rest waits)."""
    replayed = 0
    try:
        for segment in await asyncio.to_thread(spool.claim_backlog):
            records = await asyncio.to_thread(list, spool.read(segment))
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
