"""What the billing tests share: events_log rows with a chosen arrival time, written
through the real ``EventStore`` (so discoveries are recorded as in production)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import orjson

from evothesis.domain import EventRow
from evothesis.storage.events import EventStore
from evothesis.storage.pool import create_pool
from tests.support.sync import run_coroutine


def event_row(
    client_id: str, site_id: str, created_at: datetime, event_type: str = "pageview"
) -> EventRow:
    event_id = str(uuid.uuid4())
    payload = {"eventType": event_type, "siteId": site_id, "eventId": event_id}
    return EventRow(
        event_id,
        event_type,
        "sess",
        "vis",
        site_id,
        client_id,
        created_at,
        f"https://{site_id}/",
        "/",
        None,
        None,
        None,
        orjson.dumps(payload).decode(),
        created_at,
    )


def insert_rows(database_url: str, *flushes: Sequence[EventRow]) -> None:
    """Each sequence as one flush of one ``EventStore``, one after the other."""

    async def run() -> None:
        pool = await create_pool(database_url, min_size=1, max_size=2)
        try:
            store = EventStore(pool)
            for rows in flushes:
                await store.insert(rows)
        finally:
            await pool.close()

    run_coroutine(run)
