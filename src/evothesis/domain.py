"""The nouns of event collection, as plain immutable values with no I/O.

``Event`` is what the parser produces from a request, ``EventRow`` is what the buffer
writes: a named tuple whose field order *is* the COPY column order, so a row goes to
asyncpg without any conversion.

The closed sets (a client's settings, why an event was dropped, refused or rejected) are
``StrEnum``s: they compare equal to their text, which is how the database, JSON and the
metric labels spell them, and a typo is an error where it is written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, NamedTuple, TypeVar

Choice = TypeVar("Choice", bound=StrEnum)


def parse_choice(kind: type[Choice], value: object, *, setting: str) -> Choice:
    """The member of a closed set that ``value`` names (any case), or a ``ValueError`` that
    names the setting and lists the choices."""
    try:
        return kind(str(value).lower())
    except ValueError:
        expected = ", ".join(sorted(kind))
        raise ValueError(f"unknown {setting} {value!r}; expected one of: {expected}") from None


# ----------------------------------------------------------------------- client settings


class PrivacyLevel(StrEnum):
    """How strictly a client's events are treated (see the privacy table in DESIGN.md)."""

    STANDARD = "standard"
    GDPR = "gdpr"
    HIPAA = "hipaa"


class IpCollection(StrEnum):
    """What happens to the visitor's IP address before it is stored."""

    FULL = "full"
    ANONYMIZED = "anonymized"
    NONE = "none"


class ConsentMode(StrEnum):
    """Whether the tracker waits for the page to report consent."""

    NONE = "none"
    REQUIRED = "required"
    ANONYMOUS_WITHOUT_CONSENT = "anonymous_without_consent"


class BotPolicy(StrEnum):
    """What happens to events whose user agent is a crawler, headless browser or monitor."""

    KEEP = "keep"
    DROP = "drop"


class EventSource(StrEnum):
    """How a stored event's sender was authenticated: a client can filter spoofable events
    out of its analysis by this."""

    #: A page of the client (``Origin``, else ``Referer``): what a browser proves, and what
    #: any other sender can forge.
    BROWSER = "browser"
    #: The client's write key.
    SERVER_KEY = "server_key"
    #: Neither: accepted because the client does not require its write key.
    UNVERIFIED = "unverified"


class UserIdStorage(StrEnum):
    """What a Segment message's ``userId`` (and an alias's ``previousId``) is stored as.

    A client that sets none gets its privacy level's default (``for_level``)."""

    #: As sent (unless the id is itself PII by the redaction rules: then as ``hashed``).
    KEPT = "kept"
    #: HMAC-SHA256 under the client's salt: the same user links up, the id is not stored.
    HASHED = "hashed"
    #: Not stored at all.
    DROPPED = "dropped"

    @classmethod
    def for_level(cls, level: PrivacyLevel, chosen: UserIdStorage | None) -> UserIdStorage:
        """What a client at ``level`` that chose ``chosen`` (``None``: nothing) stores.

        standard keeps (the client's own identifier of its own customers); gdpr hashes
        (pseudonymisation, GDPR Art. 4(5) and 25: the same person's events still link up,
        and the bucket holds no direct identifier unless the client chooses ``kept``);
        hipaa always drops, whatever was chosen: a hash derived from an identifier is
        not a permitted re-identification code under HIPAA's Safe Harbor (45 CFR
        164.514(c)), so no form of it may be kept.
        """
        if level is PrivacyLevel.HIPAA:
            return cls.DROPPED
        if chosen is not None:
            return chosen
        return cls.HASHED if level is PrivacyLevel.GDPR else cls.KEPT


class ExportFormat(StrEnum):
    """The format of a client's processed exports: one file per delivery (json, csv,
    parquet) or rows appended to a table in the client's bucket (delta, iceberg)."""

    #: Seed 004's JSON document: ``{"export_metadata": {…}, "events": […]}``.
    JSON = "json"
    #: JSON Lines, one event per line (what ``json`` wrote before it became the document).
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"
    DELTA = "delta"
    ICEBERG = "iceberg"


