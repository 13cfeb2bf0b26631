"""Retention of ``events_log`` by whole days: its partitions ahead of time, and the drop of
those whose every row is exported and past the retention (migration 0016).

A day's partition (``events_log_pYYYYMMDD``, by arrival time ``created_at``, UTC) is
added a few days before it begins; a row whose day has no partition (its day was dropped
already, or a collector's clock runs far ahead) lands in ``events_log_default``, whose rows
retention deletes one exported batch at a time (``export_purge``). A day is dropped once
it and the next day have ended (deduplication checks a row against the days either side
of its own: ``window_retries``) and all of its rows are in batches exported longer than the
retention ago.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

import asyncpg

from evothesis.storage.pool import Connection
from evothesis.storage.queries import query
from evothesis.storage.sessions import with_connection

logger = logging.getLogger(__name__)

#: Days ahead (tomorrow on) that have a partition before they begin: a process that runs
#: retention may be down this long before rows start landing in the DEFAULT partition.
DAYS_AHEAD: Final = 2

WHAT: Final = "buffer partitions"

#: How long adding or dropping a partition waits for its lock on ``events_log``: a
#: waiting exclusive lock makes every insert wait behind it, so it gives up soon and the
#: next round tries again.
LOCK_WAIT_MS: Final = 2000


@dataclass(frozen=True, slots=True)
class Maintained:
    """One round of partition upkeep: the partitions added and dropped, by name."""

    added: list[str]
    dropped: list[str]


class BufferPartitions:
    """The partitions of ``events_log``: added ahead, dropped after retention."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def maintain(self, retention_s: float, now: datetime) -> Maintained:
        """Drop the expired days, then add the coming ones (after ``now``'s UTC day) that
        have no partition yet. A lock not granted within ``LOCK_WAIT_MS`` leaves that step
        to the next round."""
        dropped = await self.drop_expired(retention_s, now)
        today = now.astimezone(UTC).date()
        added = []
        for ahead in range(1, DAYS_AHEAD + 1):
            if name := await self._add(today + timedelta(days=ahead)):
                added.append(name)
        return Maintained(added=added, dropped=dropped)

    async def drop_expired(self, retention_s: float, now: datetime) -> list[str]:
        """Drop every day partition that retention allows (see ``buffer_partitions_expired``),
        checked again under the lock the drop takes anyway, so no row arrives in between."""
        due = await with_connection(
            self._pool,
            lambda c: c.fetch(query("buffer_partitions_expired"), retention_s, now),
            what=WHAT,
        )
        if not due:
            return []

        async def drop(connection: Connection) -> list[str]:
            async with _bounded(connection, f"dropping {', '.join(r['name'] for r in due)}"):
                await connection.execute(query("buffer_lock"))
                names = [
                    row["name"]
                    for row in await connection.fetch(
                        query("buffer_partitions_expired"), retention_s, now
                    )
                ]
                for name in names:
                    await connection.fetchval(query("buffer_partition_drop"), name)
                return names
            return []

        dropped = await with_connection(self._pool, drop, what=WHAT) or []
        for name in dropped:
            logger.info("Dropped %s: its events are exported and past the retention", name)
        return dropped

    async def _add(self, day: date) -> str | None:
        async def add(connection: Connection) -> str | None:
            async with _bounded(connection, f"adding the partition of {day}"):
                name: str | None = await connection.fetchval(query("buffer_partition_add"), day)
                return name
            return None

        name = await with_connection(self._pool, add, what=WHAT)
        if name:
            logger.info("Added %s", name)
        return name


@contextlib.asynccontextmanager
async def _bounded(connection: Connection, step: str) -> AsyncIterator[None]:
    """A transaction that waits ``LOCK_WAIT_MS`` at most for each lock. A lock not granted,
    or a day whose rows the DEFAULT partition already holds (a clock ran ahead), is logged
    and the step skipped (the body returns nothing): the next round tries again."""
    try:
        async with connection.transaction():
            await connection.execute(query("set_local_lock_timeout"), str(LOCK_WAIT_MS))
            yield
    except (asyncpg.LockNotAvailableError, asyncpg.CheckViolationError) as exc:
        logger.warning("Buffer partitions: %s skipped until the next round: %s", step, exc)
