"""Lenient-but-safe ISO-8601 parsing for client timestamps, within the window the whole
pipeline can carry.

Browsers send ``toISOString()`` (``…T12:00:00.123Z``); server-side senders send offsets,
no zone, or microseconds. All of those are accepted; anything else is a 422, never a 500.

A time outside the window (before 2000, or more than a day ahead of the server's clock) is
refused too: PostgreSQL would store year 1 or 9999 as ``-infinity``/``infinity``, which no
export format can render, and a single such event would otherwise hold up the delivery of
every client's events exported with it. Messages never quote the value (they are stored
with failed events): the field and the kind of problem are enough.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from evothesis.domain import RejectReason
from evothesis.errors import InvalidEvent

#: Large enough for any ISO-8601 form, small enough to refuse garbage early.
_MAX_LENGTH: Final = 40
#: The oldest time accepted.
EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
#: How far ahead of the server's clock a sender's clock may run.
LATEST_AHEAD: Final = timedelta(days=1)


def parse_timestamp(value: object, *, field: str = "timestamp", now: datetime) -> datetime:
    """Parse an ISO-8601 timestamp into an aware UTC datetime; naive means UTC."""
    if not isinstance(value, str):
        raise InvalidEvent(
            f"{field} must be an ISO-8601 string", field=field, reason=RejectReason.WRONG_TYPE
        )
    text = value.strip()
    if not text or len(text) > _MAX_LENGTH:
        raise InvalidEvent(f"{field} is not an ISO-8601 timestamp", field=field)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEvent(f"{field} is not an ISO-8601 timestamp", field=field) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        moment = EARLIEST - LATEST_AHEAD  # beyond what a datetime holds: out of the window
    return within_window(moment, field=field, now=now)


def within_window(moment: datetime, *, field: str, now: datetime) -> datetime:
    """``moment`` (aware, UTC), or ``InvalidEvent`` when it is outside the window."""
    if not EARLIEST <= moment <= now + LATEST_AHEAD:
        raise InvalidEvent(
            f"{field} is outside the accepted window: from 2000-01-01 to one day after the "
            "server's time",
            field=field,
            reason=RejectReason.OUT_OF_RANGE,
        )
    return moment