#: Formats delivered as rows appended to a table in the client's bucket rather than as files.
TABLE_FORMATS: Final = frozenset({ExportFormat.DELTA, ExportFormat.ICEBERG})
#: Formats delivered as one file per delivery and day; each is also its file's extension.
FILE_FORMATS: Final = tuple(fmt for fmt in ExportFormat if fmt not in TABLE_FORMATS)
#: The file formats written from the events' structs alone, without Arrow columns.
JSON_FORMATS: Final = frozenset({ExportFormat.JSON, ExportFormat.JSONL})


class FileLayout(StrEnum):
    """Where a client's files go under ``processed-events/<client_id>/`` (tables are always
    partitioned Hive-style)."""

    #: ``YYYY/MM/DD/`` of the delivery's claim day: the seeds' layout.
    DATED = "dated"
    #: ``export_date=YYYY-MM-DD/`` of the delivery's claim day, which BigQuery, Athena,
    #: DuckDB and Spark read as a partition column without configuration.
    HIVE = "hive"


class DeliveryTrigger(StrEnum):
    """Why a client's delivery was cut: its schedule, or one of the triggers that deliver
    early (``export.deliveries``)."""

    #: The real-time schedule: one delivery per raw batch, as soon as the batch is exported.
    REAL_TIME = "real_time"
    #: A tick of the client's hourly, daily or cron schedule.
    SCHEDULE = "schedule"
    #: An operator's run (``/process/run``, ``evothesis process run``).
    MANUAL = "manual"
    #: The client's threshold of pending events was reached.
    THRESHOLD = "threshold"
    #: The client asked for its pending events with its own key.
    ON_DEMAND = "on_demand"


class NoticeKind(StrEnum):
    """What a client's notification webhook is told about its deliveries."""

    DESTINATION_PAUSED = "destination.paused"
    DESTINATION_RESUMED = "destination.resumed"
    DELIVERY_FAILING = "delivery.failing"
    DELIVERY_DEAD_LETTERED = "delivery.dead_lettered"
    REPLAY_FINISHED = "replay.finished"


class SchedulerRole(StrEnum):
    """Which kind of process runs an export schedule (``/pipeline/status`` says who)."""

    #: ``evothesis serve`` with ``EXPORT_IN_SERVE``.
    COLLECTOR = "collector"
    #: ``evothesis worker``.
    WORKER = "worker"


# ----------------------------------------------------------------------------- operators


class Access(StrEnum):
    """What a caller of the operators' endpoints may do, by how it proved who it is."""

    #: ``EVOTHESIS_ADMIN_TOKEN`` (or a console session opened with it): everything.
    ADMIN = "admin"
    #: ``EVOTHESIS_OPERATOR_TOKEN`` (or its console session): reading stored data and state.
    OPERATOR = "operator"
    #: The development default, no token configured, a caller on this machine: reading,
    #: and running exports, as the seed's ``curl http://localhost:8000/...`` commands do.
    LOCAL = "local"

    @property
    def runs(self) -> bool:
        """May trigger export and processing runs."""
        return self is not Access.OPERATOR

    @property
    def administers(self) -> bool:
        """May change clients, answer data-subject requests and read billing."""
        return self is Access.ADMIN


# -------------------------------------------------------------- what happens to events


class BotKind(StrEnum):
    """The kinds a detected bot is sorted into: few, because each is a metric label."""

    CRAWLER = "crawler"
    HEADLESS = "headless"
    MONITOR = "monitor"
    HTTP_CLIENT = "http_client"


class DropReason(StrEnum):
    """Why accepted events were not stored (answered 200, counted, never silent)."""

    DO_NOT_TRACK = "do_not_track"
    NO_CONSENT = "no_consent"
    BOT_CRAWLER = "bot_crawler"
    BOT_HEADLESS = "bot_headless"
    BOT_MONITOR = "bot_monitor"
    BOT_HTTP_CLIENT = "bot_http_client"

    @classmethod
    def for_bot(cls, kind: BotKind) -> DropReason:
        return cls(f"bot_{kind.value}")

    @property
    def explanation(self) -> str:
        """Why, as the answer's message tells the sender."""
        if self is DropReason.DO_NOT_TRACK or self is DropReason.NO_CONSENT:
            return "the visitor's privacy signal or missing consent forbids storing them"
        return "the client drops events from bots, crawlers and monitors"


