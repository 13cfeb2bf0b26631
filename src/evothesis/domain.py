"""The nouns of event collection, as plain immutable values with no I/O.

``Event`` is what the parser produces from a request, ``EventRow`` is what the buffer
writes: a named tuple whose field order *is* the COPY column order, so a row goes to
asyncpg without any conversion.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

#: Columns the enrichment step fills (see ``ingest/enrichment.py``), after the seed's.
ENRICHED_COLUMNS: tuple[str, ...] = (
    "browser",
    "browser_version",
    "os",
    "device_type",
    "is_bot",
    "country",
    "region",
    "city",
    "referrer_class",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
)

#: Columns written by ingestion, in COPY order (``id`` comes from its sequence).
EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "session_id",
    "visitor_id",
    "site_id",
    "client_id",
    "timestamp",
    "url",
    "path",
    "referrer",
    "ip_address",
    "user_agent",
    "raw_event_data",
    "created_at",
    *ENRICHED_COLUMNS,
)


class EventRow(NamedTuple):
    """One ``events_log`` row as written by the buffer; ``event_id`` is canonical UUID text."""

    event_id: str
    event_type: str
    session_id: str | None
    visitor_id: str | None
    site_id: str
    client_id: str
    timestamp: datetime
    url: str | None
    path: str | None
    referrer: str | None
    ip_address: str | None
    user_agent: str | None
    raw_event_data: str
    created_at: datetime
    # Enrichment, last and defaulted: rows spooled before these columns existed still load.
    browser: str | None = None
    browser_version: str | None = None
    os: str | None = None
    device_type: str | None = None
    is_bot: bool = False
    country: str | None = None
    region: str | None = None
    city: str | None = None
    referrer_class: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None


class Event(NamedTuple):
    """One event after parsing: envelope fields inherited, types checked, id assigned.

    ``payload`` keeps the event as the sender shaped it (plus inherited fields and its
    id), because ``raw_event_data`` is the contract operators query with JSONB operators.
    A named tuple rather than a frozen dataclass: it is built once per event on the hot
    path, and tuple construction is several times cheaper.
    """

    event_id: str
    event_type: str
    site_id: str
    timestamp: datetime
    session_id: str | None
    visitor_id: str | None
    url: str | None
    path: str | None
    referrer: str | None
    payload: dict[str, Any]


class RejectedEvent(NamedTuple):
    """An inner event of a batch that failed validation: not stored as an event, but kept.

    ``raw`` is the inner event exactly as sent (any JSON value); it is redacted by the
    client's privacy rules before it is stored in ``failed_events``.
    """

    position: int
    reason: str
    field: str | None
    message: str
    raw: object


class FailedEvent(NamedTuple):
    """One ``failed_events`` row, in the column order of its insert statement."""

    request_id: str
    position: int
    client_id: str
    site_id: str
    reason: str
    field: str | None
    message: str
    #: The redacted inner event as JSON text.
    payload: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Envelope:
    """Everything one POST /collect carried: the outer event and any batched inner ones.

    ``events`` holds the envelope first, then the valid inner events, which is also the
    order they are stored in; the seed counts the envelope as an event. ``inner_count`` is
    the number of valid inner events.
    """

    events: tuple[Event, ...]
    inner_count: int
    #: What inner events inherit from the envelope, and each inner event as the sender
    #: wrote it: every inner payload is ``{**inherited, **own, "eventId": its id}``, which
    #: lets the shared part be processed once per request instead of once per event.
    inherited: dict[str, Any] = field(default_factory=dict)
    own: tuple[dict[str, Any], ...] = ()
    #: Inner events that failed validation, in batch order; the valid ones are stored.
    rejected: tuple[RejectedEvent, ...] = ()

    @property
    def is_batch(self) -> bool:
        return self.events[0].event_type == "batch"

    @property
    def site_ids(self) -> frozenset[str]:
        return frozenset(event.site_id for event in self.events)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Facts about the HTTP request that become part of every stored event."""

    client_ip: str | None
    user_agent: str | None
    received_at: datetime
    origin: str | None = None
    referer: str | None = None
    #: ``X-Write-Key``: how server-to-server senders (no Origin, no Referer) authenticate.
    write_key: str | None = None
    #: The visitor's ``DNT: 1`` and ``Sec-GPC: 1`` signals.
    dnt: bool = False
    gpc: bool = False


class AuditRecord(NamedTuple):
    """One accepted batch of a hipaa client: who sent how many events, when, from where.

    Written in the same transaction as the events, so the trail and the data never diverge.
    """

    recorded_at: datetime
    client_id: str
    site_id: str
    visitor_id: str | None
    events: int
    ip_hash: str | None
    origin: str | None
    collector: str
    #: The request's first event id: a retried or replayed batch is audited once.
    request_id: str


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What the collector needs to know about the client a domain belongs to.

    The defaults are the most common setup (standard level, IP kept, DNT honoured, no
    consent gate). ``ip_salt`` and ``write_key_sha256`` are secrets: they travel from pixel
    management to collectors only, never to browsers (see ``public_config``).
    """

    client_id: str
    privacy_level: str = "standard"
    ip_collection: str = "full"
    honour_dnt: bool = True
    consent_mode: str = "none"
    #: What happens to events whose user agent is a bot: ``keep`` (stored, ``is_bot``
    #: true) or ``drop`` (counted by bot kind, not stored).
    bot_policy: str = "keep"
    ip_salt: bytes = b""
    write_key_sha256: str | None = None

    def public_config(self) -> dict[str, object]:
        """The settings a browser may see: what the tracker and the config API show."""
        return {
            "client_id": self.client_id,
            "privacy_level": self.privacy_level,
            "privacy_mode": self.privacy_level,
            "ip_collection": self.ip_collection,
            "honour_dnt": self.honour_dnt or self.privacy_level != "standard",
            "consent": self.consent_mode,
            "consent_required": self.consent_mode == "required",
        }


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7) in canonical text form.

    Time-ordered ids keep the unique index on ``event_id`` append-mostly, which matters
    at tens of thousands of inserts per second; random v4 ids would scatter index writes.
    Event ids stay text end to end (asyncpg encodes the uuid column from text in C), since
    building ``uuid.UUID`` objects is a measurable share of per-event cost.
    """
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= ((rand >> 64) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
