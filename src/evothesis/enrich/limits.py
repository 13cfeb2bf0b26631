"""Per-event limits on what a sender may put in an event's own data.

The core fields have their own limits in the parser (``FIELD_LIMITS``); these bound the
free-form rest (``eventData``, ``attribution`` and any other key), so one event cannot carry
ten thousand properties, megabyte strings or a thousand levels of nesting into every export.
An over-long string is truncated with a marker rather than rejected (the event is still
worth having); too many properties, an over-long key or too deep nesting make the event
invalid, which inside a batch means a failed event rather than a lost request.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from evothesis.domain import RejectReason
from evothesis.errors import InvalidEvent

__all__ = ["TRUNCATION_MARKER", "EventLimits", "apply_limits"]

#: Ends a truncated string, so consumers can tell a cut value from a short one.
TRUNCATION_MARKER: Final = "…[truncated]"


class EventLimits(NamedTuple):
    #: Keys in the event's free-form data, counted at every level.
    max_properties: int = 300
    max_key_length: int = 200
    #: Longer strings are cut to this length, marker included.
    max_string_length: int = 4096
    #: Objects and lists nested in the event (``{"eventData": {"a": [1]}}`` is depth 2);
    #: deep but reasonable, and below the 64 levels the PII redactor inspects.
    max_depth: int = 40


#: Top-level fields whose names are ours (documented in the seed contract); any other key an
#: event carries is the sender's, and may itself be personal data.
NAMED_FIELDS: Final = frozenset({"eventData", "attribution", "properties", "traits", "context"})


def apply_limits(
    payload: dict[str, Any], limits: EventLimits, skip: frozenset[str], where: str = ""
) -> dict[str, Any]:
    """``payload`` with over-long strings truncated, or ``InvalidEvent`` naming the limit.

    Keys in ``skip`` (the core fields, limited by the parser) are left alone. A first pass
    only checks (no allocation); the copy with truncated strings is made only when a string
    is too long, which is rare, so the common case returns ``payload`` itself.

    The error names the field a sender's key sits under, never the key itself: keys are the
    sender's text like values are, and the message and field are stored with the failed
    event and exported.
    """
    counter = [0]
    too_long = False
    event = where.rstrip(".") or None
    for key, value in payload.items():
        if key in skip:
            continue
        field = f"{where}{key}" if key in NAMED_FIELDS else event
        _count_key(key, limits, counter, field)
        too_long = _check(value, limits, 1, counter, field) or too_long
    if not too_long:
        return payload
    return {
        key: value if key in skip else _truncate(value, limits.max_string_length)
        for key, value in payload.items()
    }


def _count_key(key: str, limits: EventLimits, counter: list[int], field: str | None) -> None:
    counter[0] += 1
    if counter[0] > limits.max_properties or len(key) > limits.max_key_length:
        _refuse_key(key, limits, counter[0], field)


def _refuse_key(key: str, limits: EventLimits, count: int, field: str | None) -> None:
    where = field or "the event"
    if count > limits.max_properties:
        raise InvalidEvent(
            f"{where} has more than {limits.max_properties} properties",
            field=field,
            reason=RejectReason.TOO_MANY_PROPERTIES,
        )
    if len(key) > limits.max_key_length:
        raise InvalidEvent(
            f"{where} has a key of {len(key)} characters; "
            f"at most {limits.max_key_length} are accepted",
            field=field,
            reason=RejectReason.KEY_TOO_LONG,
        )


def _check(
    value: Any, limits: EventLimits, depth: int, counter: list[int], field: str | None
) -> bool:
    """Raise on a broken limit; ``True`` when some string needs truncating."""
    if isinstance(value, str):
        return len(value) > limits.max_string_length
    if not isinstance(value, dict | list):
        return False
    if depth > limits.max_depth:
        raise InvalidEvent(
            f"{field or 'the event'} is nested deeper than {limits.max_depth} levels",
            field=field,
            reason=RejectReason.TOO_DEEP,
        )
    too_long = False
    if isinstance(value, list):
        for item in value:
            too_long = _check(item, limits, depth + 1, counter, field) or too_long
        return too_long
    # Every key of every event passes here: scalars are judged inline, without a call.
    max_properties, max_key, max_string = (
        limits.max_properties,
        limits.max_key_length,
        limits.max_string_length,
    )
    for key, item in value.items():
        counter[0] += 1
        if counter[0] > max_properties or len(key) > max_key:
            _refuse_key(key, limits, counter[0], field)
        if type(item) is str:
            too_long = too_long or len(item) > max_string
        elif isinstance(item, dict | list):
            too_long = _check(item, limits, depth + 1, counter, field) or too_long
    return too_long


def _truncate(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return value[: max(limit - len(TRUNCATION_MARKER), 0)] + TRUNCATION_MARKER
    if isinstance(value, list):
        return [_truncate(item, limit) for item in value]
    if isinstance(value, dict):
        return {key: _truncate(item, limit) for key, item in value.items()}
    return value
