"""Reads and bulk writes on ``events_log``; the only module that talks SQL about events."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Final

import asyncpg

from evothesis.domain import EVENT_COLUMNS, AuditRecord, EventRow, FailedEvent
from evothesis.errors import StorageUnavailable
from evothesis.storage.pool import Connection
from evothesis.storage.queries import query
from evothesis.storage.sessions import UNAVAILABLE_ERRORS, describe_error, with_connection

#: ``BUFFER_DEDUP_WINDOW``'s default: a copy of an event arriving within this long of the
#: first is recognised across midnight (within one UTC day, always). The flushes within
#: this long of midnight pay for the check (``window_retries``); at most a day, as only
#: the days either side of a row's own are checked.
DEDUP_WINDOW_S: Final = 6 * 3600.0
MAX_DEDUP_WINDOW_S: Final = 24 * 3600.0

#: (client, site) pairs one process remembers as recorded in ``site_discoveries``. Past
#: this many the memory is dropped and rebuilt: forgetting costs one redundant upsert per
#: pair, never a wrong row.
KNOWN_SITES_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class InsertedCount:
    """How many rows of one flush were new (not retries) for one client and site."""

    client_id: str
    site_id: str
    inserted: int


@dataclass(frozen=True, slots=True)
class EventCounts:
    """Stored events per client (a batch request of N events stores N + 1 rows, the seeds'
    count), two ways."""

    #: Every event ever stored, exported or not: retention and erasure do not lower it.
    total: dict[str, int]
    #: The events ``events_log`` holds now: not yet exported, or exported but their day's
    #: partition not yet dropped by retention.
    buffered: dict[str, int]


class EventStore:
    """``events_log`` behind a small interface, with driver errors translated."""

    def __init__(self, pool: asyncpg.Pool, *, dedup_window_s: float = DEDUP_WINDOW_S) -> None:
        self._pool = pool
        #: How close to midnight a row's arrival makes its flush check the neighbouring days.
        self._window = timedelta(seconds=min(dedup_window_s, MAX_DEDUP_WINDOW_S))
        #: Pairs whose discovery this process has committed (``_record_discoveries``).
        self._known_sites: set[tuple[str, str]] = set()

    async def insert(
        self,
        rows: Sequence[EventRow],
        audits: Sequence[AuditRecord] = (),
        failed: Sequence[FailedEvent] = (),
    ) -> list[InsertedCount]:
        """Write rows with one binary COPY; event ids already stored are skipped.

        ``audits`` (hipaa batches) go into ``hipaa_audit_log`` and ``failed`` (rejected
        inner events) into ``failed_events`` in the same transaction, so there is never an
        audited batch without its events, and a batch's failed events share its
        transaction id, which is how the exporter finds them (see ``export_batch_failed_lines``).

        Retries are rare, so the COPY goes straight into ``events_log`` first; only when
        it meets an event id that is already stored is the flush redone through the
        staging table and ``move_staged_events``, which costs PostgreSQL twice the work.
        Each day's partition (arrival days, UTC) has its own unique index, so the COPY
        fails on a retry of the same day only. A flush with a row that arrived within the
        deduplication window of midnight (``BUFFER_DEDUP_WINDOW``) is also checked, before
        its commit, against the day before and the day after (``window_retries``); a flush
        whose rows arrived on several days goes through the staging table at once, which
        checks each row against the neighbours of its own day. So a copy arriving within
        the window of the first one is always recognised (README.md: the deduplication
        window), and the flushes of most of the day pay for no check.

        A flush with nothing but events far from midnight (nearly every one) is a lone
        COPY, which is a transaction of its own: skipping BEGIN and COMMIT saves two of its
        four round trips to the server, and each round trip waits for the event loop to
        come back to it.

        Sites this process has not seen yet are recorded in ``site_discoveries`` in the
        same transaction (billing: a discovery exists exactly when its site has events).
        Both the write buffer and the spool replay come through here, so both record them.
        """
        discoveries = self._new_sites(rows)
        day = arrival_day(rows)
        near_midnight = day is not None and self._near_midnight(rows, day)
        try:
            async with self._pool.acquire() as connection:
                try:
                    if day is None:
                        raise _Restage  # each row is checked against its own day's neighbours
                    several = bool(audits or failed or discoveries) or near_midnight
                    async with _atomic(connection, several):
                        await connection.copy_records_to_table(
                            "events_log", records=rows, columns=EVENT_COLUMNS
                        )
                        if near_midnight and await connection.fetchval(
                            query("window_retries"), day
                        ):
                            raise _Restage
                        await _write_side_records(connection, audits, failed, discoveries)
                except (asyncpg.UniqueViolationError, _Restage):
                    async with connection.transaction():
                        await connection.copy_records_to_table(
                            "events_staging", records=rows, columns=EVENT_COLUMNS
                        )
                        result = await connection.fetch(query("move_staged_events"))
                        await _write_side_records(connection, audits, failed, discoveries)
                    self._remember_sites(discoveries)
                    return [
                        InsertedCount(r["client_id"], r["site_id"], r["inserted"]) for r in result
                    ]
        except UNAVAILABLE_ERRORS as exc:
            raise StorageUnavailable(f"could not store events: {describe_error(exc)}") from exc
        self._remember_sites(discoveries)
        counts = Counter((row.client_id, row.site_id) for row in rows)
        return [InsertedCount(client, site, n) for (client, site), n in sorted(counts.items())]

    def _near_midnight(self, rows: Sequence[EventRow], day: datetime) -> bool:
        """Whether a row of ``day`` arrived within the deduplication window of its start or
        its end, where a copy of it may be in the day before or after."""
        early = day + self._window
        late = day + timedelta(days=1) - self._window
        return any(row.created_at < early or row.created_at >= late for row in rows)

    def _new_sites(self, rows: Sequence[EventRow]) -> dict[tuple[str, str], datetime]:
        """The flush's (client, site) pairs not yet known here, with their earliest event;
        for known sites (nearly every flush) this is one set lookup per row."""
        known = self._known_sites
        firsts: dict[tuple[str, str], datetime] = {}
        for row in rows:
            pair = (row.client_id, row.site_id)
            if pair in known:
                continue
            seen = firsts.get(pair)
            if seen is None or row.created_at < seen:
                firsts[pair] = row.created_at
        return firsts

    def _remember_sites(self, discoveries: dict[tuple[str, str], datetime]) -> None:
        """Only after the commit: a rolled-back flush must be able to record them again."""
        if not discoveries:
            return
        if len(self._known_sites) + len(discoveries) > KNOWN_SITES_LIMIT:
            self._known_sites.clear()
        self._known_sites.update(discoveries)

    async def count(self) -> EventCounts:
        """Events per client: stored since the start, and in the buffer now. The changes
        recorded since the last count are folded into the counts first, so that they stay
        a few rows per client (exact either way: ``count_events`` reads both)."""

        async def fold(connection: Connection) -> None:
            async with connection.transaction():
                if await connection.fetchval(query("event_counts_try_lock")):
                    await connection.execute(query("fold_event_counts"))

        await with_connection(self._pool, fold, what="database unreachable", timeout_s=10)
        rows = await self._fetch("count_events")
        return EventCounts(
            total={row["client_id"]: row["total"] for row in rows},
            buffered={row["client_id"]: row["buffered"] for row in rows if row["buffered"]},
        )

    async def recent(
        self,
        limit: int,
        *,
        client_id: str | None = None,
        site_id: str | None = None,
        event_type: str | None = None,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` events, newest first, of one client, site and event type
        where given."""
        rows = await self._fetch("recent_events", limit, client_id, site_id, event_type)
        return [dict(row) for row in rows]

    async def recent_failures(
        self, limit: int, *, client_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` failed events (of one client where given), newest first."""
        return [dict(row) for row in await self._fetch("recent_failed_events", limit, client_id)]

    async def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the database answers within two seconds."""
        await with_connection(
            self._pool,
            lambda connection: connection.fetchval(query("ping")),
            what="database unreachable",
            timeout_s=2,
        )

    async def _fetch(self, name: str, *args: object) -> list[asyncpg.Record]:
        return await with_connection(
            self._pool,
            lambda connection: connection.fetch(query(name), *args),
            what="database unreachable",
            timeout_s=10,
        )


def _atomic(
    connection: Connection, several_statements: bool
) -> AbstractAsyncContextManager[object]:
    """A transaction when a flush writes or checks more than its COPY, else nothing."""
    return connection.transaction() if several_statements else nullcontext()


class _Restage(Exception):
    """A flush holds a retry of an event stored in a neighbouring day, or rows of several
    days: (rolled back and) written through the staging table."""


def arrival_day(rows: Sequence[EventRow]) -> datetime | None:
    """The start (UTC midnight) of the day all ``rows`` arrived on; ``None`` when they
    arrived on several days, or there are none."""
    if not rows:
        return None
    start = datetime.combine(rows[0].created_at.astimezone(UTC).date(), time(), UTC)
    end = start + timedelta(days=1)
    return start if all(start <= row.created_at < end for row in rows) else None


async def _write_side_records(
    connection: Connection,
    audits: Sequence[AuditRecord],
    failed: Sequence[FailedEvent],
    discoveries: dict[tuple[str, str], datetime],
) -> None:
    """One audit row per request id and one failed event per (request id, position): a
    retried or replayed batch records neither twice. (Statements per row; these are few
    next to the events they go with.) New sites go in one statement, sorted so that two
    flushes discovering the same sites lock their rows in the same order."""
    if audits:
        await connection.executemany(query("insert_audit"), audits)
    if failed:
        await connection.executemany(query("insert_failed_event"), failed)
    if discoveries:
        pairs = sorted(discoveries)
        await connection.execute(
            query("record_site_discoveries"),
            [client for client, _ in pairs],
            [site for _, site in pairs],
            [discoveries[pair] for pair in pairs],
        )
