"""Lenient-but-safe ISO-8601 parsing for client timestamps.

Browsers send ``toISOString()`` (``…T12:00:00.123Z``); server-side senders send offsets,
no zone, or microseconds. All of those are accepted; anything else is a 422, never a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime

from evothesis.errors import InvalidEvent

#: Large enough for any ISO-8601 form, small enough to refuse garbage early.
_MAX_LENGTH = 40


def parse_timestamp(value: object, *, field: str = "timestamp") -> datetime:
    """Parse an ISO-8601 timestamp into an aware UTC datetime; naive means UTC."""
    if not isinstance(value, str):
        raise InvalidEvent(f"{field} must be an ISO-8601 string", field=field)
    text = value.strip()
    if not text or len(text) > _MAX_LENGTH:
        raise InvalidEvent(f"{field} is not an ISO-8601 timestamp: {value[:60]!r}", field=field)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEvent(f"{field} is not an ISO-8601 timestamp: {text!r}", field=field) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent(f"{field} is out of range: {text!r}", field=field) from None
