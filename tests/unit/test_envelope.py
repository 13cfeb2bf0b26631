"""The wire shapes, parsed without any I/O."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evothesis.domain import (
    ClientConfig,
    Envelope,
    EventRow,
    RejectedEvent,
    RejectReason,
    RequestContext,
)
from evothesis.errors import (
    BadRequest,
    BatchTooLarge,
    InvalidEvent,
    MalformedBody,
    UnsupportedMediaType,
)
from evothesis.ingest.enrichment import Enricher
from evothesis.ingest.envelope import (
    FIELD_LIMITS,
    INHERITED_FIELDS,
    check_media_type,
    parse_envelope,
)
from evothesis.ingest.steps import Intake, build_rows, decide_privacy, enrich_request, protect
from evothesis.ingest.timestamps import parse_timestamp
from tests.support.seed import SEED_BATCH, SEED_SINGLE

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
    assert_refused(document, field)


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


def rows_for(envelope: Envelope, client_id: str) -> list[EventRow]:
    """Rows for a standard-level client, whose privacy rules only redact PII."""
    off = Enricher()
    intake = decide_privacy(Intake(envelope, CONTEXT, ClientConfig(client_id), None))
    assert isinstance(intake, Intake)  # a standard client without signals drops nothing
    return build_rows(off.event, protect(enrich_request(off, intake))).rows


def refusal(document: object) -> InvalidEvent | RejectedEvent:
    """How a document with one problem is refused: the whole request (``InvalidEvent``)
    when the problem is the envelope's, one ``RejectedEvent`` when it is an inner event's,
    the batch's other events being kept."""
    try:
        envelope = parse(document)
    except InvalidEvent as exc:
        return exc
    assert isinstance(document, dict)
    [rejected] = envelope.rejected
    assert envelope.inner_count == len(document["events"]) - 1
    return rejected


def assert_refused(document: object, field: str) -> InvalidEvent | RejectedEvent:
    """Refused naming ``field``; inner events' problems reject only that event."""
    refused = refusal(document)
    assert refused.field == field
    assert refused.message
    assert isinstance(refused, RejectedEvent) == field.startswith("events[")
    return refused


@given(EVENTISH | JSON)
def test_any_json_document_parses_or_is_a_clear_bad_request(document: object) -> None:
    try:
        envelope = parse(document)
    except BadRequest:
        return
    rows = rows_for(envelope, "client")
    assert len(rows) == len(envelope.events)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_a_clear_bad_request(body: bytes) -> None:
    with contextlib.suppress(BadRequest):
        parse_envelope(body, max_batch_events=500, now=NOW)


# =========================================================================== contract details
# Shapes, inheritance, ids, limits, refusals and timestamps, table by table.

SEED_TIME = datetime(2025, 7, 11, 12, 0, tzinfo=UTC)
MINIMAL: dict[str, Any] = {"eventType": "pageview", "siteId": "localhost"}


def batch_of(*inner: object, **outer: Any) -> dict[str, Any]:
    return {"eventType": "batch", "siteId": "localhost", **outer, "events": list(inner)}


def test_a_single_event_becomes_one_event_with_its_columns_extracted() -> None:
    envelope = parse(SEED_SINGLE)

    assert envelope.inner_count == 0
    assert not envelope.is_batch
    [event] = envelope.events
    assert event.event_type == "pageview"
    assert event.site_id == "localhost"
    assert event.timestamp == SEED_TIME
    assert event.session_id == "sess_abc123"
    assert event.visitor_id == "vis_xyz789"
    assert event.url == "https://example.com/page"
    assert event.path == "/page"
    assert event.referrer is None
    assert event.payload == {**SEED_SINGLE, "eventId": event.event_id}


