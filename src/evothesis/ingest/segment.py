"""The Segment tracking API's messages (``/v1/*``): the one place that knows their shapes.

Segment's spec is what RudderStack, Jitsu and Segment's own SDKs speak, so accepting it
makes every one of those SDKs an Evothesis SDK. A message becomes one of our events:

* ``anonymousId`` is the visitor, ``userId`` the user (stored as the client's
  ``user_id_storage`` says, see ``ingest.identity``), ``context.page`` the page (url,
  path, referrer; a page call's ``properties`` when the context has none), a track call's
  ``event`` its event type (a page is a ``pageview``, a screen a ``screenview``, the other
  calls their own type), ``context.campaign`` the UTM values, ``messageId`` the event id
  (retries are stored once), ``context.ip`` and ``context.userAgent`` the visitor's
  address and browser (Segment's SDKs send the sender's own in the HTTP request).
* ``raw_event_data`` is the message itself: ``properties``, ``traits``, ``context``,
  ``integrations``, ``groupId``, ``previousId`` and any other key, nothing dropped but the
  write key (a credential, never stored) and ``context.ip`` (its column holds it, as the
  privacy level stores it: at gdpr and hipaa the raw address is written nowhere). A
  batch's own ``context`` and ``integrations`` are merged into each message's (the
  message's keys win).
* The time is the spec's clock-skew correction: the device's clock (``originalTimestamp``,
  else ``timestamp``) moved by how far the device's clock was off when it sent the
  request: ``receivedAt - (sentAt - originalTimestamp)``. Without ``sentAt`` the device's
  time is taken as it is; without either, the time of arrival. The stored message keeps
  all four: ``originalTimestamp`` and ``sentAt`` as sent, ``receivedAt`` and the corrected
  ``timestamp``.

Pure: errors are ``BadRequest`` subclasses naming the field, and a batch's invalid message
is set aside as a ``RejectedEvent`` (stored as a failed event) while the rest is stored.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from evothesis.domain import (
    Envelope,
    Event,
    RejectedEvent,
    RejectReason,
    RowColumns,
    SegmentCall,
    uuid7,
)
from evothesis.enrich.limits import EventLimits, apply_limits
from evothesis.enrich.referrer import sent_utm
from evothesis.errors import BatchTooLarge, InvalidEvent
from evothesis.ingest.envelope import (
    FIELD_LIMITS,
    checked_text,
    decode_json,
    refuse_nul_characters,
)
from evothesis.ingest.timestamps import parse_timestamp, within_window
from evothesis.registry.domains import site_host

__all__ = [
    "CALL_PATHS",
    "NO_PAGE_SITE",
    "SEGMENT_VERIFIED",
    "SegmentMessage",
    "SegmentRequest",
    "parse_segment",
    "segment_columns",
    "segment_envelope",
]

#: The last path segment of each ``/v1/…`` endpoint and the call it takes (``None``: a
#: batch of any calls). The one-letter paths are what Segment's browser SDK posts to.
CALL_PATHS: Final[dict[str, SegmentCall | None]] = {
    "track": SegmentCall.TRACK,
    "t": SegmentCall.TRACK,
    "page": SegmentCall.PAGE,
    "p": SegmentCall.PAGE,
    "screen": SegmentCall.SCREEN,
    "s": SegmentCall.SCREEN,
    "identify": SegmentCall.IDENTIFY,
    "i": SegmentCall.IDENTIFY,
    "group": SegmentCall.GROUP,
    "g": SegmentCall.GROUP,
    "alias": SegmentCall.ALIAS,
    "a": SegmentCall.ALIAS,
    "batch": None,
    "b": None,
    "import": None,
}

#: The site of a message that names no page (a server's, an app's): not a host, so it can
#: be no registered domain, and billing shows it as what it is.
NO_PAGE_SITE: Final = "(no page)"

#: Top-level keys the parser (times) and ``ingest.identity`` (user ids) leave PII-free.
SEGMENT_VERIFIED: Final = frozenset(
    {"timestamp", "originalTimestamp", "sentAt", "receivedAt", "userId", "previousId"}
)

#: Where a ``messageId`` that is not a UUID is turned into one (UUID version 5): the same
#: id always gives the same event id, so a retried message is stored once.
_MESSAGE_ID_NAMESPACE: Final = uuid.UUID("6f1d0c1e-3b5a-5e4f-9a43-7e5c0b1d2a61")

#: Fields this parser checks itself; the per-event limits cover the free-form rest.
_CORE_FIELDS: Final = frozenset(
    {
        "type",
        "messageId",
        "anonymousId",
        "userId",
        "previousId",
        "groupId",
        "event",
        "name",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "receivedAt",
        "writeKey",
    }
)
#: Longest accepted id (the visitor id's limit).
_ID_LIMIT: Final = FIELD_LIMITS["visitorId"]
_OBJECT_FIELDS: Final = ("properties", "traits", "context", "integrations")
#: The event type of a /collect batch envelope: a track of that name would read as one.
_RESERVED_EVENT: Final = "batch"


@dataclass(frozen=True, slots=True)
class SegmentMessage:
    """One valid message, as it will be stored (before the client's rules apply)."""

    #: Its place in the batch (0 for a single message).
    position: int
    call: SegmentCall
    event: Event
    #: The visitor's address and browser from ``context``, when the message carries them.
    client_ip: str | None
    user_agent: str | None
    #: The canonical host of the message's page, when it names one.
    page_host: str | None
    #: ``context.consent``, read as /collect's consent flag (only ``True`` is consent).
    consent: bool | None


@dataclass(frozen=True, slots=True)
class SegmentRequest:
    """Everything one ``/v1/…`` request carried."""

    messages: tuple[SegmentMessage, ...]
    #: Messages of a batch that failed validation, by their position in it.
    rejected: tuple[RejectedEvent, ...]
    #: The ``writeKey`` of the body (Segment's browser SDK sends it there too).
    write_key: str | None
    #: Whether the request was a batch (answers and logs say so).
    batch: bool
    #: Messages sent, valid or not.
    sent: int


def parse_segment(
    body: bytes,
    call: SegmentCall | None,
    *,
    now: datetime,
    max_batch_events: int,
    limits: EventLimits | None = None,
) -> SegmentRequest:
    """Parse a (decompressed) ``/v1/…`` body: one message of ``call``, or for ``None`` a
    batch (``{"batch": [...]}``). A single invalid message raises ``InvalidEvent``."""
    document = decode_json(body)
    if not isinstance(document, dict):
        raise InvalidEvent("request body must be a JSON object")
    has_nul = b"\\u0000" in body
    write_key = document.get("writeKey")
    if write_key is not None and not isinstance(write_key, str):
        raise InvalidEvent("writeKey must be a string", field="writeKey")
    if call is not None:
        message = _message(document, call, {}, now, limits, has_nul, 0, where="")
        return SegmentRequest((message,), (), write_key, False, 1)

    items = document.get("batch")
    if not isinstance(items, list):
        raise InvalidEvent("a batch needs 'batch': a list of messages", field="batch")
    if not items:
        raise InvalidEvent("the batch holds no message", field="batch")
    if len(items) > max_batch_events:
        raise BatchTooLarge(
            f"batch holds {len(items)} messages; at most {max_batch_events} are accepted"
        )
    shared = {
        key: document[key] for key in ("context", "integrations", "sentAt") if key in document
    }
    if has_nul:
        refuse_nul_characters([*shared.keys(), *shared.values()])
    for key in ("context", "integrations"):
        if key in shared and not isinstance(shared[key], dict):
            raise InvalidEvent(f"{key} must be an object", field=key)
    messages: list[SegmentMessage] = []
    rejected: list[RejectedEvent] = []
    for index, item in enumerate(items):
        try:
            messages.append(
                _message(item, None, shared, now, limits, has_nul, index, f"batch[{index}].")
            )
        except InvalidEvent as exc:
            rejected.append(RejectedEvent(index, exc.reason, exc.field, exc.message, item))
    if not messages:
        first = rejected[0]
        raise InvalidEvent(
            f"no message of the batch is valid; the first: {first.message}", field=first.field
        )
    return SegmentRequest(tuple(messages), tuple(rejected), write_key, True, len(items))


def _message(
    raw: object,
    call: SegmentCall | None,
    shared: dict[str, Any],
    now: datetime,
    limits: EventLimits | None,
    has_nul: bool,
    position: int,
    where: str,
) -> SegmentMessage:
    if not isinstance(raw, dict):
        raise InvalidEvent(
            f"{where[:-1] or 'the message'} must be a JSON object",
            field=where[:-1] or None,
            reason=RejectReason.NOT_AN_OBJECT,
        )
    if has_nul:
        refuse_nul_characters([*raw.keys(), *raw.values()], where=where[:-1] or None)
    if limits is not None:
        raw = apply_limits(raw, limits, _CORE_FIELDS, where)
    kind = _call(raw, call, where)
    payload = dict(raw)
    payload.pop("writeKey", None)
    payload["type"] = kind.value
    for key in ("context", "integrations"):
        _object(payload, key, where)
        if key in shared:
            payload[key] = {**shared[key], **(payload.get(key) or {})}
    for key in _OBJECT_FIELDS[:2]:
        _object(payload, key, where)

    anonymous_id = _identifier(payload, "anonymousId", where)
    user_id = _identifier(payload, "userId", where)
    if anonymous_id is None and user_id is None:
        raise InvalidEvent(
            f"{where}userId or {where}anonymousId is required",
            field=f"{where}userId",
            reason=RejectReason.MISSING_FIELD,
        )
    event_type = _event_type(payload, kind, where)
    if kind is SegmentCall.ALIAS and _identifier(payload, "previousId", where) is None:
        raise InvalidEvent(
            f"{where}previousId is required for an alias",
            field=f"{where}previousId",
            reason=RejectReason.MISSING_FIELD,
        )
    if kind is SegmentCall.GROUP and _identifier(payload, "groupId", where) is None:
        raise InvalidEvent(
            f"{where}groupId is required for a group call",
            field=f"{where}groupId",
            reason=RejectReason.MISSING_FIELD,
        )
    timestamp = _correct_clock(payload, shared, now, where)
    event_id = _event_id(payload, where)
    context = _dict(payload.get("context"))
    client_ip = _context_ip(context, where)
    if client_ip is not None:
        payload["context"] = {key: value for key, value in context.items() if key != "ip"}
    user_agent = context.get("userAgent")
    if user_agent is not None and not isinstance(user_agent, str):
        raise InvalidEvent(
            f"{where}context.userAgent must be a string",
            field=f"{where}context.userAgent",
            reason=RejectReason.WRONG_TYPE,
        )
    columns = segment_columns(payload)
    url = columns.url
    host = site_host(url) if isinstance(url, str) and url else None
    event = Event(
        event_id,
        event_type,
        host or NO_PAGE_SITE,
        timestamp,
        None,
        anonymous_id,
        _text(url),
        _text(columns.path),
        _text(columns.referrer),
        payload,
    )
    return SegmentMessage(position, kind, event, client_ip, user_agent, host, _consent(context))


def segment_envelope(
    message: SegmentMessage, event: Event, rejected: tuple[RejectedEvent, ...] = ()
) -> Envelope:
    """One message, as ``event`` (its payload as the client's rules store it), in the
    envelope the ingestion steps take: a single event, with the request's rejected messages
    when it is the first (they are stored with its request)."""
    return Envelope(
        events=(event,),
        inner_count=0,
        columns=segment_columns,
        consent=message.consent,
        verified=SEGMENT_VERIFIED,
        rejected=rejected,
    )


def segment_columns(payload: dict[str, Any]) -> RowColumns:
    """A stored message's columns, read from the message as it is stored (also any
    rejected message, whatever its shape)."""
    kind = payload.get("type")
    event_type = (
        _CALL_TYPES[kind].event_type if isinstance(kind, str) and kind in _CALL_TYPES else None
    )
    if kind == SegmentCall.TRACK:
        event_type = _text(payload.get("event"))
    context = _dict(payload.get("context"))
    page = _dict(context.get("page"))
    if kind == SegmentCall.PAGE and not page:
        page = _dict(payload.get("properties"))
    campaign = _dict(context.get("campaign"))
    utm = (
        sent_utm(
            {
                "utmParams": {
                    "utm_source": campaign.get("source"),
                    "utm_medium": campaign.get("medium"),
                    "utm_campaign": campaign.get("name"),
                    "utm_term": campaign.get("term"),
                    "utm_content": campaign.get("content"),
                }
            }
        )
        if campaign
        else None
    )
    return RowColumns(
        event_type,
        None,
        _text(payload.get("anonymousId")),
        _text(page.get("url")),
        _text(page.get("path")),
        _text(page.get("referrer")),
        _text(payload.get("userId")),
        utm,
    )


_CALL_TYPES: Final = {call.value: call for call in SegmentCall}


def _call(raw: dict[str, Any], call: SegmentCall | None, where: str) -> SegmentCall:
    """The message's call: the endpoint's, or for a batch its own ``type``."""
    sent = raw.get("type")
    if call is not None:
        if sent is not None and sent != call.value:
            raise InvalidEvent(
                f"{where}type is {str(sent)[:40]!r}, but this endpoint takes {call.value} calls",
                field=f"{where}type",
            )
        return call
    if sent is None:
        raise InvalidEvent(
            f"{where}type is required", field=f"{where}type", reason=RejectReason.MISSING_FIELD
        )
    if not isinstance(sent, str) or sent not in _CALL_TYPES:
        raise InvalidEvent(
            f"{where}type must be one of: {', '.join(_CALL_TYPES)}", field=f"{where}type"
        )
    return _CALL_TYPES[sent]


def _event_type(payload: dict[str, Any], kind: SegmentCall, where: str) -> str:
    if kind is not SegmentCall.TRACK:
        name = payload.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidEvent(
                f"{where}name must be a string",
                field=f"{where}name",
                reason=RejectReason.WRONG_TYPE,
            )
        event_type = kind.event_type
        assert event_type is not None
        return event_type
    event = payload.get("event")
    if event is None or event == "":
        raise InvalidEvent(
            f"{where}event is required for a track call",
            field=f"{where}event",
            reason=RejectReason.MISSING_FIELD,
        )
    name = checked_text(event, f"{where}event", FIELD_LIMITS["eventType"])
    if name == _RESERVED_EVENT:
        raise InvalidEvent(
            f"{where}event {_RESERVED_EVENT!r} is reserved for batch envelopes",
            field=f"{where}event",
        )
    return name


def _identifier(payload: dict[str, Any], key: str, where: str) -> str | None:
    """An id as text (SDKs send strings; a whole number is accepted and stored as text)."""
    value = payload.get(key)
    if value is None or value == "":
        payload.pop(key, None)
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
        payload[key] = value
    return checked_text(value, f"{where}{key}", _ID_LIMIT)


def _object(payload: dict[str, Any], key: str, where: str) -> None:
    value = payload.get(key)
    if value is not None and not isinstance(value, dict):
        raise InvalidEvent(
            f"{where}{key} must be an object",
            field=f"{where}{key}",
            reason=RejectReason.WRONG_TYPE,
        )


def _correct_clock(
    payload: dict[str, Any], shared: dict[str, Any], now: datetime, where: str
) -> datetime:
    """The spec's corrected time (see the module docstring); the payload gets the four
    times Segment's warehouses keep."""
    device_key = "originalTimestamp" if "originalTimestamp" in payload else "timestamp"
    device_text = payload.get(device_key)
    sent_text = payload.get("sentAt", shared.get("sentAt"))
    device = (
        None
        if device_text is None
        else parse_timestamp(device_text, field=f"{where}{device_key}", now=now)
    )
    sent = (
        None if sent_text is None else parse_timestamp(sent_text, field=f"{where}sentAt", now=now)
    )
    if device is None:
        corrected = now
    elif sent is None:
        corrected = device
    else:
        corrected = now - (sent - device)
        if corrected > now:
            # A device that sent before it called (clocks do not run backwards): the
            # skew cannot be told, so the call is placed at its arrival.
            corrected = now
    within_window(corrected, field=f"{where}{device_key}", now=now)
    if device_text is not None:
        payload["originalTimestamp"] = device_text
    if sent_text is not None:
        payload["sentAt"] = sent_text
    payload["receivedAt"] = _iso(now)
    payload["timestamp"] = _iso(corrected)
    return corrected


def _iso(moment: datetime) -> str:
    """ISO-8601 in UTC to the microsecond: what the column holds, exactly."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _event_id(payload: dict[str, Any], where: str) -> str:
    """``messageId`` as our event id: itself when it is a UUID, else a UUID of its text."""
    message_id = payload.get("messageId")
    if message_id is None:
        event_id = uuid7()
        payload["messageId"] = event_id
        return event_id
    if not isinstance(message_id, str) or not message_id:
        raise InvalidEvent(
            f"{where}messageId must be a non-empty string",
            field=f"{where}messageId",
            reason=RejectReason.WRONG_TYPE,
        )
    if len(message_id) > _ID_LIMIT:
        raise InvalidEvent(
            f"{where}messageId is {len(message_id)} characters; at most {_ID_LIMIT} are accepted",
            field=f"{where}messageId",
            reason=RejectReason.TOO_LONG,
        )
    try:
        parsed = uuid.UUID(message_id)
    except ValueError:
        return str(uuid.uuid5(_MESSAGE_ID_NAMESPACE, message_id))
    if str(parsed) == message_id.lower():
        return str(parsed)
    return str(uuid.uuid5(_MESSAGE_ID_NAMESPACE, message_id))


def _context_ip(context: dict[str, Any], where: str) -> str | None:
    value = context.get("ip")
    if value is None:
        return None
    address = _address(value.strip()) if isinstance(value, str) else None
    if address is None:
        raise InvalidEvent(f"{where}context.ip must be an IP address", field=f"{where}context.ip")
    return address


@lru_cache(maxsize=10_000)
def _address(text: str) -> str | None:
    """``text`` when it is an IP address (cached: a visitor's messages repeat it)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return None
    return text


def _consent(context: dict[str, Any]) -> bool | None:
    """``context.consent`` as /collect's consent: ``true``, or Segment's consent object whose
    ``categoryPreferences`` all say yes; anything else is no consent (an unknown consent is
    not a yes)."""
    consent = context.get("consent")
    if isinstance(consent, bool):
        return consent
    preferences = _dict(consent).get("categoryPreferences")
    if isinstance(preferences, dict) and preferences:
        return all(value is True for value in preferences.values())
    return None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
