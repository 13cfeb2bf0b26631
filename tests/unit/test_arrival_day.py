"""EventStore's choice of path by the days a flush's rows arrived on (UTC days: the
partitions of events_log)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from evothesis.storage.events import arrival_day
from tests.support.rows import event_row

MIDNIGHT = datetime(2030, 1, 2, tzinfo=UTC)


def test_rows_of_one_day_give_its_utc_midnight() -> None:
    rows = [event_row("acme", "acme.test", MIDNIGHT + timedelta(hours=h)) for h in (0, 12, 23)]
    assert arrival_day(rows) == MIDNIGHT


def test_the_day_is_utc_whatever_the_offset_a_time_carries() -> None:
    # 00:30 at +02:00 is 22:30 UTC the day before.
    local = datetime(2030, 1, 2, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert arrival_day([event_row("acme", "acme.test", local)]) == MIDNIGHT - timedelta(days=1)


def test_rows_on_either_side_of_midnight_or_none_give_no_day() -> None:
    late, early = MIDNIGHT - timedelta(milliseconds=1), MIDNIGHT
    assert arrival_day([event_row("acme", "acme.test", t) for t in (early, late)]) is None
    assert arrival_day([]) is None
