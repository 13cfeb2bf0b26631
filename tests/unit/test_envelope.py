"""The wire shapes, parsed without any I/O."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evothesis.domain import ClientConfig, RequestContext
from evothesis.errors import BadRequest, BatchTooLarge, InvalidEvent, UnsupportedMediaType
from evothesis.ingest.collector import build_rows
from evothesis.ingest.envelope import check_media_type, parse_envelope

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def parse(document: object, max_batch_events: int = 500):  # type: ignore[no-untyped-def]
    return parse_envelope(orjson.dumps(document), max_batch_events=max_batch_events, now=NOW)


def test_inner_events_inherit_the_envelope_and_may_override_it() -> None:
    envelope = parse(
        {
            "eventType": "batch",
            "sessionId": "s1",
            "visitorId": "v1",
            "siteId": "Shop.Example.com",
            "timestamp": "2025-07-11T12:00:00Z",
            "url": "https://shop.example.com/a",
            "path": "/a",
            "events": [{"eventType": "click"}, {"eventType": "scroll", "path": "/b"}],
        }
    )
    outer, click, scroll = envelope.events
    assert envelope.is_batch and envelope.inner_count == 2
    assert outer.payload["eventCount"] == 2 and "events" not in outer.payload
    assert click.session_id == "s1" and click.visitor_id == "v1"
    assert click.site_id == "shop.example.com"
    assert click.timestamp == datetime(2025, 7, 11, 12, tzinfo=UTC)
    assert click.path == "/a" and scroll.path == "/b"
    assert envelope.site_ids == frozenset({"shop.example.com"})


def test_client_ids_are_kept_and_missing_ones_are_uuid7() -> None:
    given_id = str(uuid.uuid4()).upper()
    envelope = parse(
        {"eventType": "batch", "siteId": "x", "eventId": given_id, "events": [{"eventType": "a"}]}
    )
    outer, inner = envelope.events
    assert outer.event_id == given_id.lower()
    assert uuid.UUID(inner.event_id).version == 7
    assert inner.payload["eventId"] == inner.event_id
    assert inner.timestamp == NOW


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"eventType": "x", "siteId": "s", "sessionId": "a" * 257}, "sessionId"),
        ({"eventType": "x" * 101, "siteId": "s"}, "eventType"),
        ({"eventType": "", "siteId": "s"}, "eventType"),
        ({"eventType": "x", "siteId": "s", "eventId": "{" + str(uuid.uuid4()) + "}"}, "eventId"),
        (
            {"eventType": "batch", "siteId": "s", "events": [{"eventType": 1}]},
            "events[0].eventType",
        ),
        ({"eventType": "x", "siteId": "s", "events": []}, "events"),
    ],
)
def test_invalid_fields_are_named(document: object, field: str) -> None:
    with pytest.raises(InvalidEvent) as error:
        parse(document)
    assert error.value.field == field


def test_batch_limit() -> None:
    batch = {"eventType": "batch", "siteId": "s", "events": [{"eventType": "a"}] * 3}
    assert parse(batch, max_batch_events=3).inner_count == 3
    with pytest.raises(BatchTooLarge):
        parse(batch, max_batch_events=2)


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "text/plain;charset=UTF-8", "application/vnd.x+json"],
)
def test_accepted_media_types(content_type: str | None) -> None:
    check_media_type(content_type)


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=x", "application/x-www-form-urlencoded"]
)
def test_refused_media_types(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_media_type(content_type)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
EVENTISH = st.fixed_dictionaries(
    {"eventType": st.sampled_from(["batch", "click", "pageview"]) | st.text(max_size=5)},
    optional={
        "siteId": st.text(max_size=10) | JSON,
        "timestamp": st.text(max_size=30) | JSON,
        "eventId": st.uuids().map(str) | JSON,
        "events": st.lists(st.dictionaries(st.text(max_size=10), JSON, max_size=4), max_size=4)
        | JSON,
        "eventData": JSON,
    },
)
CONTEXT = RequestContext(client_ip="203.0.113.9", user_agent="ua", received_at=NOW)


@given(EVENTISH | JSON)
def test_any_json_document_parses_or_is_a_clear_bad_request(document: object) -> None:
    try:
        envelope = parse(document)
    except BadRequest:
        return
    rows = build_rows(envelope, ClientConfig("client"), CONTEXT)
    assert len(rows) == len(envelope.events)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_a_clear_bad_request(body: bytes) -> None:
    with contextlib.suppress(BadRequest):
        parse_envelope(body, max_batch_events=500, now=NOW)
