"""Per-event limits: truncate long strings with a marker, refuse the rest by name."""

from __future__ import annotations

import pytest

from evothesis.enrich.limits import TRUNCATION_MARKER, EventLimits, apply_limits
from evothesis.errors import InvalidEvent

LIMITS = EventLimits(max_properties=5, max_key_length=10, max_string_length=20, max_depth=3)
CORE = frozenset({"url"})


def test_an_event_within_the_limits_is_returned_as_it_is() -> None:
    event = {"eventData": {"a": "short", "b": [1, {"c": 2}]}, "url": "u" * 100}
    assert apply_limits(event, LIMITS, CORE) is event


def test_long_strings_are_truncated_with_a_marker_at_any_depth() -> None:
    event = {"eventData": {"a": "y" * 50, "b": ["z" * 21, "ok"]}, "url": "u" * 100}
    limited = apply_limits(event, LIMITS, CORE)
    cut = limited["eventData"]["a"]
    assert len(cut) == 20 and cut.endswith(TRUNCATION_MARKER) and cut.startswith("y")
    assert limited["eventData"]["b"][0].endswith(TRUNCATION_MARKER)
    assert limited["eventData"]["b"][1] == "ok"
    assert limited["url"] == "u" * 100  # core fields have their own limits
    assert event["eventData"]["a"] == "y" * 50  # the input is not mutated


@pytest.mark.parametrize(
    ("event", "reason", "field"),
    [
        ({"eventData": {str(n): n for n in range(5)}}, "too_many_properties", "eventData"),
        ({"eventData": {"k" * 11: 1}}, "key_too_long", "eventData"),
        ({"eventData": {"a": {"b": {"c": {}}}}}, "too_deep", "eventData"),
        ({"eventData": {"a": [[[1]]]}, "x": 1}, "too_deep", "eventData"),
        ({"j@x.io": {"a": {"b": {"c": {}}}}}, "too_deep", None),
        ({"k" * 11 + "@example.com": 1}, "key_too_long", None),
    ],
)
def test_other_limits_refuse_the_event_naming_the_reason(
    event: dict[str, object], reason: str, field: str | None
) -> None:
    with pytest.raises(InvalidEvent) as error:
        apply_limits(event, LIMITS, CORE, "events[2].")
    assert error.value.reason == reason
    # The field a sender's keys sit under (the event itself for its own top-level keys),
    # never a key: keys are the sender's text and the message is stored.
    assert error.value.field == (f"events[2].{field}" if field else "events[2]")
    for key in _keys(event):
        if len(key) > 3:  # long enough not to be found by chance in "eventData"
            assert key not in error.value.message and key not in (error.value.field or "")


def _keys(value: object) -> list[str]:
    if isinstance(value, dict):
        return [k for k, v in value.items() for k in (k, *_keys(v)) if k != "eventData"]
    if isinstance(value, list):
        return [k for item in value for k in _keys(item)]
    return []


def test_exactly_at_each_limit_is_accepted() -> None:
    event = {"eventData": {"k" * 10: {"b": ["s" * 20]}, "x": 1}, "z": 3}
    assert apply_limits(event, LIMITS, CORE) is event