def test_a_batch_becomes_the_envelope_followed_by_its_inner_events_in_order() -> None:
    envelope = parse(SEED_BATCH)

    assert envelope.is_batch
    assert envelope.inner_count == 3
    assert [e.event_type for e in envelope.events] == ["batch", "click", "scroll", "form_focus"]
    for event in envelope.events:
        assert (event.session_id, event.visitor_id) == ("sess_abc123", "vis_xyz789")
        assert event.site_id == "localhost"
        assert event.timestamp == SEED_TIME
    assert [e.payload["eventData"] for e in envelope.events[1:]] == [
        {"element": "button1"},
        {"depth": 25},
        {"field": "email"},
    ]


def test_an_empty_batch_is_just_the_envelope() -> None:
    envelope = parse(batch_of())

    assert envelope.is_batch
    assert envelope.inner_count == 0
    assert len(envelope.events) == 1
    assert envelope.events[0].payload["eventCount"] == 0


def test_the_envelope_payload_keeps_its_own_fields_but_not_the_inner_events() -> None:
    envelope = parse(SEED_BATCH)
    payload = envelope.events[0].payload

    assert "events" not in payload
    assert payload["eventCount"] == 3
    assert payload["eventId"] == envelope.events[0].event_id
    assert {k: v for k, v in payload.items() if k not in {"eventCount", "eventId"}} == {
        k: v for k, v in SEED_BATCH.items() if k != "events"
    }


def test_parsing_leaves_the_seed_payloads_untouched() -> None:
    before = json.dumps([SEED_SINGLE, SEED_BATCH], sort_keys=True)
    parse(SEED_SINGLE)
    parse(SEED_BATCH)
    assert json.dumps([SEED_SINGLE, SEED_BATCH], sort_keys=True) == before


def test_a_batch_without_timestamp_stamps_every_event_with_now() -> None:
    envelope = parse({k: v for k, v in SEED_BATCH.items() if k != "timestamp"})

    assert [e.timestamp for e in envelope.events] == [NOW] * 4
    assert "timestamp" not in envelope.events[0].payload
    for inner in envelope.events[1:]:
        assert parse_timestamp(inner.payload["timestamp"], now=NOW) == NOW


#: Envelope field -> (Event attribute, envelope value, inner override, expected override).
INHERITANCE = [
    ("sessionId", "session_id", "sess_outer", "sess_inner", "sess_inner"),
    ("visitorId", "visitor_id", "vis_outer", "vis_inner", "vis_inner"),
    ("siteId", "site_id", "localhost", "Shop.Example.com", "shop.example.com"),
    ("url", "url", "https://a.example/o", "https://a.example/i", "https://a.example/i"),
    ("path", "path", "/outer", "/inner", "/inner"),
    ("referrer", "referrer", "https://r.example/o", "https://r.example/i", "https://r.example/i"),
]


def test_the_inheritance_table_covers_every_inherited_field() -> None:
    assert {row[0] for row in INHERITANCE} | {"timestamp"} == set(INHERITED_FIELDS)


@pytest.mark.parametrize(("field", "attribute", "outer", "inner", "expected"), INHERITANCE)
def test_inner_events_inherit_each_envelope_field_and_their_own_value_wins(
    field: str, attribute: str, outer: str, inner: str, expected: str
) -> None:
    document = batch_of({"eventType": "click"}, {"eventType": "scroll", field: inner})
    document[field] = outer
    _, inheriting, overriding = parse(document).events

    assert getattr(inheriting, attribute) == outer
    assert inheriting.payload[field] == outer
    assert getattr(overriding, attribute) == expected
    # What is stored is the parsed value: a siteId is kept as its canonical host.
    assert overriding.payload[field] == (expected if field == "siteId" else inner)


def test_inner_events_inherit_the_envelope_timestamp_and_their_own_wins() -> None:
    document = batch_of(
        {"eventType": "click"},
        {"eventType": "scroll", "timestamp": "2025-07-11T14:00:00+02:00"},
        {"eventType": "focus", "timestamp": "2020-01-01T00:00:00Z"},
        timestamp="2025-07-11T12:00:00Z",
    )
    assert [e.timestamp for e in parse(document).events] == [
        SEED_TIME,
        SEED_TIME,
        SEED_TIME,
        datetime(2020, 1, 1, tzinfo=UTC),
    ]