class Refusal(StrEnum):
    """Why a whole /collect request was refused (401/403); also the error's code."""

    UNAUTHORIZED_DOMAIN = "unauthorized_domain"
    ORIGIN_MISMATCH = "origin_mismatch"
    WRITE_KEY_REQUIRED = "write_key_required"
    INVALID_WRITE_KEY = "invalid_write_key"


class RejectReason(StrEnum):
    """Why one inner event of a batch failed validation (kept in ``failed_events``)."""

    INVALID = "invalid"
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"
    TOO_LONG = "too_long"
    NOT_AN_OBJECT = "not_an_object"
    NESTED_BATCH = "nested_batch"
    NUL_CHARACTER = "nul_character"
    TOO_MANY_PROPERTIES = "too_many_properties"
    KEY_TOO_LONG = "key_too_long"
    TOO_DEEP = "too_deep"
    NOT_A_HOST = "not_a_host"
    OUT_OF_RANGE = "out_of_range"
    #: A Segment message whose page belongs to another client than its write key's, or to
    #: none.
    FOREIGN_SITE = "foreign_site"
    #: A stored event no export format could render (found while processing, not intake).
    UNRENDERABLE = "unrenderable"


class SegmentCall(StrEnum):
    """The calls of the Segment tracking spec (a message's ``type``)."""

    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    IDENTIFY = "identify"
    GROUP = "group"
    ALIAS = "alias"

    @property
    def event_type(self) -> str | None:
        """The stored ``event_type`` of this call: a page is the pixel's ``pageview`` and a
        screen its app counterpart; a track is its own event name (``None`` here)."""
        return _CALL_EVENT_TYPES.get(self, self.value)


_CALL_EVENT_TYPES: Final[dict[SegmentCall, str | None]] = {
    SegmentCall.TRACK: None,
    SegmentCall.PAGE: "pageview",
    SegmentCall.SCREEN: "screenview",
}


class SubjectKind(StrEnum):
    """What a data-subject request names someone by."""

    #: The pixel's ``visitorId``, a Segment ``anonymousId``.
    VISITOR = "visitor"
    #: A Segment ``userId``.
    USER = "user"


# ------------------------------------------------------------------------------ events

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
    "source",
    "user_id",
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
    #: How the sender was authenticated (``EventSource``); rows spooled before the column
    #: existed load without it.
    source: str | None = None
    #: A Segment message's ``userId`` as its client stores it (``UserIdStorage``); ``None``
    #: for /collect events, and in rows spooled before the column existed.
    user_id: str | None = None


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
    reason: RejectReason
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
    #: Whose it is, so that a data-subject request finds it (``None`` for an anonymous
    #: visitor). Last and defaulted: failed events spooled before they existed still load.
    visitor_id: str | None = None
    session_id: str | None = None
    #: The user it is about, as its client stores user ids (Segment messages only).
    user_id: str | None = None


class RowColumns(NamedTuple):
    """What a stored row's columns take from one protected payload, in the wire format's
    own keys: read back from the payload as it is stored, so that columns and
    ``raw_event_data`` never disagree."""

    event_type: str | None
    session_id: str | None
    visitor_id: str | None
    url: str | None
    path: str | None
    referrer: str | None
    user_id: str | None
    #: The sender's UTM values (``enrich.referrer.UTM_KEYS`` order), or ``None``.
    utm: tuple[str | None, ...] | None


#: Reads ``RowColumns`` from a protected payload: one per wire format (/collect, Segment).
ColumnReader = Callable[[dict[str, Any]], RowColumns]

#: Payload fields of a /collect event the parser has already validated into PII-free shapes:
#: a canonical UUID and an ISO-8601 timestamp. (Not ``siteId``: a full URL with a query
#: string is accepted there, and only its host is checked.)
COLLECT_VERIFIED: Final = frozenset({"eventId", "timestamp"})


