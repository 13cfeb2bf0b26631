"""Typed settings read once from the environment, with the seed's variable names.

Plain data: settings are validated here (a bad value stops start-up with the variable
named) and turned into working objects in one place only, ``services.py``. Nothing reads
the environment at import time, so tests can vary settings freely. Every field's
description is its line in the ``--help`` environment table (``environment_help``).

Users copy settings from the seed documents, which name some of them differently (seed 004
calls the backup bucket ``S3_BACKUP_BUCKET`` and the processed bucket's credentials
``CLIENT_S3_ACCESS_KEY``/``CLIENT_S3_SECRET_KEY``). Every such name is read too
(``OTHER_NAMES``); two names of one setting that disagree stop start-up rather than one of
them being silently ignored, and a variable that looks like a setting but that nothing reads
(a misspelt name) is warned about (``check_environment``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from evothesis.domain import ExportFormat
from evothesis.durations import parse_duration, parse_interval
from evothesis.errors import ConflictingSettings
from evothesis.schedules import DeliverySchedule, parse_schedule
from evothesis.storage.events import DEDUP_WINDOW_S, MAX_DEDUP_WINDOW_S

__all__ = [
    "DEPLOYMENT_VARIABLES",
    "KNOWN_PREFIXES",
    "OTHER_NAMES",
    "Environment",
    "EnvironmentCheck",
    "Settings",
    "check_environment",
    "environment_help",
    "read_settings",
    "setting_names",
]

#: Setting (its primary variable) -> the other names the seed documents give it.
OTHER_NAMES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "PROCESSED_S3_BUCKET": ("CLIENT_S3_BUCKET",),
        "PROCESSED_S3_ACCESS_KEY": ("CLIENT_S3_ACCESS_KEY",),
        "PROCESSED_S3_SECRET_KEY": ("CLIENT_S3_SECRET_KEY",),
        "BACKUP_S3_BUCKET": ("S3_BACKUP_BUCKET",),
    }
)

#: Beginnings of the names Evothesis reads: a variable that starts like one but is none is
#: most likely a misspelt setting.
KNOWN_PREFIXES: Final = (
    "EVOTHESIS_",
    "DATABASE_",
    "PIXEL_MANAGEMENT_",
    "REGISTRY_",
    "RAW_S3_",
    "PROCESSED_S3_",
    "CLIENT_S3_",
    "BACKUP_S3_",
    "S3_",
    "EXPORT_",
    "BUFFER_",
    "WRITE_BUFFER_",
    "SPOOL_",
    "EVENT_",
    "EVENTS_",
    "BILLING_",
    "GEOIP_",
    "CONSOLE_",
    "TABLE_",
    "ICEBERG_",
)

#: Names with a known prefix that the deployment files read, not Evothesis
#: (docker-compose.yml: the image tag and the stack's network).
DEPLOYMENT_VARIABLES: Final = frozenset({"EVOTHESIS_VERSION", "EVOTHESIS_SUBNET"})


def _names(primary: str) -> AliasChoices:
    """A setting's variable and the seed's other names for it, the primary one first."""
    return AliasChoices(primary, *OTHER_NAMES.get(primary, ()))


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Environment = Literal["development", "test", "production"]


def _networks(value: object) -> object:
    """``TRUSTED_PROXIES`` as comma-separated IPs or CIDRs."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [ipaddress.ip_network(str(item), strict=False) for item in value]
    return value


def _octal(value: object) -> object:
    """``EVOTHESIS_UMASK`` as operators write it: ``077``, ``0o077`` or ``0077``."""
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not text or any(c not in "01234567" for c in text):
            raise ValueError("must be an octal umask such as 077 or 027")
        return int(text, 8)
    return value


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


#: A duration as operators write it (``90s``, ``5m``, ``6h``), held in seconds.
Duration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]


def _interval(value: object) -> float | None:
    return parse_interval(str(value))


def _schedule(value: object) -> DeliverySchedule:
    return value if isinstance(value, DeliverySchedule) else parse_schedule(str(value))


#: ``EXPORT_INTERVAL``: seconds between scheduled raw export rounds, ``None`` for ``off``.
Interval = Annotated[float | None, BeforeValidator(_interval)]
#: ``EXPORT_SCHEDULE``: when clients without a schedule of their own get their files.
Schedule = Annotated[DeliverySchedule, NoDecode, BeforeValidator(_schedule)]