def test_fields_that_are_not_inherited_stay_on_the_envelope() -> None:
    outer_id = str(uuid.uuid4())
    document = batch_of(
        {"eventType": "click"}, eventData={"outer": True}, attribution={"u": 1}, eventId=outer_id
    )
    inner = parse(document).events[1]

    assert "eventData" not in inner.payload
    assert "attribution" not in inner.payload
    assert inner.event_id != outer_id
    assert inner.payload["eventId"] == inner.event_id


def test_client_event_ids_on_inner_events_are_kept() -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    envelope = parse(batch_of(*({"eventType": "click", "eventId": i} for i in ids)))
    assert [e.event_id for e in envelope.events[1:]] == ids
    assert [e.payload["eventId"] for e in envelope.events[1:]] == ids


def test_a_client_event_id_on_a_single_event_is_kept() -> None:
    event_id = str(uuid.uuid4())
    [event] = parse({**MINIMAL, "eventId": event_id}).events
    assert event.event_id == event.payload["eventId"] == event_id


def test_generated_event_ids_are_current_uuid7s_and_never_repeat() -> None:
    before_ms = time.time_ns() // 1_000_000
    envelopes = [parse(batch_of(*[{"eventType": "click"}] * 200)) for _ in range(5)]
    after_ms = time.time_ns() // 1_000_000
    events = [event for envelope in envelopes for event in envelope.events]

    assert len({event.event_id for event in events}) == len(events) == 5 * 201
    for event in events:
        parsed = uuid.UUID(event.event_id)
        assert str(parsed) == event.event_id
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert before_ms <= parsed.int >> 80 <= after_ms
        assert event.payload["eventId"] == event.event_id


@pytest.mark.parametrize(
    "event_id",
    [
        42,
        True,
        ["1"],
        {"id": 1},
        "",
        "nope",
        "0" * 32,
        "urn:uuid:" + str(uuid.UUID(int=1)),
        str(uuid.UUID(int=1)) + "\n",
        str(uuid.UUID(int=1))[:-1] + "g",
    ],
)
def test_an_event_id_that_is_not_a_canonical_uuid_is_refused_by_name(event_id: object) -> None:
    assert_refused(batch_of({"eventType": "click", "eventId": event_id}), "events[0].eventId")


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("localhost", "localhost"),
        ("LocalHost", "localhost"),
        ("SHOP.EXAMPLE.COM", "shop.example.com"),
    ],
)
def test_site_ids_are_lowercased_on_every_event(sent: str, stored: str) -> None:
    envelope = parse(batch_of({"eventType": "click"}, siteId=sent))
    assert [e.site_id for e in envelope.events] == [stored, stored]
    assert envelope.site_ids == frozenset({stored})


def test_site_ids_lists_every_site_of_a_mixed_batch() -> None:
    envelope = parse(batch_of({"eventType": "click", "siteId": "Other.Example"}))
    assert envelope.site_ids == frozenset({"localhost", "other.example"})


@pytest.mark.parametrize(("field", "limit"), sorted(FIELD_LIMITS.items()))
def test_a_field_exactly_at_its_limit_is_accepted(field: str, limit: int) -> None:
    # A host is labels of at most 63 characters: four of them are 255 with their dots.
    value = ".".join(["a" * 63] * 4)[:limit] if field == "siteId" else "a" * limit
    envelope = parse(batch_of({"eventType": "click", field: value}))
    assert envelope.events[1].payload[field] == value


