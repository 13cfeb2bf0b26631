"""Turn a /collect body into an ``Envelope``: the one place that knows the wire shapes.

Accepted shapes (DESIGN.md, seed contract): a single event, or a ``"batch"`` envelope whose
inner events inherit the envelope's session, visitor, site, timestamp and page. Bodies come
as ``application/json`` or as ``text/plain`` (what ``navigator.sendBeacon`` sends).
Everything here is pure; errors are ``BadRequest`` subclasses naming the problem.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson

from evothesis.domain import Envelope, Event, RejectedEvent, RejectReason, RowColumns, uuid7
from evothesis.enrich.limits import EventLimits, apply_limits
from evothesis.enrich.referrer import sent_utm
from evothesis.errors import (
    BatchTooLarge,
    InvalidEvent,
    MalformedBody,
    UnsupportedMediaType,
)
from evothesis.ingest.timestamps import parse_timestamp
from evothesis.registry.domains import site_host

#: Media types a browser or server may use for the JSON body.
ACCEPTED_MEDIA_TYPES = frozenset({"application/json", "text/plain", ""})

#: Envelope fields that inner events take from the envelope when they lack them.
INHERITED_FIELDS = ("sessionId", "visitorId", "siteId", "timestamp", "url", "path", "referrer")

#: Longest accepted value per core string field (bytes of text, not a guess at intent).
FIELD_LIMITS: dict[str, int] = {
    "eventType": 100,
    "sessionId": 256,
    "visitorId": 256,
    "siteId": 253,
    "url": 8192,
    "path": 4096,
    "referrer": 8192,
}


#: Fields the parser checks itself; the per-event limits cover everything else.
_CORE_FIELDS = frozenset({*FIELD_LIMITS, "eventId", "timestamp", "events"})


def check_media_type(content_type: str | None) -> None:
    """Refuse bodies that are clearly not our JSON (forms, multipart, images…)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in ACCEPTED_MEDIA_TYPES and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"unsupported Content-Type {media_type!r}; send application/json or text/plain"
        )


