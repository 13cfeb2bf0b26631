"""EventStore.insert against real PostgreSQL: a flush of known or new sites must store
every new event once, skip stored ids (within the deduplication window: the row's arrival
day and the days either side of it, across the partitions of events_log), and store
nothing of a flush that fails."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from evothesis.domain import EventRow
from evothesis.errors import StorageUnavailable
from evothesis.storage.events import DEDUP_WINDOW_S, EventStore, InsertedCount
from evothesis.storage.pool import create_pool
from tests.support.rows import event_row
from tests.support.sync import run_coroutine

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def flushes(
    database_url: str, *batches: Sequence[EventRow], window_s: float = DEDUP_WINDOW_S
) -> list[list[InsertedCount] | str]:
    """Each batch as one ``insert`` of one store (``BUFFER_DEDUP_WINDOW``: ``window_s``); a
    failed flush gives the name of the database error behind it."""

    async def run() -> list[list[InsertedCount] | str]:
        pool = await create_pool(database_url, min_size=1, max_size=1)
        results: list[list[InsertedCount] | str] = []
        try:
            store = EventStore(pool, dedup_window_s=window_s)
            for rows in batches:
                try:
                    results.append(await store.insert(rows))
                except StorageUnavailable as exc:
                    results.append(type(exc.__cause__).__name__)
        finally:
            await pool.close()
        return results

    return run_coroutine(run)


def stored_ids(db: Any) -> list[str]:
    return [str(r[0]) for r in db.execute("SELECT event_id FROM events_log ORDER BY id")]


def test_a_flush_of_known_sites_skips_stored_ids_and_counts_only_new_ones(
    database_url: str, db: Any
) -> None:
    first = [event_row("acme", "acme.test", NOW) for _ in range(3)]
    again = event_row("acme", "acme.test", NOW)
    results = flushes(database_url, first, [first[1], again, first[2]])
    assert results == [
        [InsertedCount("acme", "acme.test", 3)],
        [InsertedCount("acme", "acme.test", 1)],
    ]
    assert stored_ids(db) == [row.event_id for row in [*first, again]]
    assert db.execute("SELECT count(*) FROM site_discoveries").fetchone()[0] == 1


@pytest.mark.parametrize("site_known", [True, False], ids=["known site", "new site"])
def test_a_failing_flush_stores_none_of_its_events(
    database_url: str, db: Any, site_known: bool
) -> None:
    warm_up = [event_row("acme", "acme.test", NOW)]
    site = "acme.test" if site_known else "new.acme.test"
    good = event_row("acme", site, NOW)
    # JSONB refuses this text, so the COPY fails after the good row went over the wire.
    bad = event_row("acme", site, NOW)._replace(raw_event_data="{not json")
    results = flushes(database_url, warm_up, [good, bad])
    assert results[1] == "InvalidTextRepresentationError"
    assert stored_ids(db) == [warm_up[0].event_id]
    discovered = [r[0] for r in db.execute("SELECT site_id FROM site_discoveries")]
    assert discovered == ["acme.test"]


#: A midnight (UTC) between two days that get partitions of their own in these tests.
MIDNIGHT = datetime(2030, 1, 2, tzinfo=UTC)
JUST_BEFORE = MIDNIGHT - timedelta(milliseconds=1)
JUST_AFTER = MIDNIGHT + timedelta(milliseconds=1)


def partitions(db: Any, *days: datetime) -> None:
    """The days' partitions, as retention's upkeep adds them ahead of time."""
    for day in days:
        db.execute("SELECT events_log_add_partition(%s::date)", (day.date(),))


def at(row: EventRow, moment: datetime) -> EventRow:
    """The same event, arrived at ``moment`` (a retry, or a spool replay of it)."""
    return row._replace(created_at=moment, timestamp=moment)


@pytest.mark.parametrize(
    ("first", "retry"),
    [(JUST_BEFORE, JUST_AFTER), (JUST_AFTER, JUST_BEFORE)],
    ids=["retry after midnight", "replay of the evening before"],
)
@pytest.mark.parametrize("previous_day", [True, False], ids=["partition", "DEFAULT partition"])
def test_a_retry_across_midnight_is_recognised(
    database_url: str, db: Any, first: datetime, retry: datetime, previous_day: bool
) -> None:
    """Each day's partition has its own unique index; the day before and after are checked
    by ``window_retries``, also when the day before has no partition of its own."""
    partitions(db, *([JUST_BEFORE] if previous_day else []), JUST_AFTER)
    row = event_row("acme", "acme.test", first)
    other = event_row("acme", "acme.test", retry)
    results = flushes(database_url, [row], [at(row, retry), other])
    assert results == [
        [InsertedCount("acme", "acme.test", 1)],
        [InsertedCount("acme", "acme.test", 1)],
    ]
    assert stored_ids(db) == [row.event_id, other.event_id]
    [(table,)] = db.execute(
        "SELECT tableoid::regclass::text FROM events_log WHERE event_id = %s", (row.event_id,)
    ).fetchall()
    expected = "events_log_p20300101" if previous_day else "events_log_default"
    assert table == (expected if first == JUST_BEFORE else "events_log_p20300102")


def test_both_copies_in_one_flush_across_midnight_store_the_first(
    database_url: str, db: Any
) -> None:
    partitions(db, JUST_BEFORE, JUST_AFTER)
    row = event_row("acme", "acme.test", JUST_AFTER)
    results = flushes(database_url, [row, at(row, JUST_BEFORE)])
    assert results == [[InsertedCount("acme", "acme.test", 1)]]
    [(created_at,)] = db.execute("SELECT created_at FROM events_log").fetchall()
    assert created_at == JUST_BEFORE


@pytest.mark.parametrize(
    ("window_s", "stored_again"),
    [(3600, True), (3 * 3600, False), (86400, False)],
    ids=["window 1h", "window 3h", "window 24h"],
)
def test_a_copy_across_midnight_is_recognised_within_the_window(
    database_url: str, db: Any, window_s: float, stored_again: bool
) -> None:
    """A copy two hours after the first, which arrived an hour before midnight: within a
    window of 3h or more it is recognised; with a window of 1h its flush is not checked
    against the day before, and it is stored again. Another client's event of the same id
    is its own (tenants never deduplicate each other)."""
    first_at = MIDNIGHT - timedelta(hours=1)
    partitions(db, first_at, JUST_AFTER)
    row = event_row("acme", "acme.test", first_at)
    other_client = event_row("globex", "globex.test", JUST_AFTER)._replace(event_id=row.event_id)
    copy = at(row, first_at + timedelta(hours=2))
    results = flushes(database_url, [row], [copy], [other_client], window_s=window_s)
    assert results == [
        [InsertedCount("acme", "acme.test", 1)],
        [InsertedCount("acme", "acme.test", 1)] if stored_again else [],
        [InsertedCount("globex", "globex.test", 1)],
    ]
    assert stored_ids(db) == [row.event_id] * (3 if stored_again else 2)


def test_copies_on_one_day_are_recognised_whatever_the_window(database_url: str, db: Any) -> None:
    partitions(db, JUST_AFTER)
    row = event_row("acme", "acme.test", JUST_AFTER)
    results = flushes(database_url, [row], [at(row, JUST_AFTER + timedelta(hours=23))], window_s=1)
    assert results == [[InsertedCount("acme", "acme.test", 1)], []]
    assert stored_ids(db) == [row.event_id]


def test_a_copy_written_while_the_first_is_uncommitted_waits_and_is_skipped(
    database_url: str, db: Any
) -> None:
    """Concurrent copies of one id in one day: the partition's unique index makes the second
    wait for the first transaction, then skip the id once it commits."""
    partitions(db, JUST_AFTER)
    row = event_row("acme", "acme.test", JUST_AFTER)
    with psycopg.connect(database_url) as first:
        first.execute(
            "INSERT INTO events_log (event_id, event_type, site_id, client_id, timestamp, "
            "raw_event_data, created_at) VALUES (%s, 'pageview', 'acme.test', 'acme', %s, "
            "'{}', %s)",
            (row.event_id, JUST_AFTER, JUST_AFTER),
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            second = pool.submit(flushes, database_url, [at(row, JUST_AFTER)])
            time.sleep(0.5)
            assert not second.done()  # waiting on the first copy's transaction
            first.commit()
            assert second.result(timeout=30) == [[]]
    assert stored_ids(db) == [row.event_id]