@pytest.mark.parametrize(("field", "limit"), sorted(FIELD_LIMITS.items()))
@pytest.mark.parametrize("where", ["", "events[0]."], ids=["envelope", "inner"])
def test_a_field_one_over_its_limit_is_refused_by_name(field: str, limit: int, where: str) -> None:
    too_long = "a" * (limit + 1)
    document = batch_of({"eventType": "click", field: too_long}) if where else {**MINIMAL}
    if not where:
        document[field] = too_long
    refused = assert_refused(document, f"{where}{field}")
    assert str(limit) in refused.message


@pytest.mark.parametrize("max_batch_events", [1, 500])
def test_max_batch_events_is_accepted_and_one_more_is_too_large(max_batch_events: int) -> None:
    inner = [{"eventType": "click"}] * max_batch_events
    assert parse(batch_of(*inner), max_batch_events).inner_count == max_batch_events
    with pytest.raises(BatchTooLarge) as error:
        parse(batch_of(*inner, {"eventType": "click"}), max_batch_events)
    assert str(max_batch_events) in error.value.message


REFUSED_DOCUMENTS = [
    pytest.param({"siteId": "localhost"}, "eventType", id="missing-eventType"),
    pytest.param({"eventType": None, "siteId": "localhost"}, "eventType", id="null-eventType"),
    pytest.param({"eventType": 5, "siteId": "localhost"}, "eventType", id="number-eventType"),
    pytest.param({"eventType": "x"}, "siteId", id="missing-siteId"),
    pytest.param({"eventType": "x", "siteId": ""}, "siteId", id="empty-siteId"),
    pytest.param({"eventType": "x", "siteId": ["a"]}, "siteId", id="list-siteId"),
    pytest.param({**MINIMAL, "sessionId": 1}, "sessionId", id="number-sessionId"),
    pytest.param({**MINIMAL, "referrer": {}}, "referrer", id="object-referrer"),
    pytest.param({**MINIMAL, "eventData": []}, "eventData", id="list-eventData"),
    pytest.param({**MINIMAL, "timestamp": 1720699200}, "timestamp", id="number-timestamp"),
    pytest.param({**batch_of(), "events": {}}, "events", id="events-object"),
    pytest.param({"eventType": "batch", "siteId": "localhost"}, "events", id="batch-no-events"),
    pytest.param(batch_of(MINIMAL, "click"), "events[1]", id="inner-not-object"),
    pytest.param(batch_of({"siteId": "x"}), "events[0].eventType", id="inner-missing-type"),
    pytest.param(batch_of({"eventType": "batch"}), "events[0].eventType", id="nested-batch"),
    pytest.param(batch_of({"eventType": "c", "timestamp": "soon"}), "events[0].timestamp"),
    pytest.param(batch_of({"eventType": "c", "siteId": ""}), "events[0].siteId", id="inner-site"),
    pytest.param(batch_of(timestamp="soon"), "timestamp", id="envelope-timestamp"),
]


@pytest.mark.parametrize(("document", "field"), REFUSED_DOCUMENTS)
def test_an_invalid_event_is_refused_naming_the_field(document: object, field: str) -> None:
    assert_refused(document, field)


@pytest.mark.parametrize("document", [[MINIMAL], "pageview", 42, None, True])
def test_json_that_is_not_an_object_is_an_invalid_event(document: object) -> None:
    with pytest.raises(InvalidEvent):
        parse(document)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b" \r\n\t ", id="whitespace"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b'{"eventType": "x"} trailing', id="trailing-garbage"),
        pytest.param(b'{"eventType":"x","siteId":"localhost","n":NaN}', id="nan"),
        pytest.param(b'{"eventType":"x","siteId":"localhost","n":Infinity}', id="infinity"),
        pytest.param(b'{"eventType":"x","siteId":"localhost","n":1e400}', id="overflowing-float"),
        pytest.param(b'{"eventType":"x","siteId":"local\xffhost"}', id="invalid-utf8"),
        pytest.param(b'{"eventType":"x","siteId":"\\ud800"}', id="lone-surrogate"),
        pytest.param(b'{"eventType":"x","siteId":"a\x00b"}', id="raw-nul-byte"),
        pytest.param(b"[" * 2000 + b"]" * 2000, id="nested-too-deep"),
    ],
)
def test_a_body_that_is_not_strict_json_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        parse_envelope(body, max_batch_events=500, now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"eventType":"x","siteId":"localhost","d":{"k":"a\\u0000b"}}', id="value"),
        pytest.param(b'{"eventType":"x","siteId":"localhost","d":{"\\u0000":1}}', id="key"),
        pytest.param(b'{"eventType":"x","siteId":"localhost","d":[[["\\u0000"]]]}', id="list"),
    ],
)
def test_nul_characters_anywhere_in_the_document_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidEvent, match="NUL"):
        parse_envelope(body, max_batch_events=500, now=NOW)


