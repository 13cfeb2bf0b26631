"""EventStore.insert against real PostgreSQL, on both of its paths: a flush that records a
new site runs in a transaction, and a flush of events alone is a lone COPY. Either must
store every new event once, skip stored ids, and store nothing of a flush that fails."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from evothesis.domain import EventRow
from evothesis.errors import StorageUnavailable
from evothesis.storage.events import EventStore, InsertedCount
from evothesis.storage.pool import create_pool
from tests.support.rows import event_row
from tests.support.sync import run_coroutine

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def flushes(database_url: str, *batches: Sequence[EventRow]) -> list[list[InsertedCount] | str]:
    """Each batch as one ``insert`` of one store; a failed flush gives the name of the
    database error behind it."""

    async def run() -> list[list[InsertedCount] | str]:
        pool = await create_pool(database_url, min_size=1, max_size=1)
        results: list[list[InsertedCount] | str] = []
        try:
            store = EventStore(pool)
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


@pytest.mark.parametrize("site_known", [True, False], ids=["lone COPY", "transaction"])
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
