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
        ({"eventData": {"k" * 11: 1}}, "key_too_long", "eventData." + "k" * 11),
        ({"eventData": {"a": {"b": {"c": {}}}}}, "too_deep", "eventData.a.b.c"),
        ({"eventData": {"a": [[[1]]]}, "x": 1}, "too_deep", "eventData.a"),
    ],
)
def test_other_limits_refuse_the_event_naming_the_reason(
    event: dict[str, object], reason: str, field: str
) -> None:
    with pytest.raises(InvalidEvent) as error:
        apply_limits(event, LIMITS, CORE, "events[2].")
    assert error.value.reason == reason
    assert error.value.field is not None and error.value.field.endswith(field)


def test_exactly_at_each_limit_is_accepted() -> None:
    event = {"eventData": {"k" * 10: {"b": ["s" * 20]}, "x": 1}, "z": 3}
    assert apply_limits(event, LIMITS, CORE) is event