def test_a_nul_character_in_an_inner_event_rejects_that_event_only() -> None:
    body = (
        b'{"eventType":"batch","siteId":"localhost",'
        b'"events":[{"eventType":"a\\u0000"},{"eventType":"b"}]}'
    )
    envelope = parse_envelope(body, max_batch_events=500, now=NOW)
    assert [e.event_type for e in envelope.events] == ["batch", "b"]
    [rejected] = envelope.rejected
    assert (rejected.position, rejected.reason) == (0, "nul_character")


def test_an_escaped_backslash_before_u0000_is_not_a_nul_character() -> None:
    body = b'{"eventType":"x","siteId":"localhost","d":"C:\\\\u0000"}'
    [event] = parse_envelope(body, max_batch_events=500, now=NOW).events
    assert event.payload["d"] == "C:\\u0000"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "Application/JSON",
        "text/plain",
        "TEXT/PLAIN; charset=utf-8",
        "application/ld+json; charset=utf-8",
    ],
)
def test_parameters_and_case_do_not_matter_for_accepted_media_types(content_type: str) -> None:
    check_media_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html",
        "image/png",
        "application/octet-stream",
        "application/xml",
        "application/jsonp",
        "text/json-ish",
    ],
)
def test_other_media_types_are_refused_naming_the_type(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as error:
        check_media_type(content_type)
    assert repr(content_type) in error.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-07-11T12:00:00Z", SEED_TIME),
        ("2025-07-11T12:00:00.123Z", SEED_TIME.replace(microsecond=123000)),
        ("2025-07-11T12:00:00.123456Z", SEED_TIME.replace(microsecond=123456)),
        ("2025-07-11T12:00:00+00:00", SEED_TIME),
        ("2025-07-11T14:00:00+02:00", SEED_TIME),
        ("2025-07-11T07:30:00.5-04:30", SEED_TIME.replace(microsecond=500000)),
        ("2025-07-12T01:00:00+13:00", SEED_TIME),
        ("2025-07-11T12:00:00", SEED_TIME),
        ("2025-07-11T12:00:00.250", SEED_TIME.replace(microsecond=250000)),
        ("2025-07-11 12:00:00", SEED_TIME),
        ("2025-07-11", datetime(2025, 7, 11, tzinfo=UTC)),
        ("  2025-07-11T12:00:00Z\n", SEED_TIME),
        ("2025-07-11T12:00:00.1234+05:30:00.000000", datetime(2025, 7, 11, 6, 30, 0, 123400, UTC)),
    ],
)
def test_iso_timestamps_become_aware_utc_datetimes(text: str, expected: datetime) -> None:
    moment = parse_timestamp(text, now=NOW)
    assert moment == expected
    assert moment.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("yesterday", id="word"),
        pytest.param("2025-13-01T00:00:00Z", id="month-13"),
        pytest.param("2025-07-11T25:00:00Z", id="hour-25"),
        pytest.param("2025-07-11T12:00:00+24:00", id="offset-24h"),
        pytest.param("11/07/2025", id="not-iso"),
        pytest.param("0001-01-01T00:00:00+01:00", id="before-year-1-in-utc"),
        pytest.param("9999-12-31T23:59:59-01:00", id="after-year-9999-in-utc"),
        pytest.param("2025-07-11T12:00:00.12345+05:30:00.000000", id="valid-iso-but-41-chars"),
        pytest.param("2025-07-11T12:00:00Z" + "0" * 10_000, id="very-long"),
        pytest.param(1720699200, id="int"),
        pytest.param(1720699200.5, id="float"),
        pytest.param(None, id="none"),
        pytest.param(True, id="bool"),
        pytest.param(["2025-07-11"], id="list"),
        pytest.param({"t": "2025-07-11"}, id="dict"),
        pytest.param(SEED_TIME, id="datetime-object"),
    ],
)
def test_anything_else_is_an_invalid_timestamp_naming_the_field(value: object) -> None:
    with pytest.raises(InvalidEvent) as error:
        parse_timestamp(value, field="events[2].timestamp", now=NOW)
    assert error.value.field == "events[2].timestamp"
    assert len(error.value.message) < 200
    if isinstance(value, str) and value.strip():
        assert value.strip() not in error.value.message  # a sender's value is never echoed


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "1999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59.999999Z",
        "2026-01-03T03:04:06Z",  # a day and a second after NOW
    ],
)
def test_times_outside_the_window_the_pipeline_carries_are_out_of_range(value: str) -> None:
    with pytest.raises(InvalidEvent) as error:
        parse_timestamp(value, now=NOW)
    assert (error.value.field, error.value.reason) == ("timestamp", RejectReason.OUT_OF_RANGE)
    assert "2000-01-01" in error.value.message


