"""Retention's upkeep of events_log's partitions (storage.partitions) against real
PostgreSQL: what it may not do, it skips and leaves to the next round, never waiting long
on ingestion's locks and never moving a row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from evothesis.storage.partitions import BufferPartitions, Maintained
from evothesis.storage.pool import create_pool
from tests.support.sync import run_coroutine


def maintain(database_url: str, now: datetime) -> Maintained:
    async def run() -> Maintained:
        pool = await create_pool(database_url, min_size=1, max_size=1)
        try:
            return await BufferPartitions(pool).maintain(3600, now)
        finally:
            await pool.close()

    return run_coroutine(run)


def test_a_day_the_default_partition_holds_rows_of_is_left_to_it(
    database_url: str, db: Any
) -> None:
    """A row that arrived before its day had a partition (a clock ahead) stays where it is:
    that day is not added (and stays in the DEFAULT partition), the next one is."""
    db.execute(
        "INSERT INTO events_log (event_id, event_type, site_id, client_id, timestamp,"
        " raw_event_data, created_at) VALUES (gen_random_uuid(), 'click', 'localhost',"
        " 'client_test', '2031-06-02 12:00+00', '{}', '2031-06-02 12:00+00')"
    )
    done = maintain(database_url, datetime(2031, 6, 1, 10, tzinfo=UTC))
    assert done.added == ["events_log_p20310603"]
    [(table,)] = db.execute("SELECT tableoid::regclass::text FROM events_log").fetchall()
    assert table == "events_log_default"


def test_a_drop_does_not_wait_long_behind_a_reader_and_happens_next_round(
    database_url: str, db: Any
) -> None:
    """Dropping a day locks events_log exclusively, which would queue every insert behind a
    long read: it gives up after ``LOCK_WAIT_MS`` instead, and drops at the next round."""
    db.execute("SELECT events_log_add_partition('2031-01-01')")
    days_later = datetime(2031, 1, 5, tzinfo=UTC)
    with psycopg.connect(database_url) as reader:
        reader.execute("SELECT count(*) FROM events_log")  # its transaction stays open
        assert "events_log_p20310101" not in maintain(database_url, days_later).dropped
    assert "events_log_p20310101" in maintain(database_url, days_later).dropped
