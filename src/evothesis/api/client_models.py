"""Request bodies of the client administration API.

Separate shapes for creating and for changing a client, both refusing unknown fields, so
a misspelt setting is a 422 rather than silently ignored. Secrets (``ip_salt``,
``export_credentials``, ``notify_secret``) are write-only: they come in here and never go
out.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from evothesis.domain import (
    BotPolicy,
    ConsentMode,
    ExportFormat,
    FileLayout,
    IpCollection,
    PrivacyLevel,
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
RetentionDays = Annotated[
    int,
    Field(
        ge=0,
        le=3650,
        description="Days a delta/iceberg table keeps removed files (time travel, deleted "
        "visitors) before vacuum; the operator's TABLE_RETENTION when unset.",
    ),
]
Destination = Annotated[str, Field(min_length=1, max_length=2000)]
Credentials = Annotated[
    dict[str, str], Field(description="Write-only; shown back only as has_export_credentials.")
]
Salt = Annotated[
    bytes,
    BeforeValidator(_salt_from_hex),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^([0-9a-fA-F]{2}){16,}$",
            "description": "Write-only hex IP salt; generated when omitted.",
        }
    ),
]

#: Unknown fields are refused; settings stay the domain's enum members on their way to the
#: store.
_STRICT: Final = ConfigDict(extra="forbid", validate_default=True)

#: Changes that may be ``null``: clearing the export destination or its credentials, the
#: schedule (back to EXPORT_SCHEDULE), the threshold, the webhook, the client's own table
#: retention (back to TABLE_RETENTION).
_NULLABLE_CHANGES: Final = frozenset(
    {
        "export_destination",
        "export_credentials",
        "export_schedule",
        "export_threshold",
        "notify_url",
        "notify_secret",
        "table_retention_days",
    }
)

Schedule = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="real-time, hourly (minute 0, UTC), daily (00:00 UTC) or a five-field "
        "cron expression in UTC; unset: EXPORT_SCHEDULE.",
        examples=["hourly", "*/15 * * * *"],
    ),
]
Threshold = Annotated[
    int, Field(ge=1, description="Deliver as soon as this many events are waiting.")
]
NotifyUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        description="Webhook told about paused and resumed destinations, failing and "
        "dead-lettered deliveries and finished replays.",
    ),
]
NotifySecret = Annotated[
    str,
    Field(
        min_length=16,
        max_length=200,
        description="Write-only: the secret notices are signed with (HMAC-SHA256).",
    ),
]


class ClientCreate(BaseModel):
    """``POST /api/v1/clients``: a client, its settings and the domains it owns."""

    model_config = _STRICT

    client_id: str = Field(examples=["client_acme_corp"])
    name: Name
    privacy_level: PrivacyLevel = PrivacyLevel.STANDARD
    ip_collection: IpCollection = IpCollection.FULL
    honour_dnt: bool = True
    consent_mode: ConsentMode = ConsentMode.NONE
    bot_policy: BotPolicy = BotPolicy.KEEP
    require_write_key: bool = Field(
        False,
        description="Refuse events that carry neither a page of the client (Origin/Referer) "
        "nor its write key; events are stored with how they were authenticated either way.",
    )
    export_destination: Destination | None = None
    export_format: ExportFormat = ExportFormat.JSON
    export_layout: FileLayout = FileLayout.DATED
    table_retention_days: RetentionDays | None = None
    export_credentials: Credentials | None = None
    export_schedule: Schedule | None = None
    export_threshold: Threshold | None = None
    notify_url: NotifyUrl | None = None
    notify_secret: NotifySecret | None = None
    ip_salt: Salt | None = None
    domains: list[str] = Field(default_factory=list, max_length=1000)

    def spec(self) -> ClientSpec:
        return ClientSpec(**self.model_dump(exclude={"client_id", "domains"}))


class ClientChanges(BaseModel):
    """``PATCH /api/v1/clients/{id}``: only the fields sent change.

    ``null`` clears the optional export settings; for every other field it is refused,
    since "no name" or "no privacy level" means nothing (and a null salt would silently
    rotate it, breaking continuity of hashed IPs).
    """

    model_config = _STRICT

    name: Name | None = None
    privacy_level: PrivacyLevel | None = None
    ip_collection: IpCollection | None = None
    honour_dnt: bool | None = None
    consent_mode: ConsentMode | None = None
    bot_policy: BotPolicy | None = None
    require_write_key: bool | None = None
    export_destination: Destination | None = None
    export_format: ExportFormat | None = None
    export_layout: FileLayout | None = None
    table_retention_days: RetentionDays | None = None
    export_credentials: Credentials | None = None
    export_schedule: Schedule | None = None
    export_threshold: Threshold | None = None
    notify_url: NotifyUrl | None = None
    notify_secret: NotifySecret | None = None
    ip_salt: Salt | None = None
    active: bool | None = None

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