@pytest.mark.parametrize("value", ["2000-01-01T00:00:00Z", "2026-01-03T03:04:05Z"])
def test_the_window_includes_its_edges(value: str) -> None:
    assert parse_timestamp(value, now=NOW) == datetime.fromisoformat(value)


def test_an_out_of_range_inner_event_is_a_failed_event_and_an_envelope_a_refusal() -> None:
    batch = {**SEED_BATCH, "timestamp": "2025-07-11T12:00:00Z"}
    batch["events"] = [{"eventType": "a"}, {"eventType": "b", "timestamp": "0001-01-01T00:00Z"}]
    [rejected] = parse(batch).rejected
    assert (rejected.position, rejected.reason) == (1, RejectReason.OUT_OF_RANGE)
    assert rejected.field == "events[1].timestamp"
    with pytest.raises(InvalidEvent) as error:
        parse({**SEED_SINGLE, "timestamp": "9999-12-31T23:59:59.999999Z"})
    assert error.value.field == "timestamp"


@pytest.mark.parametrize(
    ("site_id", "host"),
    [
        ("hipaa.example/?email=judy@example.com", "hipaa.example"),
        ("Shop.Example.COM:8443", "shop.example.com"),
        ("shop.example.com.", "shop.example.com"),
        ("https://user:pw@shop.example.com/path#x", "shop.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_site_ids_are_stored_as_their_canonical_host(site_id: str, host: str) -> None:
    document = {**SEED_BATCH, "siteId": site_id}
    document["events"] = [{"eventType": "a"}, {"eventType": "b", "siteId": site_id}]
    envelope = parse(document)
    assert {event.site_id for event in envelope.events} == {host}
    for row in rows_for(envelope, "client_test"):
        assert row.site_id == host
        assert orjson.loads(row.raw_event_data)["siteId"] == host


@pytest.mark.parametrize("site_id", ["a b", "-bad.com", "acme..com", "acme.com:port", "x" * 64])
def test_a_site_id_that_is_no_host_is_refused_naming_the_field(site_id: str) -> None:
    with pytest.raises(InvalidEvent) as error:
        parse({**SEED_SINGLE, "siteId": site_id})
    assert (error.value.field, error.value.reason) == ("siteId", RejectReason.NOT_A_HOST)
    batch = {**SEED_BATCH, "events": [{"eventType": "a", "siteId": site_id}]}
    [rejected] = parse(batch).rejected
    assert (rejected.field, rejected.reason) == ("events[0].siteId", RejectReason.NOT_A_HOST)


def test_rows_take_the_client_from_attribution_never_from_the_payload() -> None:
    envelope = parse({**SEED_BATCH, "client_id": "forged", "clientId": "forged"})
    rows = rows_for(envelope, "client_test")

    assert len(rows) == 4
    for row, event in zip(rows, envelope.events, strict=True):
        assert isinstance(row, EventRow)
        assert row.client_id == "client_test"
        assert (row.event_id, row.event_type, row.site_id) == (
            event.event_id,
            event.event_type,
            event.site_id,
        )
        assert (row.ip_address, row.user_agent, row.created_at) == ("203.0.113.9", "ua", NOW)
        assert orjson.loads(row.raw_event_data) == event.payload


@pytest.mark.parametrize("depth", [260, 300, 1000])
def test_event_data_nested_too_deep_to_store_is_an_invalid_event(depth: int) -> None:
    body = b'{"eventType":"x","siteId":"localhost","eventData":{"d":'
    body += b"[" * depth + b"]" * depth + b"}}"
    envelope = parse_envelope(body, max_batch_events=500, now=NOW)
    with pytest.raises(InvalidEvent, match="cannot be stored: data nested deeper than 64"):
        rows_for(envelope, "client_test")


# --------------------------------------------------------------------------- stronger properties

KNOWN_KEYS = (
    "eventType",
    "siteId",
    "sessionId",
    "visitorId",
    "timestamp",
    "url",
    "path",
    "referrer",
    "eventId",
    "eventData",
    "events",
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "batch",
            "click",
            "localhost",
            "LOCALHOST",
            "2025-07-11T12:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "\x00",
            str(uuid.UUID(int=1)).upper(),
            "x" * 300,
        ]
    )
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=25,
)
EVENT_LIKE = st.fixed_dictionaries(
    {
        "eventType": st.sampled_from(["click", "batch", ""]) | VALUES,
        "siteId": st.sampled_from(["localhost", "Shop.Example"]) | VALUES,
    },
    optional={key: VALUES for key in KNOWN_KEYS if key not in {"eventType", "siteId"}},
)
BATCH_LIKE = st.builds(
    lambda outer, inner: {**outer, "eventType": "batch", "events": inner},
    EVENT_LIKE,
    st.lists(EVENT_LIKE | VALUES, max_size=6),
)


@settings(max_examples=400, deadline=None)
@given(BATCH_LIKE | EVENT_LIKE | VALUES, st.integers(min_value=1, max_value=8), st.booleans())
def test_any_document_in_any_encoding_parses_to_rows_or_is_a_bad_request(
    document: object, max_batch_events: int, ascii_only: bool
) -> None:
    # Python's json emits what orjson refuses (NaN, huge ints, lone surrogates): all are 400s.
    text = json.dumps(document, ensure_ascii=ascii_only)
    body = text.encode("utf-8", "surrogatepass")
    try:
        envelope = parse_envelope(body, max_batch_events=max_batch_events, now=NOW)
    except BadRequest:
        return
    assert isinstance(envelope, Envelope)
    assert len(envelope.events) == envelope.inner_count + 1 <= max_batch_events + 1
    try:
        rows = rows_for(envelope, "client_test")
    except InvalidEvent:
        return
    assert [row.event_id for row in rows] == [event.event_id for event in envelope.events]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_a_utc_timestamp_or_an_invalid_event(text: str) -> None:
    try:
        moment = parse_timestamp(text, now=NOW)
    except InvalidEvent as error:
        assert error.field == "timestamp"
        return
    assert moment.utcoffset() == timedelta(0)
