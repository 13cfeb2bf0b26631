"""The Segment API's messages onto our events: shapes, the clock-skew correction, event ids
from messageIds, columns, and what a user id is stored as."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from evothesis.domain import (
    ClientConfig,
    PrivacyLevel,
    RejectReason,
    SegmentCall,
    SubjectKind,
    UserIdStorage,
)
from evothesis.enrich.limits import EventLimits
from evothesis.errors import BatchTooLarge, InvalidEvent
from evothesis.gdpr.subjects import IdentityLink, resolve_subject
from evothesis.ingest.identity import store_user_ids
from evothesis.ingest.segment import (
    CALL_PATHS,
    NO_PAGE_SITE,
    parse_segment,
    segment_columns,
)

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
SALT = bytes(range(32))


def parse(body: dict[str, Any], call: SegmentCall | None = SegmentCall.TRACK, **kw: Any) -> Any:
    return parse_segment(
        orjson.dumps(body), call, now=NOW, max_batch_events=kw.pop("max_batch", 500), **kw
    )


def track(**fields: Any) -> dict[str, Any]:
    return {"userId": "u-1", "event": "Signed Up", **fields}


def keyed(value: str) -> str:
    return hmac.new(SALT, value.encode(), hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------ shapes


def test_every_endpoint_name_maps_to_its_call_and_the_batches_to_none() -> None:
    for name, call in CALL_PATHS.items():
        if name in ("batch", "b", "import"):
            assert call is None
        else:
            assert call is not None and call.value.startswith(name)


def test_a_track_message_maps_onto_an_event_with_nothing_of_it_lost() -> None:
    body = track(
        anonymousId="a-1",
        messageId="m-1",
        properties={"plan": "pro"},
        integrations={"All": True},
        context={
            "ip": "203.0.113.5",
            "userAgent": "Mozilla/5.0 Firefox/125.0",
            "page": {"url": "https://Shop.Example.com/cart?x=1", "path": "/cart", "referrer": "r"},
            "campaign": {"source": "news", "medium": "email", "name": "spring"},
            "locale": "de-DE",
        },
        writeKey="wk_secret",
        custom={"kept": True},
    )
    [message] = parse(body).messages
    event = message.event
    assert (event.event_type, event.visitor_id, event.site_id) == (
        "Signed Up",
        "a-1",
        "shop.example.com",
    )
    assert (message.client_ip, message.user_agent) == ("203.0.113.5", "Mozilla/5.0 Firefox/125.0")
    stored = event.payload
    assert "writeKey" not in stored and "ip" not in stored["context"]
    assert stored["custom"] == {"kept": True} and stored["integrations"] == {"All": True}
    assert stored["context"]["locale"] == "de-DE" and stored["properties"] == {"plan": "pro"}
    columns = segment_columns(stored)
    assert columns.url == "https://Shop.Example.com/cart?x=1"
    assert (columns.path, columns.referrer, columns.user_id) == ("/cart", "r", "u-1")
    assert columns.utm == ("news", "email", "spring", None, None)


@pytest.mark.parametrize(
    ("call", "extra", "event_type"),
    [
        (SegmentCall.PAGE, {"name": "Home"}, "pageview"),
        (SegmentCall.SCREEN, {"name": "Settings"}, "screenview"),
        (SegmentCall.IDENTIFY, {"traits": {"plan": "pro"}}, "identify"),
        (SegmentCall.GROUP, {"groupId": "acme"}, "group"),
        (SegmentCall.ALIAS, {"previousId": "a-1"}, "alias"),
    ],
)
def test_each_call_has_its_event_type(
    call: SegmentCall, extra: dict[str, Any], event_type: str
) -> None:
    [message] = parse({"userId": "u-1", **extra}, call).messages
    assert message.event.event_type == event_type
    assert message.event.payload["type"] == call.value
    assert message.event.site_id == NO_PAGE_SITE


def test_a_page_call_without_a_page_context_takes_its_page_from_its_properties() -> None:
    body = {"anonymousId": "a", "properties": {"url": "https://x.example/p", "path": "/p"}}
    [message] = parse(body, SegmentCall.PAGE).messages
    assert (message.event.url, message.page_host) == ("https://x.example/p", "x.example")


@pytest.mark.parametrize(
    ("call", "body", "field", "reason"),
    [
        (SegmentCall.TRACK, {"event": "x"}, "userId", RejectReason.MISSING_FIELD),
        (SegmentCall.TRACK, {"userId": "u"}, "event", RejectReason.MISSING_FIELD),
        (SegmentCall.TRACK, track(event=["x"]), "event", RejectReason.WRONG_TYPE),
        (SegmentCall.TRACK, track(event="e" * 101), "event", RejectReason.TOO_LONG),
        (SegmentCall.TRACK, track(event="batch"), "event", RejectReason.INVALID),
        (SegmentCall.TRACK, track(userId={"a": 1}), "userId", RejectReason.WRONG_TYPE),
        (SegmentCall.TRACK, track(userId="u" * 257), "userId", RejectReason.TOO_LONG),
        (SegmentCall.TRACK, track(type="page"), "type", RejectReason.INVALID),
        (SegmentCall.TRACK, track(properties=[1]), "properties", RejectReason.WRONG_TYPE),
        (SegmentCall.TRACK, track(context={"ip": "nope"}), "context.ip", RejectReason.INVALID),
        (SegmentCall.TRACK, track(messageId=7), "messageId", RejectReason.WRONG_TYPE),
        (SegmentCall.TRACK, track(timestamp="soon"), "timestamp", RejectReason.INVALID),
        (SegmentCall.ALIAS, {"userId": "u"}, "previousId", RejectReason.MISSING_FIELD),
        (SegmentCall.GROUP, {"userId": "u"}, "groupId", RejectReason.MISSING_FIELD),
    ],
)
def test_a_malformed_message_is_refused_naming_the_field(
    call: SegmentCall, body: dict[str, Any], field: str, reason: RejectReason
) -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse(body, call)
    assert (raised.value.field, raised.value.reason) == (field, reason)


def test_numeric_ids_are_taken_as_text() -> None:
    [message] = parse(track(userId=42, anonymousId=7)).messages
    assert (message.event.payload["userId"], message.event.visitor_id) == ("42", "7")


def test_a_batch_keeps_its_invalid_messages_aside_and_merges_its_context() -> None:
    body = {
        "batch": [
            {"type": "track", "userId": "u", "event": "A", "context": {"locale": "fr"}},
            {"type": "nonsense", "userId": "u"},
            "not an object",
            {"type": "identify", "anonymousId": "a"},
        ],
        "context": {"library": {"name": "analytics-python"}, "locale": "en"},
        "writeKey": "wk_1",
    }
    request = parse(body, None)
    assert request.batch and request.sent == 4 and request.write_key == "wk_1"
    assert [m.position for m in request.messages] == [0, 3]
    assert [(r.position, r.reason) for r in request.rejected] == [
        (1, RejectReason.INVALID),
        (2, RejectReason.NOT_AN_OBJECT),
    ]
    first, second = (m.event.payload["context"] for m in request.messages)
    assert first == {"library": {"name": "analytics-python"}, "locale": "fr"}
    assert second == {"library": {"name": "analytics-python"}, "locale": "en"}


def test_a_batch_without_a_valid_message_or_with_too_many_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="no message of the batch is valid"):
        parse({"batch": [{"type": "track"}]}, None)
    with pytest.raises(InvalidEvent, match="no message"):
        parse({"batch": []}, None)
    with pytest.raises(BatchTooLarge):
        parse({"batch": [track(type="track")] * 3}, None, max_batch=2)
    with pytest.raises(InvalidEvent, match="'batch'"):
        parse({"messages": []}, None)


def test_the_event_limits_apply_to_properties_traits_and_context() -> None:
    limits = EventLimits(max_properties=3)
    with pytest.raises(InvalidEvent) as raised:
        parse(track(properties={"a": 1, "b": 2, "c": 3, "d": 4}), limits=limits)
    assert raised.value.reason is RejectReason.TOO_MANY_PROPERTIES


def test_nul_characters_are_refused() -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse(track(properties={"a": "x\u0000y"}))
    assert raised.value.reason is RejectReason.NUL_CHARACTER


# ------------------------------------------------------------------------------- clocks


def test_the_device_clock_is_corrected_by_its_skew_when_sent() -> None:
    """The device's clock runs an hour fast: it called at 13:00 and sent at 13:00:05 by its
    clock, and the server received at 12:00:00, so the call was at 11:59:55."""
    body = track(timestamp="2026-11-25T13:00:00Z", sentAt="2026-11-25T13:00:05Z")
    [message] = parse(body).messages
    assert message.event.timestamp == NOW - timedelta(seconds=5)
    stored = message.event.payload
    assert stored["originalTimestamp"] == "2026-11-25T13:00:00Z"
    assert stored["sentAt"] == "2026-11-25T13:00:05Z"
    assert stored["receivedAt"] == "2026-11-25T12:00:00.000000Z"
    assert stored["timestamp"] == "2026-11-25T11:59:55.000000Z"


def test_original_timestamp_wins_and_a_batch_sent_at_applies_to_every_message() -> None:
    body = {
        "batch": [
            track(type="track", originalTimestamp="2026-11-25T11:00:00Z"),
            track(type="track", timestamp="2026-11-25T11:30:00Z", sentAt="2026-11-25T11:30:01Z"),
        ],
        "sentAt": "2026-11-25T11:00:10Z",
    }
    first, second = (m.event.timestamp for m in parse(body, None).messages)
    assert first == NOW - timedelta(seconds=10)
    assert second == NOW - timedelta(seconds=1)  # its own sentAt wins


def test_without_sent_at_the_device_time_stands_and_without_either_the_arrival() -> None:
    [message] = parse(track(timestamp="2026-11-25T10:00:00Z")).messages
    assert message.event.timestamp == NOW - timedelta(hours=2)
    [message] = parse(track()).messages
    assert message.event.timestamp == NOW
    assert "originalTimestamp" not in message.event.payload


def test_a_device_that_sent_before_it_called_is_placed_at_arrival() -> None:
    body = track(timestamp="2026-11-25T12:00:10Z", sentAt="2026-11-25T12:00:00Z")
    [message] = parse(body).messages
    assert message.event.timestamp == NOW


def test_a_corrected_time_outside_the_window_is_refused() -> None:
    body = track(timestamp="2001-01-01T00:00:00Z", sentAt="2026-11-25T12:00:00Z")
    assert parse(body).messages[0].event.timestamp.year == 2001
    too_old = track(timestamp="1999-01-01T00:00:00Z")
    with pytest.raises(InvalidEvent) as raised:
        parse(too_old)
    assert raised.value.reason is RejectReason.OUT_OF_RANGE


# ------------------------------------------------------------------------------- ids


def test_message_ids_become_event_ids_deterministically() -> None:
    canonical = str(uuid.uuid4())
    [message] = parse(track(messageId=canonical.upper())).messages
    assert message.event.event_id == canonical
    ids = {parse(track(messageId="ajs-next-abc")).messages[0].event.event_id for _ in range(3)}
    assert len(ids) == 1 and uuid.UUID(ids.pop()).version == 5
    [generated] = parse(track()).messages
    assert generated.event.payload["messageId"] == generated.event.event_id


# ---------------------------------------------------------------------------- consent


@pytest.mark.parametrize(
    ("consent", "expected"),
    [
        (None, None),
        (True, True),
        (False, False),
        ({"categoryPreferences": {"Analytics": True, "Ads": True}}, True),
        ({"categoryPreferences": {"Analytics": True, "Ads": False}}, False),
        ({"categoryPreferences": {}}, None),
        ("yes", None),
    ],
)
def test_consent_is_read_from_the_context(consent: object, expected: bool | None) -> None:
    context = {} if consent is None else {"consent": consent}
    assert parse(track(context=context)).messages[0].consent is expected


# --------------------------------------------------------------------------- user ids


def client(level: PrivacyLevel, storage: UserIdStorage | None = None) -> ClientConfig:
    return ClientConfig("c", privacy_level=level, ip_salt=SALT, user_id_storage=storage)


@pytest.mark.parametrize(
    ("level", "storage", "expected"),
    [
        (PrivacyLevel.STANDARD, None, UserIdStorage.KEPT),
        (PrivacyLevel.GDPR, None, UserIdStorage.HASHED),
        (PrivacyLevel.HIPAA, None, UserIdStorage.DROPPED),
        (PrivacyLevel.STANDARD, UserIdStorage.HASHED, UserIdStorage.HASHED),
        (PrivacyLevel.GDPR, UserIdStorage.KEPT, UserIdStorage.KEPT),
        (PrivacyLevel.HIPAA, UserIdStorage.KEPT, UserIdStorage.DROPPED),
    ],
)
def test_user_id_storage_defaults_per_level_and_hipaa_always_drops(
    level: PrivacyLevel, storage: UserIdStorage | None, expected: UserIdStorage
) -> None:
    assert client(level, storage).stores_user_ids_as is expected


def test_user_ids_are_kept_hashed_or_dropped() -> None:
    payload = {"userId": "u-1", "previousId": "a-1", "event": "x", "nothing": None}
    assert store_user_ids(payload, client(PrivacyLevel.STANDARD)) is payload
    hashed = store_user_ids(payload, client(PrivacyLevel.GDPR))
    assert hashed == {**payload, "userId": keyed("u-1"), "previousId": keyed("a-1")}
    dropped = store_user_ids(payload, client(PrivacyLevel.HIPAA))
    assert dropped == {"event": "x", "nothing": None}


def test_a_kept_user_id_that_is_itself_pii_is_stored_as_its_hash() -> None:
    stored = store_user_ids({"userId": "jane@example.com"}, client(PrivacyLevel.STANDARD))
    assert stored == {"userId": keyed("jane@example.com")}


def test_without_a_salt_a_hashed_user_id_is_not_stored() -> None:
    saltless = ClientConfig("c", privacy_level=PrivacyLevel.GDPR)
    assert store_user_ids({"userId": "u", "a": 1}, saltless) == {"a": 1}


def test_ids_of_a_rejected_message_of_any_type_are_treated_alike() -> None:
    rejected = {"userId": 42, "previousId": {"not": "an id"}}
    assert store_user_ids(rejected, client(PrivacyLevel.STANDARD)) == {"userId": "42"}


# ------------------------------------------------------------------- data subjects


def lookup(links: list[IdentityLink]) -> Any:
    async def find(users: frozenset[str], visitors: frozenset[str]) -> list[IdentityLink]:
        return [
            link
            for link in links
            if {link.previous_id, link.user_id} & users or link.anonymous_id in visitors
        ]

    return find


def test_a_user_request_follows_alias_links_both_ways_and_transitively() -> None:
    links = [
        IdentityLink("anon-1", "user-1", "anon-1"),
        IdentityLink("user-1", "user-2", "anon-2"),
        IdentityLink("someone-else", "user-9", "anon-9"),
    ]
    subject = asyncio.run(resolve_subject(SubjectKind.USER, "user-2", None, lookup(links)))
    assert subject.user_ids >= {"user-1", "user-2", "anon-1"}
    assert subject.visitor_ids >= {"anon-1", "anon-2"}
    assert not subject.ids & {"user-9", "anon-9", "someone-else"}
    assert subject.digest == hashlib.sha256(b"user-2").hexdigest()


def test_hashed_user_ids_are_searched_in_both_forms_and_their_links_followed() -> None:
    links = [IdentityLink(keyed("anon-1"), keyed("user-1"), "anon-1")]
    subject = asyncio.run(resolve_subject(SubjectKind.USER, "user-1", SALT, lookup(links)))
    assert subject.user_ids >= {"user-1", keyed("user-1"), keyed("anon-1")}
    assert "anon-1" in subject.visitor_ids
    visitor = asyncio.run(resolve_subject(SubjectKind.VISITOR, "anon-1", SALT, lookup(links)))
    assert keyed("user-1") in visitor.user_ids


def test_a_visitor_without_alias_links_is_only_itself() -> None:
    subject = asyncio.run(resolve_subject(SubjectKind.VISITOR, "v", SALT, lookup([])))
    assert (subject.visitor_ids, subject.user_ids) == (frozenset({"v"}), frozenset())
