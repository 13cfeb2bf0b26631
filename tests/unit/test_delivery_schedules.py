"""Delivery schedules and the decisions to cut a delivery: pure, with the clock given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from evothesis.config import Settings
from evothesis.domain import DeliveryTrigger
from evothesis.export.deliveries import (
    ON_DEMAND_EXPIRY,
    Cut,
    PendingClient,
    due_cut,
    next_delivery,
    split_shares,
)
from evothesis.schedules import parse_schedule

T0 = datetime(2026, 1, 5, 13, 20, tzinfo=UTC)


def at(hour: int, minute: int = 0, *, day: int = 5) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("hourly", "hourly"),
        (" Daily ", "daily"),
        ("real-time", "real-time"),
        ("realtime", "real-time"),
        ("real_time", "real-time"),
        ("*/15  *  * * *", "*/15 * * * *"),
        ("0 6 * * MON", "0 6 * * mon"),
    ],
)
def test_schedules_are_read_in_every_usual_spelling(text: str, canonical: str) -> None:
    assert parse_schedule(text).text == canonical


@pytest.mark.parametrize("text", ["", "5m", "every hour", "61 * * * *", "* * * *", "0 0 31 2 *"])
def test_what_is_not_a_schedule_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"schedule|cron"):
        parse_schedule(text)


def test_hourly_ticks_at_minute_zero_and_daily_at_midnight_utc() -> None:
    hourly, daily = parse_schedule("hourly"), parse_schedule("daily")
    assert hourly.next_tick(T0) == at(14)
    assert hourly.last_tick(T0) == at(13)
    assert hourly.last_tick(at(13)) == at(13)  # a tick counts at its own moment
    assert hourly.last_tick(at(13) - timedelta(microseconds=1)) == at(12)
    assert daily.next_tick(T0) == at(0, day=6)
    assert daily.last_tick(T0) == at(0)
    assert parse_schedule("*/15 * * * *").next_tick(T0) == at(13, 30)
    other_zone = T0.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    assert hourly.next_tick(other_zone) == at(14)


def test_real_time_has_no_ticks() -> None:
    real_time = parse_schedule("real-time")
    assert real_time.real_time
    assert real_time.next_tick(T0) is None and real_time.last_tick(T0) is None


def test_export_schedule_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORT_SCHEDULE", "*/10 * * * *")
    monkeypatch.setenv("EXPORT_INTERVAL", "30s")
    settings = Settings(_env_file=None)
    assert (settings.export_schedule.text, settings.export_interval_s) == ("*/10 * * * *", 30.0)


def test_export_schedule_defaults_to_hourly_and_takes_any_schedule() -> None:
    assert Settings(_env_file=None).export_schedule.text == "hourly"
    assert Settings(_env_file=None).export_interval_s == 60.0
    assert Settings(_env_file=None, EXPORT_SCHEDULE="real-time").export_schedule.real_time
    assert Settings(_env_file=None, EXPORT_SCHEDULE="0 */6 * * *").export_schedule.cron


def pending(schedule: str = "hourly", **overrides: object) -> PendingClient:
    values: dict[str, object] = {
        "client_id": "acme",
        "pending_events": 10,
        "oldest_claimed_at": at(13, 5),
        "schedule": parse_schedule(schedule),
        "threshold": None,
        "last_tick": None,
        "requested_at": None,
    }
    values.update(overrides)
    return PendingClient(**values)  # type: ignore[arg-type]


def test_a_scheduled_client_is_cut_at_the_first_tick_after_its_oldest_waiting_batch() -> None:
    client = pending()
    assert due_cut(client, at(13, 59)) is None
    cut = due_cut(
        client,
        at(
            14,
            0,
        ),
    )
    assert cut == Cut(DeliveryTrigger.SCHEDULE, before=at(14), tick=at(14))
    # Missed ticks make one delivery: the latest tick, everything claimed before it.
    assert due_cut(client, at(17, 30)) == Cut(DeliveryTrigger.SCHEDULE, before=at(17), tick=at(17))


def test_a_tick_already_cut_is_not_cut_again() -> None:
    client = pending(last_tick=at(14), oldest_claimed_at=at(13, 59))
    assert due_cut(client, at(14, 30)) is None
    assert due_cut(client, at(15)) == Cut(DeliveryTrigger.SCHEDULE, before=at(15), tick=at(15))


def test_a_client_quiet_for_days_waits_for_the_tick_after_its_new_events() -> None:
    client = pending(last_tick=at(14, day=2), oldest_claimed_at=at(13, 5))
    assert due_cut(client, at(13, 30)) is None
    assert due_cut(client, at(14)) is not None


def test_real_time_cuts_at_once_and_triggers_cut_everything_early() -> None:
    assert due_cut(pending("real-time"), T0) == Cut(DeliveryTrigger.REAL_TIME)
    assert due_cut(pending(threshold=10), T0) == Cut(DeliveryTrigger.THRESHOLD)
    assert due_cut(pending(threshold=11), T0) is None
    asked = pending(requested_at=T0 - timedelta(seconds=5))
    assert due_cut(asked, T0) == Cut(DeliveryTrigger.ON_DEMAND)
    # Not while the raw export has yet to claim what was waiting when the client asked,
    # nor a tick's delivery.
    assert due_cut(asked, T0, caught_up=False) is None
    assert due_cut(pending(), at(14), caught_up=False) is None
    assert due_cut(pending(threshold=10), T0, caught_up=False) == Cut(DeliveryTrigger.THRESHOLD)
    stale = pending(requested_at=T0 - ON_DEMAND_EXPIRY - timedelta(seconds=1))
    assert due_cut(stale, T0) is None


def test_the_next_delivery_is_the_due_tick_or_the_next_one() -> None:
    hourly = parse_schedule("hourly")
    assert next_delivery(hourly, T0, None) == at(14)
    assert next_delivery(hourly, T0, at(12)) == at(13)  # due, not yet cut
    assert next_delivery(hourly, T0, at(13)) == at(14)
    assert next_delivery(parse_schedule("real-time"), T0, None) is None


def test_shares_are_split_into_deliveries_of_bounded_size_in_batch_order() -> None:
    shares = [(1, 40), (2, 40), (3, 40), (4, 200), (5, 1)]
    assert split_shares(shares, real_time=False, max_events=100) == [
        [(1, 40), (2, 40)],
        [(3, 40)],
        [(4, 200)],
        [(5, 1)],
    ]
    assert split_shares(shares, real_time=False, max_events=1000) == [shares]
    assert split_shares(shares, real_time=True) == [[share] for share in shares]
    assert split_shares([], real_time=False) == []
