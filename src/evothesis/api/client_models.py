"""Request bodies of the client administration API.

Separate shapes for creating and for changing a client, both refusing unknown fields, so
a misspelt setting is a 422 rather than silently ignored. Secrets (``ip_salt``,
``export_credentials``, ``notify_secret``) are write-only: they come in here and never go
out.

Every setting has a title and a description, shared by both shapes: they document the API
(``/docs``), and the operations console builds its client forms from these models' JSON
schemas, so a setting added here appears in the console with its label and help.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.config import JsonDict

from evothesis.domain import (
    BotPolicy,
    ConsentMode,
    ExportFormat,
    FileLayout,
    IpCollection,
    PrivacyLevel,
    UserIdStorage,
)
from evothesis.registry.store import ClientSpec

__all__ = ["ClientChanges", "ClientCreate", "DomainAdd"]

#: The shortest IP salt accepted from an operator: HMAC keys below 128 bits are guessable.
MIN_SALT_BYTES: Final = 16


def _salt_from_hex(value: object) -> object:
    if not isinstance(value, str):
        return value  # let pydantic name the wrong type
    try:
        salt = bytes.fromhex(value)
    except ValueError:
        raise ValueError("ip_salt must be hexadecimal") from None
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(
            f"ip_salt must be at least {MIN_SALT_BYTES} bytes ({2 * MIN_SALT_BYTES} hex digits)"
        )
    return salt


Name = Annotated[str, Field(min_length=1, max_length=200)]
RetentionDays = Annotated[int, Field(ge=0, le=3650)]
Destination = Annotated[str, Field(min_length=1, max_length=2000)]
Credentials = dict[str, str]
Salt = Annotated[
    bytes,
    BeforeValidator(_salt_from_hex),
    WithJsonSchema({"type": "string", "pattern": "^([0-9a-fA-F]{2}){16,}$"}),
]
Schedule = Annotated[str, Field(min_length=1, max_length=200)]
Threshold = Annotated[int, Field(ge=1)]
NotifyUrl = Annotated[str, Field(min_length=1, max_length=2000)]
NotifySecret = Annotated[str, Field(min_length=16, max_length=200)]

#: Each setting's label and meaning, as /docs and the console show them.
SETTINGS: Final[dict[str, tuple[str, str]]] = {
    "client_id": (
        "Client id",
        "2-63 lowercase letters, digits, '_' or '-'. It names the client's folder in every "
        "bucket and cannot be changed.",
    ),
    "name": ("Name", "Display name, e.g. Acme Corp."),
    "privacy_level": (
        "Privacy level",
        "standard: IPs as collected; gdpr: IPs only as a keyed hash, Do Not Track always "
        "honoured; hipaa: no IPs, strict redaction, an audit record per batch.",
    ),
    "ip_collection": (
        "IP collection",
        "full, anonymized (shortened before it is stored) or none; above standard the "
        "privacy level decides.",
    ),
    "honour_dnt": (
        "Honour Do Not Track",
        "Drop events of browsers that send DNT or Sec-GPC (always on above standard).",
    ),
    "consent_mode": (
        "Consent",
        "none: no consent needed; required: events without consent are dropped; "
        "anonymous_without_consent: kept without session, visitor, user ids or IP.",
    ),
    "bot_policy": (
        "Bots",
        "keep: crawlers, headless browsers and monitors are stored, flagged is_bot; drop: "
        "acknowledged and not stored.",
    ),
    "require_write_key": (
        "Require the write key",
        "Refuse events that carry neither a page of the client (Origin/Referer) nor its "
        "write key; events are stored with how they were authenticated either way.",
    ),
    "user_id_storage": (
        "User ids",
        "What a Segment message's userId is stored as: kept, hashed (HMAC with the client's "
        "salt) or dropped; empty: the privacy level's (standard: kept, gdpr: hashed, hipaa: "
        "always dropped).",
    ),
    "export_destination": (
        "Export destination",
        "The client's own bucket: s3://bucket/prefix, gs://..., az://... or "
        "file:///folder. Empty: the operator's processed bucket.",
    ),
    "export_format": (
        "Export format",
        "json (seed 004's document: export metadata and the events), jsonl (one event a "
        "line), csv or parquet.",
    ),
    "export_layout": (
        "File layout",
        "dated: processed-events/<client>/YYYY/MM/DD/… as the seeds show; hive: "
        "export_date=YYYY-MM-DD/ folders (the delivery's day) that engines prune without "
        "configuration.",
    ),
    "table_retention_days": (
        "Table retention (days)",
        "Days a delta/iceberg table keeps removed files (time travel, deleted visitors) "
        "before vacuum; empty: the operator's TABLE_RETENTION.",
    ),
    "export_credentials": (
        "Export credentials",
        "Write-only: access_key_id, secret_access_key, session_token, endpoint, region. "
        "Shown back only as has_export_credentials.",
    ),
    "export_schedule": (
        "Delivery schedule",
        "real-time, hourly (minute 0, UTC), daily (00:00 UTC) or a five-field cron "
        "expression in UTC; empty: EXPORT_SCHEDULE.",
    ),
    "export_threshold": (
        "Delivery threshold",
        "Deliver as soon as this many events are waiting; empty: only on schedule.",
    ),
    "notify_url": (
        "Notification webhook",
        "An http(s) URL told about paused and resumed destinations, failing and "
        "dead-lettered deliveries and finished replays.",
    ),
    "notify_secret": (
        "Notification secret",
        "Write-only, 16-200 characters: the secret notices are signed with (HMAC-SHA256); "
        "needed with a webhook. Shown back only as has_notify_secret.",
    ),
    "ip_salt": (
        "IP salt",
        "Write-only, hexadecimal, at least 16 bytes; generated when omitted. A new salt "
        "changes every hashed IP from then on.",
    ),
    "domains": (
        "Domains",
        "Exact hosts (shop.acme.com), or *.acme.com for every subdomain of acme.com (not "
        "acme.com itself). A domain belongs to one client only.",
    ),
    "active": ("Active", "Whether events of the client's domains are accepted."),
}


#: Schedules as /docs offers them for a try.
SCHEDULES: Final = ["hourly", "*/15 * * * *"]

#: Settings that are never shown back (JSON Schema's ``writeOnly``).
WRITE_ONLY: Final = frozenset({"export_credentials", "notify_secret", "ip_salt"})


def _setting(name: str, default: Any = None, **constraints: Any) -> Any:
    """The field of setting ``name``, with its title and description."""
    title, description = SETTINGS[name]
    extra: JsonDict | None = {"writeOnly": True} if name in WRITE_ONLY else None
    return Field(
        default, title=title, description=description, json_schema_extra=extra, **constraints
    )


#: Unknown fields are refused; settings stay the domain's enum members on their way to the
#: store.
_STRICT: Final = ConfigDict(extra="forbid", validate_default=True)

#: Changes that may be ``null``: clearing the export destination or its credentials, the
#: schedule (back to EXPORT_SCHEDULE), the threshold, the webhook, the user-id storage (back
#: to the privacy level's), the client's own table retention (back to TABLE_RETENTION).
_NULLABLE_CHANGES: Final = frozenset(
    {
        "export_destination",
        "export_credentials",
        "export_schedule",
        "export_threshold",
        "notify_url",
        "notify_secret",
        "user_id_storage",
        "table_retention_days",
    }
)


class ClientCreate(BaseModel):
    """``POST /api/v1/clients``: a client, its settings and the domains it owns."""

    model_config = _STRICT

    client_id: str = _setting("client_id", ..., examples=["client_acme_corp"])
    name: Name = _setting("name", ...)
    privacy_level: PrivacyLevel = _setting("privacy_level", PrivacyLevel.STANDARD)
    ip_collection: IpCollection = _setting("ip_collection", IpCollection.FULL)
    honour_dnt: bool = _setting("honour_dnt", True)
    consent_mode: ConsentMode = _setting("consent_mode", ConsentMode.NONE)
    bot_policy: BotPolicy = _setting("bot_policy", BotPolicy.KEEP)
    require_write_key: bool = _setting("require_write_key", False)
    user_id_storage: UserIdStorage | None = _setting("user_id_storage")
    export_destination: Destination | None = _setting("export_destination")
    export_format: ExportFormat = _setting("export_format", ExportFormat.JSON)
    export_layout: FileLayout = _setting("export_layout", FileLayout.DATED)
    table_retention_days: RetentionDays | None = _setting("table_retention_days")
    export_credentials: Credentials | None = _setting("export_credentials")
    export_schedule: Schedule | None = _setting("export_schedule", examples=SCHEDULES)
    export_threshold: Threshold | None = _setting("export_threshold")
    notify_url: NotifyUrl | None = _setting("notify_url")
    notify_secret: NotifySecret | None = _setting("notify_secret")
    ip_salt: Salt | None = _setting("ip_salt")
    domains: list[str] = _setting("domains", [], max_length=1000)

    def spec(self) -> ClientSpec:
        return ClientSpec(**self.model_dump(exclude={"client_id", "domains"}))


class ClientChanges(BaseModel):
    """``PATCH /api/v1/clients/{id}``: only the fields sent change.

    ``null`` clears the optional export settings and the user-id choice (back to the
    privacy level's default); for every other field it is refused,
    since "no name" or "no privacy level" means nothing (and a null salt would silently
    rotate it, breaking continuity of hashed IPs).
    """

    model_config = _STRICT

    name: Name | None = _setting("name")
    privacy_level: PrivacyLevel | None = _setting("privacy_level")
    ip_collection: IpCollection | None = _setting("ip_collection")
    honour_dnt: bool | None = _setting("honour_dnt")
    consent_mode: ConsentMode | None = _setting("consent_mode")
    bot_policy: BotPolicy | None = _setting("bot_policy")
    require_write_key: bool | None = _setting("require_write_key")
    user_id_storage: UserIdStorage | None = _setting("user_id_storage")
    export_destination: Destination | None = _setting("export_destination")
    export_format: ExportFormat | None = _setting("export_format")
    export_layout: FileLayout | None = _setting("export_layout")
    table_retention_days: RetentionDays | None = _setting("table_retention_days")
    export_credentials: Credentials | None = _setting("export_credentials")
    export_schedule: Schedule | None = _setting("export_schedule", examples=SCHEDULES)
    export_threshold: Threshold | None = _setting("export_threshold")
    notify_url: NotifyUrl | None = _setting("notify_url")
    notify_secret: NotifySecret | None = _setting("notify_secret")
    ip_salt: Salt | None = _setting("ip_salt")
    active: bool | None = _setting("active")

    @model_validator(mode="after")
    def _refuse_meaningless_nulls(self) -> ClientChanges:
        nulls = sorted(
            name
            for name in self.model_fields_set - _NULLABLE_CHANGES
            if getattr(self, name) is None
        )
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields the request set, as ``RegistryStore.update_client`` takes them."""
        return self.model_dump(include=self.model_fields_set)


class DomainAdd(BaseModel):
    """``POST /api/v1/clients/{id}/domains``: an exact host or a ``*.`` wildcard."""

    model_config = _STRICT

    domain: str = Field(min_length=1, max_length=300, examples=["www.acme.com", "*.acme.com"])