def decode_json(body: bytes) -> object:
    """Decode strictly: invalid UTF-8, NaN/Infinity and trailing garbage are all 400."""
    if not body.strip():
        raise MalformedBody("request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"request body is not valid JSON: {exc}") from None


def parse_envelope(
    body: bytes, *, max_batch_events: int, now: datetime, limits: EventLimits | None = None
) -> Envelope:
    """Parse and validate a /collect body; ``now`` stands in for missing timestamps.

    A problem with the body or the envelope raises ``InvalidEvent`` (or another
    ``BadRequest``): nothing of the request is stored. A problem with one inner event of a
    batch does not: that event is set aside as a ``RejectedEvent`` with its reason, and the
    other events are stored.
    """
    document = decode_json(body)
    if not isinstance(document, dict):
        raise InvalidEvent("request body must be a JSON object (an event or a batch)")
    has_nul = b"\\u0000" in body
    inner = document.get("events")
    if has_nul:
        refuse_nul_characters([*document, *(v for k, v in document.items() if k != "events")])
    if limits is not None:
        document = apply_limits(document, limits, _CORE_FIELDS)
    outer = _build_event(document, inherited=None, now=now, where="")
    if outer.event_type != "batch":
        if "events" in document:
            raise InvalidEvent("'events' is only allowed when eventType is 'batch'", field="events")
        return Envelope(
            events=(outer,),
            inner_count=0,
            columns=collect_columns,
            consent=document.get("consent"),
        )

    if not isinstance(inner, list):
        raise InvalidEvent("a batch needs 'events': a list of event objects", field="events")
    if len(inner) > max_batch_events:
        raise BatchTooLarge(
            f"batch holds {len(inner)} events; at most {max_batch_events} are accepted"
        )
    inherited = {name: document[name] for name in INHERITED_FIELDS if name in document}
    inherited["siteId"] = outer.site_id  # canonical, as _build_event made it
    if "timestamp" not in inherited:
        inherited["timestamp"] = outer.timestamp.isoformat()
    events = [outer]
    own: list[dict[str, Any]] = []
    rejected: list[RejectedEvent] = []
    for index, item in enumerate(inner):
        try:
            where = f"events[{index}]."
            checked, event = _inner_event(item, where, inherited, now, limits, has_nul)
        except InvalidEvent as exc:
            rejected.append(RejectedEvent(index, exc.reason, exc.field, exc.message, item))
            continue
        events.append(event)
        own.append(checked)
    # The stored envelope row describes the batch instead of repeating every inner event.
    outer_payload = {k: v for k, v in document.items() if k != "events"}
    outer_payload["siteId"] = outer.site_id
    outer_payload["eventId"] = outer.event_id
    outer_payload["eventCount"] = len(inner)
    events[0] = outer._replace(payload=outer_payload)
    return Envelope(
        events=tuple(events),
        inner_count=len(own),
        columns=collect_columns,
        consent=document.get("consent"),
        inherited=inherited,
        own=tuple(own),
        rejected=tuple(rejected),
    )


def collect_columns(payload: dict[str, Any]) -> RowColumns:
    """A /collect event's columns: its own keys (user ids are the Segment API's)."""
    get = payload.get
    return RowColumns(
        get("eventType"),
        get("sessionId"),
        get("visitorId"),
        get("url"),
        get("path"),
        get("referrer"),
        None,
        sent_utm(get("attribution")),
    )


def _inner_event(
    item: object,
    where: str,
    inherited: dict[str, Any],
    now: datetime,
    limits: EventLimits | None,
    has_nul: bool,
) -> tuple[dict[str, Any], Event]:
    """One inner event as sent (limits applied) and parsed, or ``InvalidEvent``."""
    if not isinstance(item, dict):
        raise InvalidEvent(
            f"{where[:-1]} must be a JSON object",
            field=where[:-1],
            reason=RejectReason.NOT_AN_OBJECT,
        )
    if has_nul:
        refuse_nul_characters([*item.keys(), *item.values()], where=where[:-1])
    if limits is not None:
        item = apply_limits(item, limits, _CORE_FIELDS, where)
    event = _build_event(item, inherited=inherited, now=now, where=where)
    if event.event_type == "batch":
        raise InvalidEvent(
            "batches cannot be nested", field=f"{where}eventType", reason=RejectReason.NESTED_BATCH
        )
    if "siteId" in item:
        item["siteId"] = event.site_id  # what is stored is the canonical host
    return item, event


def _build_event(
    raw: dict[str, Any], *, inherited: dict[str, Any] | None, now: datetime, where: str
) -> Event:
    payload = dict(raw) if inherited is None else {**inherited, **raw}

    event_type = payload.get("eventType")
    if event_type is None:
        raise InvalidEvent(
            f"{where}eventType is required",
            field=f"{where}eventType",
            reason=RejectReason.MISSING_FIELD,
        )
    event_type = _string(payload, "eventType", where)
    if not event_type:
        raise InvalidEvent(
            f"{where}eventType must not be empty",
            field=f"{where}eventType",
            reason=RejectReason.MISSING_FIELD,
        )

    site_id = _string(payload, "siteId", where)
    if not site_id:
        raise InvalidEvent(
            f"{where}siteId is required (the domain the event comes from)",
            field=f"{where}siteId",
            reason=RejectReason.MISSING_FIELD,
        )
    # Canonical from here on (lower case, IDNA, no port, path, query or user info): what
    # is stored, logged, metered and discovered is the host the registry matches, never
    # what else a sender put in the field.
    host = site_host(site_id)
    if host is None:
        raise InvalidEvent(
            f"{where}siteId must be a host name (such as shop.example.com)",
            field=f"{where}siteId",
            reason=RejectReason.NOT_A_HOST,
        )
    payload["siteId"] = host

    event_data = payload.get("eventData")
    if event_data is not None and not isinstance(event_data, dict):
        raise InvalidEvent(
            f"{where}eventData must be an object",
            field=f"{where}eventData",
            reason=RejectReason.WRONG_TYPE,
        )

    raw_timestamp = payload.get("timestamp")
    timestamp = (
        now
        if raw_timestamp is None
        else parse_timestamp(raw_timestamp, field=f"{where}timestamp", now=now)
    )

    raw_id = payload.get("eventId")
    if raw_id is None:
        event_id = uuid7()
        payload["eventId"] = event_id
    else:
        event_id = _parse_uuid(raw_id, f"{where}eventId")
        payload["eventId"] = event_id

    return Event(
        event_id,
        event_type,
        host,
        timestamp,
        _string(payload, "sessionId", where),
        _string(payload, "visitorId", where),
        _string(payload, "url", where),
        _string(payload, "path", where),
        _string(payload, "referrer", where),
        payload,
    )


def _string(payload: dict[str, Any], name: str, where: str) -> str | None:
    # Seven calls per event: the usual short string returns without building the field's
    # name, which only an error needs.
    value = payload.get(name)
    if value is None or (type(value) is str and len(value) <= FIELD_LIMITS[name]):
        return value
    return checked_text(value, f"{where}{name}", FIELD_LIMITS[name])


def checked_text(value: object, field: str, limit: int) -> str:
    """``value`` as a string of at most ``limit`` characters, or ``InvalidEvent`` naming
    ``field`` (also the Segment parser's rule for its ids and names)."""
    if not isinstance(value, str):
        raise InvalidEvent(
            f"{field} must be a string, not {_json_type(value)}",
            field=field,
            reason=RejectReason.WRONG_TYPE,
        )
    if len(value) > limit:
        raise InvalidEvent(
            f"{field} is {len(value)} characters; at most {limit} are accepted",
            field=field,
            reason=RejectReason.TOO_LONG,
        )
    return value


def refuse_nul_characters(pending: list[object], where: str | None = None) -> None:
    """PostgreSQL's JSONB cannot hold U+0000; one such event would fail a whole flush
    (the Segment parser refuses them the same way).

    Walks iteratively because orjson accepts nesting deeper than Python's recursion limit.
    """
    while pending:
        node = pending.pop()
        if isinstance(node, str):
            if "\x00" in node:
                raise InvalidEvent(
                    "strings must not contain the NUL character (\\u0000)",
                    field=where,
                    reason=RejectReason.NUL_CHARACTER,
                )
        elif isinstance(node, dict):
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def _parse_uuid(value: object, field: str) -> str:
    """Canonical lower-case UUID text; only the 8-4-4-4-12 form senders actually use."""
    if not isinstance(value, str):
        raise InvalidEvent(
            f"{field} must be a UUID string", field=field, reason=RejectReason.WRONG_TYPE
        )
    if _UUID_TEXT.fullmatch(value) is None:
        raise InvalidEvent(f"{field} is not a UUID", field=field)
    return value.lower()


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


_JSON_TYPE_NAMES = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    list: "a list",
    dict: "an object",
}