class Settings(BaseSettings):
    """Every knob Evothesis reads; a field's alias is its environment variable."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    # ------------------------------------------------------------------ process and data
    environment: Environment = Field(
        "development",
        alias="ENVIRONMENT",
        description="development | test | production; production refuses unsafe defaults",
    )
    data_dir: Path = Field(
        Path(".evothesis"),
        alias="EVOTHESIS_DATA_DIR",
        description="data folder of the embedded default (PostgreSQL, buckets, spool)",
    )
    cache_dir: Path | None = Field(
        None,
        alias="EVOTHESIS_CACHE_DIR",
        description="folder of what is derived from installed data on first start (the "
        "compact geo table), shared by the processes of a deployment; unset = "
        "EVOTHESIS_DATA_DIR/cache",
    )
    log_level: str = Field("INFO", alias="LOG_LEVEL", description="DEBUG | INFO | WARNING")
    serve_demo: bool = Field(
        True, alias="EVOTHESIS_SERVE_DEMO", description="serve the demo site at / from serve"
    )
    umask: Annotated[int, BeforeValidator(_octal)] = Field(
        0o077,
        ge=0,
        le=0o777,
        alias="EVOTHESIS_UMASK",
        description="permissions kept from files and folders this process creates (data "
        "folder, local buckets, spool, key files); 077 = owner only (default), 027 adds "
        "the group's read",
    )

    # -------------------------------------------------------------------------- database
    database_url: str | None = Field(
        None,
        alias="DATABASE_URL",
        description="PostgreSQL URL; unset = an embedded server under EVOTHESIS_DATA_DIR",
    )
    pool_size: int = Field(
        10, ge=1, le=500, alias="DATABASE_POOL_SIZE", description="connections kept open"
    )
    max_overflow: int = Field(
        20,
        ge=0,
        le=500,
        alias="DATABASE_MAX_OVERFLOW",
        description="extra connections under load",
    )

    # ------------------------------------------------------------- registry and access
    pixel_management_url: str | None = Field(
        None,
        alias="PIXEL_MANAGEMENT_URL",
        description="pixel-management service URL; unset = the registry in this database",
    )
    pixel_management_token: str | None = Field(
        None,
        alias="PIXEL_MANAGEMENT_TOKEN",
        description="service token collectors present to pixel management to read client "
        "secrets (IP salt, write-key digest)",
    )
    admin_token: str | None = Field(
        None,
        alias="EVOTHESIS_ADMIN_TOKEN",
        description="bearer token of the admin API; the admin API is closed when unset",
    )
    operator_token: str | None = Field(
        None,
        alias="EVOTHESIS_OPERATOR_TOKEN",
        description="read-only bearer token for stored events, counts, pipeline status and "
        "/metrics (the admin token reads too); unset = closed outside development",
    )
    console_session_s: Duration = Field(
        8 * 3600.0,
        alias="CONSOLE_SESSION_TTL",
        description="how long a sign-in to the operations console (/console/) lasts "
        "(default 8h); changing a token ends the sessions opened with it",
    )
    secret_key: str | None = Field(
        None,
        alias="EVOTHESIS_SECRET_KEY",
        description="Fernet key(s) sealing client secrets, newest first; development falls "
        "back to a key file in EVOTHESIS_DATA_DIR",
    )
    collector_url: str | None = Field(
        None,
        alias="EVOTHESIS_COLLECTOR_URL",
        description="collector URL baked into /pixel/{client_id}/tracking.js; unset = the "
        "origin that served the script",
    )
    registry_cache_ttl_s: float = Field(
        60.0, gt=0, alias="REGISTRY_CACHE_TTL", description="seconds a domain's client is cached"
    )
    registry_negative_ttl_s: float = Field(
        10.0,
        gt=0,
        alias="REGISTRY_NEGATIVE_TTL",
        description="seconds an unknown domain is remembered",
    )
    registry_stale_s: float = Field(
        3600.0,
        ge=0,
        alias="REGISTRY_STALE_TTL",
        description="seconds expired answers are served while the registry is unreachable, "
        "also from the registry snapshot by a collector restarted meanwhile",
    )
    registry_timeout_s: float = Field(
        2.0, gt=0, alias="REGISTRY_TIMEOUT", description="seconds a registry lookup may take"
    )
    trusted_proxies: Annotated[list[IPNetwork], NoDecode, BeforeValidator(_networks)] = Field(
        default_factory=lambda: [
            ipaddress.ip_network("127.0.0.1/32"),
            ipaddress.ip_network("::1/128"),
        ],
        alias="TRUSTED_PROXIES",
        description="IPs/CIDRs whose X-Forwarded-For and X-Real-IP are believed",
    )

    # ---------------------------------------------------------------------- HTTP edge
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        alias="HEADER_READ_TIMEOUT",
        description="seconds a connection may take to send a request line and headers, from "
        "connecting or from a following request's first byte; then 408, or closed if "
        "nothing came",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        alias="MAX_HEADER_BYTES",
        description="largest request line plus headers; larger is a 431",
    )
    max_headers: int = Field(
        100, ge=1, alias="MAX_HEADERS", description="most header fields a request may have"
    )
    max_idle_connections: int = Field(
        1000,
        ge=1,
        alias="MAX_IDLE_CONNECTIONS",
        description="connections per process not in a request (new, kept alive, sending "
        "headers); past it the longest idle one is closed",
    )

    # ------------------------------------------------------------------------- intake
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        alias="MAX_BODY_BYTES",
        description="largest accepted body (a gzip body of /v1/*: once decompressed)",
    )
    max_batch_events: int = Field(
        500,
        ge=1,
        alias="MAX_BATCH_EVENTS",
        description="most events (or /v1 messages) in one batch",
    )
    body_timeout_s: float = Field(
        15.0, gt=0, alias="BODY_READ_TIMEOUT", description="seconds a body may take to arrive"
    )
    event_max_properties: int = Field(
        300, ge=1, alias="EVENT_MAX_PROPERTIES", description="properties in one event's data"
    )
    event_max_key_length: int = Field(
        200, ge=1, alias="EVENT_MAX_KEY_LENGTH", description="characters of a property name"
    )
    event_max_string_length: int = Field(
        4096,
        ge=32,
        alias="EVENT_MAX_STRING_LENGTH",
        description="characters of a string value; longer ones are truncated",
    )
    event_max_depth: int = Field(
        40, ge=1, le=64, alias="EVENT_MAX_DEPTH", description="nesting of objects and lists"
    )
    enrichment: bool = Field(
        True,
        alias="ENRICHMENT",
        description="user agent, bot, geo, referrer and UTM columns (off: they stay empty "
        "and bots are never dropped)",
    )
    geoip_database: Path | None = Field(
        None,
        alias="GEOIP_DATABASE",
        description="MaxMind-format .mmdb file (Country or City) for geo; unset = "
        "geoip2fast's bundled country data (compacted into EVOTHESIS_CACHE_DIR on first "
        "start)",
    )

    # ------------------------------------------------------------------ write buffer
    buffer_max_events: int = Field(
        5000, ge=1, alias="WRITE_BUFFER_MAX_EVENTS", description="events per COPY flush at most"
    )
    buffer_max_delay_ms: float = Field(
        2.0,
        ge=0,
        alias="WRITE_BUFFER_MAX_DELAY_MS",
        description="milliseconds a flush waits to coalesce requests",
    )
    buffer_flush_concurrency: int = Field(
        4, ge=1, alias="WRITE_BUFFER_FLUSH_CONCURRENCY", description="flushes in flight at once"
    )
    spool_dir: Path | None = Field(
        None,
        alias="SPOOL_DIR",
        description="disk spool while PostgreSQL is unreachable; unset = EVOTHESIS_DATA_DIR/spool",
    )
    spool_max_bytes: int = Field(
        1024**3,
        ge=0,
        alias="SPOOL_MAX_BYTES",
        description="disk spool size limit; 0 turns the spool off",
    )

    # --------------------------------------------------------------------- buckets
    raw_bucket: str | None = Field(
        None,
        alias="RAW_S3_BUCKET",
        description="raw export bucket (name or URL); unset = EVOTHESIS_DATA_DIR/buckets/raw",
    )
    processed_bucket: str | None = Field(
        None,
        alias="PROCESSED_S3_BUCKET",
        validation_alias=_names("PROCESSED_S3_BUCKET"),
        description="processed exports of clients without a bucket of their own; unset = "
        "EVOTHESIS_DATA_DIR/buckets/processed",
    )
    backup_bucket: str | None = Field(
        None,
        alias="BACKUP_S3_BUCKET",
        validation_alias=_names("BACKUP_S3_BUCKET"),
        description="metering records for billing; unset = EVOTHESIS_DATA_DIR/buckets/backup",
    )
    s3_endpoint: str | None = Field(
        None,
        alias="S3_ENDPOINT_URL",
        description="S3-compatible endpoint (MinIO, R2, ...); credentials: AWS_* or the "
        "*_S3_ACCESS_KEY / *_S3_SECRET_KEY pairs",
    )
    s3_region: str | None = Field(None, alias="S3_REGION", description="S3 region")
    raw_access_key: str | None = Field(
        None, alias="RAW_S3_ACCESS_KEY", description="access key of the raw bucket"
    )
    raw_secret_key: str | None = Field(
        None, alias="RAW_S3_SECRET_KEY", description="secret key of the raw bucket"
    )
    processed_access_key: str | None = Field(
        None,
        alias="PROCESSED_S3_ACCESS_KEY",
        validation_alias=_names("PROCESSED_S3_ACCESS_KEY"),
        description="access key of the processed bucket",
    )
    processed_secret_key: str | None = Field(
        None,
        alias="PROCESSED_S3_SECRET_KEY",
        validation_alias=_names("PROCESSED_S3_SECRET_KEY"),
        description="secret key of the processed bucket",
    )
    backup_access_key: str | None = Field(
        None, alias="BACKUP_S3_ACCESS_KEY", description="access key of the backup bucket"
    )
    backup_secret_key: str | None = Field(
        None, alias="BACKUP_S3_SECRET_KEY", description="secret key of the backup bucket"
    )

    # ---------------------------------------------------------------------- export
    export_batch_size: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        alias="EXPORT_BATCH_SIZE",
        description="events per export batch; a backlog this big exports at once",
    )
    export_schedule: Schedule = Field(
        parse_schedule("hourly"),
        alias="EXPORT_SCHEDULE",
        description="delivery schedule of clients without one: hourly (minute 0, UTC), "
        "daily (00:00 UTC), real-time or a cron expression in UTC (default hourly)",
    )
    export_interval_s: Interval = Field(
        60.0,
        alias="EXPORT_INTERVAL",
        description="how often the raw export runs: 30s, 1m, 5m, or off (on demand only) "
        "(default 1m)",
    )
    export_notice_after_s: Duration = Field(
        3600.0,
        alias="EXPORT_NOTICE_AFTER",
        description="a delivery failing this long is told to its client's webhook (default 1h)",
    )
    export_dead_letter_after_s: Duration = Field(
        86400.0,
        alias="EXPORT_DEAD_LETTER_AFTER",
        description="a delivery failing this long is no longer retried until retried by "
        "hand (default 24h)",
    )
    export_format: ExportFormat = Field(
        ExportFormat.JSON,
        alias="EXPORT_FORMAT",
        description="processed format when a client has none: json | jsonl | csv | parquet "
        "| delta | iceberg",
    )
    table_retention_s: Duration = Field(
        7 * 86400.0,
        alias="TABLE_RETENTION",
        description="how long delta/iceberg tables keep removed files (time travel, deleted "
        "visitors) before vacuum, unless the client sets its own (default 7d)",
    )
    iceberg_catalog: str | None = Field(
        None,
        alias="ICEBERG_CATALOG",
        description="catalog of iceberg tables: a PostgreSQL URL (SQL catalog) or an "
        "http(s) REST catalog URL; unset = the SQL catalog in Evothesis' own database",
    )
    buffer_retention_s: Duration = Field(
        6 * 3600.0,
        alias="BUFFER_RETENTION",
        description="how long exported events stay in PostgreSQL at least (default 6h); "
        "they go a day at a time (UTC, by arrival), once that day and the next have ended "
        "(BUFFER_DEDUP_WINDOW looks into the next day)",
    )
    dedup_window_s: Duration = Field(
        DEDUP_WINDOW_S,
        le=MAX_DEDUP_WINDOW_S,
        alias="BUFFER_DEDUP_WINDOW",
        description="a copy of an event id (a retry) arriving within this long of the first "
        "copy is not stored again, also across midnight; on the same UTC day, always (at "
        "most 24h; default 6h: flushes this close to midnight pay for a check of the day "
        "before and after)",
    )
    export_lease_s: Duration = Field(
        300.0,
        alias="EXPORT_LEASE",
        description="how long an exporter holds a batch before another may take it over "
        "(default 5m)",
    )
    export_in_serve: bool = Field(
        True,
        alias="EXPORT_IN_SERVE",
        description="run the export schedule inside serve (off: a separate evothesis worker)",
    )
    billing_rate_per_1000_events: Decimal = Field(
        Decimal("0.01"),
        ge=0,
        alias="BILLING_RATE_PER_1000_EVENTS",
        description="dollars per 1,000 accepted events in `evothesis billing report`",
    )
    recent_max_limit: int = Field(
        1000, ge=1, alias="EVENTS_RECENT_MAX_LIMIT", description="most rows /events/recent shows"
    )
    client_name: str | None = Field(
        None,
        alias="CLIENT_NAME",
        description="the client this deployment serves (seed 004's VM-per-client template); "
        "shown in /export/config, attributes nothing",
    )

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    @property
    def spool_folder(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    @property
    def cache_folder(self) -> Path:
        return self.cache_dir or self.data_dir / "cache"

    @property
    def pool_max_size(self) -> int:
        """The seed sizes pools as pool_size + max_overflow; asyncpg wants min and max."""
        return self.pool_size + self.max_overflow


#: Defaults shown in words where the value itself says little.
_SHOWN_DEFAULTS: Final = {
    "EXPORT_SCHEDULE",
    "EXPORT_INTERVAL",
    "EXPORT_NOTICE_AFTER",
    "EXPORT_DEAD_LETTER_AFTER",
    "BUFFER_RETENTION",
    "TABLE_RETENTION",
    "EXPORT_LEASE",
    "EVOTHESIS_UMASK",
    "CONSOLE_SESSION_TTL",
}


def _shown_default(alias: str, default: Any) -> str | None:
    if default is None or alias in _SHOWN_DEFAULTS:
        return None
    if isinstance(default, list):
        return ", ".join(str(item) for item in default)
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def environment_help() -> str:
    """The block of environment variables appended to CLI help texts, one line per setting,
    generated from the fields so it cannot miss one."""
    lines = []
    for field in Settings.model_fields.values():
        alias = str(field.alias)
        shown = _shown_default(alias, field.get_default(call_default_factory=True))
        meaning = field.description or ""
        if alias in OTHER_NAMES:
            meaning += f" (also read as {', '.join(OTHER_NAMES[alias])})"
        lines.append((alias, meaning + (f" (default {shown})" if shown is not None else "")))
    width = max(len(name) for name, _ in lines)
    return "Environment variables:\n\n" + "\n\n".join(
        f"  {name.ljust(width)}  {meaning}" for name, meaning in lines
    )


def setting_names() -> frozenset[str]:
    """Every variable Evothesis reads: each setting's name and the seed's other names."""
    primary = {str(field.alias) for field in Settings.model_fields.values()}
    return frozenset(primary.union(*OTHER_NAMES.values()))


@dataclass(frozen=True, slots=True)
class EnvironmentCheck:
    """What is wrong with an environment before its values are even parsed."""

    #: Pairs of names of one setting that are both set, to different values: the one
    #: Evothesis would read first, then the other.
    conflicts: tuple[tuple[str, str], ...]
    #: Variables with a known prefix that nothing reads, sorted.
    unread: tuple[str, ...]

    def conflict_message(self) -> str | None:
        """One line naming every pair (never their values, which may be secrets)."""
        if not self.conflicts:
            return None
        pairs = "; ".join(f"{first} and {second}" for first, second in self.conflicts)
        return (
            f"{pairs}: two names of one setting are set to different values; "
            "set one of them, or both to the same value"
        )

    def unread_message(self) -> str | None:
        if not self.unread:
            return None
        return (
            f"Nothing reads {', '.join(self.unread)}: a misspelt setting? "
            "(`evothesis --help` lists every variable Evothesis reads)"
        )


def check_environment(environ: Mapping[str, str]) -> EnvironmentCheck:
    """The conflicts and unread names of ``environ``; a pure function of it.

    Names are compared as pydantic-settings reads them, without regard to case; an empty
    value is a value (``X=`` and ``Y=z`` disagree).
    """
    by_name = {name.upper(): (name, value) for name, value in environ.items()}
    conflicts: list[tuple[str, str]] = []
    for primary, others in OTHER_NAMES.items():
        present = [by_name[name] for name in (primary, *others) if name in by_name]
        for name, value in present[1:]:
            if value != present[0][1]:
                conflicts.append((present[0][0], name))
    known = setting_names() | DEPLOYMENT_VARIABLES
    unread = sorted(
        name
        for upper, (name, _) in by_name.items()
        if upper.startswith(KNOWN_PREFIXES) and upper not in known
    )
    return EnvironmentCheck(tuple(conflicts), tuple(unread))


def read_settings() -> tuple[Settings, EnvironmentCheck]:
    """``Settings`` from the process environment, refused with ``ConflictingSettings`` when
    two names of one setting disagree; the check comes back too, for the caller to warn
    about unread names once its logging is set up."""
    check = check_environment(os.environ)
    message = check.conflict_message()
    if message is not None:
        raise ConflictingSettings(message)
    return Settings(), check