@dataclass(frozen=True, slots=True)
class Envelope:
    """Everything one request carried: the outer event and any batched inner ones.

    ``events`` holds the envelope first, then the valid inner events, which is also the
    order they are stored in; the seed counts the envelope as an event. ``inner_count`` is
    the number of valid inner events. (A Segment message is an envelope of its own, with
    no inner events.)
    """

    events: tuple[Event, ...]
    inner_count: int
    #: How the wire format's payloads become columns.
    columns: ColumnReader
    #: What the request says of the visitor's consent (only ``True`` is consent).
    consent: object = None
    #: Top-level payload keys the parser has already made PII-free: not redacted again.
    verified: frozenset[str] = COLLECT_VERIFIED
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
    #: ``X-Write-Key`` (or the user name of HTTP Basic): the client's write key, when sent.
    write_key: str | None = None
    #: The visitor's ``DNT: 1`` and ``Sec-GPC: 1`` signals.
    dnt: bool = False
    gpc: bool = False

    @property
    def page(self) -> str | None:
        """The page a browser says it sends from: ``Origin``, or failing that ``Referer``."""
        return self.origin if self.origin is not None else self.referer


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
    privacy_level: PrivacyLevel = PrivacyLevel.STANDARD
    ip_collection: IpCollection = IpCollection.FULL
    honour_dnt: bool = True
    consent_mode: ConsentMode = ConsentMode.NONE
    #: What happens to events whose user agent is a bot: ``keep`` (stored, ``is_bot``
    #: true) or ``drop`` (counted by bot kind, not stored).
    bot_policy: BotPolicy = BotPolicy.KEEP
    #: Refuse requests that carry neither a page of the client nor its write key.
    require_write_key: bool = False
    ip_salt: bytes = b""
    write_key_sha256: str | None = None
    #: What the client chose for user ids (``None``: its privacy level's default; see
    #: ``stores_user_ids_as``).
    user_id_storage: UserIdStorage | None = None

    def __post_init__(self) -> None:
        # Values read from a database row or a JSON answer arrive as text; members from here
        # on, so every rule can compare by identity. An unknown value is a ValueError.
        for name, kind in _CLIENT_SETTING_KINDS:
            object.__setattr__(self, name, kind(getattr(self, name)))
        if self.user_id_storage is not None:
            object.__setattr__(self, "user_id_storage", UserIdStorage(self.user_id_storage))

    @property
    def stores_user_ids_as(self) -> UserIdStorage:
        """What a user id is stored as, the privacy level and the client's choice together."""
        return UserIdStorage.for_level(self.privacy_level, self.user_id_storage)

    @property
    def honours_dnt(self) -> bool:
        """Whether DNT/GPC signals drop events: above ``standard`` they always do, whatever
        the client's own setting says."""
        return self.honour_dnt or self.privacy_level is not PrivacyLevel.STANDARD

    def public_config(self) -> dict[str, object]:
        """The settings a browser may see: what the tracker and the config API show."""
        return {
            "client_id": self.client_id,
            "privacy_level": self.privacy_level,
            "privacy_mode": self.privacy_level,
            "ip_collection": self.ip_collection,
            "honour_dnt": self.honours_dnt,
            "consent": self.consent_mode,
            "consent_required": self.consent_mode is ConsentMode.REQUIRED,
        }


_CLIENT_SETTING_KINDS: tuple[tuple[str, type[StrEnum]], ...] = (
    ("privacy_level", PrivacyLevel),
    ("ip_collection", IpCollection),
    ("consent_mode", ConsentMode),
    ("bot_policy", BotPolicy),
)


#: The hex digits whose top two bits are RFC 9562's variant, ``10``.
_UUID_VARIANT_DIGITS: Final = "89ab"


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7) in canonical text form.

    Time-ordered ids keep the unique index on ``event_id`` append-mostly, which matters
    at tens of thousands of inserts per second; random v4 ids would scatter index writes.
    Event ids stay text end to end (asyncpg encodes the uuid column from text in C), since
    building ``uuid.UUID`` objects is a measurable share of per-event cost.
    """
    # 48 bits of milliseconds, then random hex in which the version nibble becomes 7 and
    # the variant nibble one of 8, 9, a, b: text straight from bytes.hex, no integer maths.
    digits = ((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10)).hex()
    variant = _UUID_VARIANT_DIGITS[int(digits[16], 16) & 3]
    return f"{digits[:8]}-{digits[8:12]}-7{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"
