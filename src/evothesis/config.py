"""Typed settings read once from the environment, with the seed's variable names.

Settings are built explicitly (``Settings()`` in the CLI, ``Settings(...)`` in tests) and
handed to ``create_app``; nothing reads the environment at import time, so tests can vary
settings freely.
"""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from evothesis.enrich.limits import EventLimits
from evothesis.export.buckets import BucketSpec, ExportBuckets, bucket_url, s3_options
from evothesis.export.timing import parse_duration, parse_schedule
from evothesis.registry.secrets import SecretBox, load_secret_box

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob the collector reads; the field's alias is the environment variable."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    environment: Literal["development", "test", "production"] = Field(
        "development", alias="ENVIRONMENT"
    )
    database_url: str | None = Field(
        None,
        alias="DATABASE_URL",
        description="PostgreSQL to use; when unset an embedded server is started under "
        "EVOTHESIS_DATA_DIR.",
    )
    data_dir: Path = Field(Path(".evothesis"), alias="EVOTHESIS_DATA_DIR")
    pool_size: int = Field(10, ge=1, le=500, alias="DATABASE_POOL_SIZE")
    max_overflow: int = Field(20, ge=0, le=500, alias="DATABASE_MAX_OVERFLOW")

    pixel_management_url: str | None = Field(
        None,
        alias="PIXEL_MANAGEMENT_URL",
        description="Pixel-management service to resolve domains over HTTP; when unset the "
        "registry is read from this process's database.",
    )
    pixel_management_token: str | None = Field(
        None,
        alias="PIXEL_MANAGEMENT_TOKEN",
        description="Service token collectors present to pixel management to read client "
        "secrets (IP salt, write-key digest).",
    )
    admin_token: str | None = Field(
        None,
        alias="EVOTHESIS_ADMIN_TOKEN",
        description="Bearer token of the admin API; the admin API is closed when unset.",
    )
    secret_key: str | None = Field(
        None,
        alias="EVOTHESIS_SECRET_KEY",
        description="Fernet key(s) encrypting client secrets at rest; development falls "
        "back to a key file in EVOTHESIS_DATA_DIR.",
    )
    collector_url: str | None = Field(
        None,
        alias="EVOTHESIS_COLLECTOR_URL",
        description="Public URL of the collector, baked into /pixel/{client_id}/tracking.js; "
        "unset = the origin that served the script.",
    )
    registry_cache_ttl_s: float = Field(60.0, gt=0, alias="REGISTRY_CACHE_TTL")
    registry_negative_ttl_s: float = Field(10.0, gt=0, alias="REGISTRY_NEGATIVE_TTL")
    registry_stale_s: float = Field(3600.0, ge=0, alias="REGISTRY_STALE_TTL")
    registry_timeout_s: float = Field(2.0, gt=0, alias="REGISTRY_TIMEOUT")

    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=lambda: [
            ipaddress.ip_network("127.0.0.1/32"),
            ipaddress.ip_network("::1/128"),
        ],
        alias="TRUSTED_PROXIES",
        description="Peers (IPs or CIDRs) whose X-Forwarded-For/X-Real-IP is believed.",
    )

    max_body_bytes: int = Field(1024 * 1024, ge=1024, alias="MAX_BODY_BYTES")
    max_batch_events: int = Field(500, ge=1, alias="MAX_BATCH_EVENTS")
    body_timeout_s: float = Field(15.0, gt=0, alias="BODY_READ_TIMEOUT")

    buffer_max_events: int = Field(5000, ge=1, alias="WRITE_BUFFER_MAX_EVENTS")
    buffer_max_delay_ms: float = Field(2.0, ge=0, alias="WRITE_BUFFER_MAX_DELAY_MS")
    buffer_flush_concurrency: int = Field(4, ge=1, alias="WRITE_BUFFER_FLUSH_CONCURRENCY")

    spool_dir: Path | None = Field(
        None,
        alias="SPOOL_DIR",
        description="Folder of the disk spool used while PostgreSQL is unreachable "
        "(default EVOTHESIS_DATA_DIR/spool).",
    )
    spool_max_bytes: int = Field(1024**3, ge=0, alias="SPOOL_MAX_BYTES")

    raw_bucket: str | None = Field(
        None,
        alias="RAW_S3_BUCKET",
        description="Raw export bucket (name or URL); unset = EVOTHESIS_DATA_DIR/buckets/raw.",
    )
    processed_bucket: str | None = Field(
        None,
        alias="PROCESSED_S3_BUCKET",
        description="Processed exports of clients without a destination of their own.",
    )
    client_bucket: str | None = Field(
        None, alias="CLIENT_S3_BUCKET", description="The seed's name for PROCESSED_S3_BUCKET."
    )
    backup_bucket: str | None = Field(
        None, alias="BACKUP_S3_BUCKET", description="Backup bucket holding metering records."
    )
    s3_endpoint: str | None = Field(None, alias="S3_ENDPOINT_URL")
    s3_region: str | None = Field(None, alias="S3_REGION")
    raw_access_key: str | None = Field(None, alias="RAW_S3_ACCESS_KEY")
    raw_secret_key: str | None = Field(None, alias="RAW_S3_SECRET_KEY")
    processed_access_key: str | None = Field(None, alias="PROCESSED_S3_ACCESS_KEY")
    processed_secret_key: str | None = Field(None, alias="PROCESSED_S3_SECRET_KEY")
    backup_access_key: str | None = Field(None, alias="BACKUP_S3_ACCESS_KEY")
    backup_secret_key: str | None = Field(None, alias="BACKUP_S3_SECRET_KEY")

    export_batch_size: int = Field(10_000, ge=1, le=1_000_000, alias="EXPORT_BATCH_SIZE")
    export_schedule: str = Field("1m", alias="EXPORT_SCHEDULE")
    export_format: Literal["json", "csv", "parquet"] = Field("json", alias="EXPORT_FORMAT")
    buffer_retention: str = Field("6h", alias="BUFFER_RETENTION")
    export_lease: str = Field("5m", alias="EXPORT_LEASE")
    export_in_serve: bool = Field(True, alias="EXPORT_IN_SERVE")

    billing_rate_per_1000_events: Decimal = Field(
        Decimal("0.01"),
        ge=0,
        alias="BILLING_RATE_PER_1000_EVENTS",
        description="Dollars per 1,000 accepted events in `evothesis billing report`.",
    )

    enrichment: bool = Field(
        True,
        alias="ENRICHMENT",
        description="Add user agent, bot, geo, referrer and UTM columns to events "
        "(off: those columns stay empty and bots are never dropped).",
    )
    geoip_database: Path | None = Field(
        None,
        alias="GEOIP_DATABASE",
        description="MaxMind-format .mmdb file (GeoIP2/GeoLite2 Country or City) for geo "
        "enrichment; unset = geoip2fast's bundled country data.",
    )
    event_max_properties: int = Field(300, ge=1, alias="EVENT_MAX_PROPERTIES")
    event_max_key_length: int = Field(200, ge=1, alias="EVENT_MAX_KEY_LENGTH")
    event_max_string_length: int = Field(4096, ge=32, alias="EVENT_MAX_STRING_LENGTH")
    event_max_depth: int = Field(40, ge=1, le=64, alias="EVENT_MAX_DEPTH")

    recent_max_limit: int = Field(1000, ge=1, alias="EVENTS_RECENT_MAX_LIMIT")
    serve_demo: bool = Field(True, alias="EVOTHESIS_SERVE_DEMO")
    log_level: str = Field("INFO", alias="LOG_LEVEL")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies_csv(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            return [ipaddress.ip_network(str(v), strict=False) for v in value]
        return value

    @field_validator("export_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @field_validator("buffer_retention", "export_lease")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be positive")
        return value

    @property
    def export_interval_s(self) -> float | None:
        """Seconds between scheduled exports; ``None`` when exports run on demand only."""
        return parse_schedule(self.export_schedule)

    @property
    def buffer_retention_s(self) -> float:
        return parse_duration(self.buffer_retention)

    @property
    def export_lease_s(self) -> float:
        return parse_duration(self.export_lease)

    def buckets(self) -> ExportBuckets:
        """The operator's three buckets, local folders under the data directory when unset."""
        root = self.data_dir / "buckets"

        def spec(value: str | None, name: str, key: str | None, secret: str | None) -> BucketSpec:
            url = bucket_url(value, default_folder=root / name)
            options = (
                {}
                if url.startswith("file://")
                else s3_options(
                    endpoint=self.s3_endpoint,
                    region=self.s3_region,
                    access_key=key,
                    secret_key=secret,
                )
            )
            return BucketSpec(url, options)

        return ExportBuckets(
            raw=spec(self.raw_bucket, "raw", self.raw_access_key, self.raw_secret_key),
            processed=spec(
                self.processed_bucket or self.client_bucket,
                "processed",
                self.processed_access_key,
                self.processed_secret_key,
            ),
            backup=spec(
                self.backup_bucket, "backup", self.backup_access_key, self.backup_secret_key
            ),
        )

    @property
    def event_limits(self) -> EventLimits:
        return EventLimits(
            max_properties=self.event_max_properties,
            max_key_length=self.event_max_key_length,
            max_string_length=self.event_max_string_length,
            max_depth=self.event_max_depth,
        )

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    def secret_box(self) -> SecretBox:
        """The box sealing client secrets; raises ``SecretKeyError`` when unconfigured."""
        return load_secret_box(
            self.secret_key,
            data_dir=self.data_dir,
            allow_key_file=self.environment != "production",
        )

    @property
    def spool_folder(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    @property
    def pool_max_size(self) -> int:
        """The seed sizes pools as pool_size + max_overflow; asyncpg wants min and max."""
        return self.pool_size + self.max_overflow


#: Environment variables shown in ``--help`` (name, meaning).
ENVIRONMENT_HELP: tuple[tuple[str, str], ...] = (
    ("DATABASE_URL", "PostgreSQL URL; unset = embedded PostgreSQL under EVOTHESIS_DATA_DIR"),
    ("EVOTHESIS_DATA_DIR", "data folder for the embedded default (default ./.evothesis)"),
    ("ENVIRONMENT", "development | test | production (default development)"),
    ("DATABASE_POOL_SIZE", "connections kept open (default 10)"),
    ("DATABASE_MAX_OVERFLOW", "extra connections under load (default 20)"),
    ("PIXEL_MANAGEMENT_URL", "pixel-management service URL; unset = registry in this database"),
    ("PIXEL_MANAGEMENT_TOKEN", "service token between collectors and pixel management"),
    ("EVOTHESIS_ADMIN_TOKEN", "bearer token for the admin API (closed when unset)"),
    ("EVOTHESIS_SECRET_KEY", "Fernet key(s) sealing client secrets (dev: key file in data dir)"),
    ("EVOTHESIS_COLLECTOR_URL", "collector URL baked into per-client trackers"),
    ("REGISTRY_CACHE_TTL", "seconds a domain's client is cached (default 60; 404s: 10)"),
    ("TRUSTED_PROXIES", "IPs/CIDRs whose X-Forwarded-For is trusted (default loopback)"),
    ("MAX_BODY_BYTES", "largest accepted /collect body (default 1048576)"),
    ("MAX_BATCH_EVENTS", "most events in one batch (default 500)"),
    ("BODY_READ_TIMEOUT", "seconds a /collect body may take to arrive (default 15)"),
    ("WRITE_BUFFER_MAX_EVENTS", "events per COPY flush at most (default 5000)"),
    ("WRITE_BUFFER_MAX_DELAY_MS", "how long a flush waits to coalesce requests (default 2)"),
    ("SPOOL_DIR", "disk spool while PostgreSQL is down (default EVOTHESIS_DATA_DIR/spool)"),
    ("SPOOL_MAX_BYTES", "disk spool size limit; 0 turns the spool off (default 1 GiB)"),
    ("RAW_S3_BUCKET", "raw export bucket: name or URL (default EVOTHESIS_DATA_DIR/buckets/raw)"),
    ("PROCESSED_S3_BUCKET", "processed exports of clients without own bucket (CLIENT_S3_BUCKET)"),
    (
        "BACKUP_S3_BUCKET",
        "metering records for billing (default EVOTHESIS_DATA_DIR/buckets/backup)",
    ),
    (
        "S3_ENDPOINT_URL",
        "S3-compatible endpoint (MinIO, R2, ...); credentials: AWS_* or *_S3_*_KEY",
    ),
    ("EXPORT_SCHEDULE", "raw export interval: 30s, 1m, hourly, daily or off (default 1m)"),
    ("EXPORT_BATCH_SIZE", "events per export batch; a backlog this big exports at once (10000)"),
    ("EXPORT_FORMAT", "processed format when a client has none: json | csv | parquet"),
    ("BUFFER_RETENTION", "how long exported events stay in PostgreSQL (default 6h)"),
    ("EXPORT_IN_SERVE", "run the export scheduler inside serve (default true)"),
    ("BILLING_RATE_PER_1000_EVENTS", "dollars per 1,000 accepted events (default 0.01)"),
    ("ENRICHMENT", "user agent, bot, geo, referrer and UTM columns: on | off (default on)"),
    ("GEOIP_DATABASE", "MaxMind-format .mmdb file for geo; unset = bundled country data"),
    (
        "EVENT_MAX_PROPERTIES",
        "per-event limits: properties (300), EVENT_MAX_KEY_LENGTH (200), "
        "EVENT_MAX_STRING_LENGTH (4096, longer is truncated), EVENT_MAX_DEPTH (40)",
    ),
    ("LOG_LEVEL", "DEBUG | INFO | WARNING (default INFO)"),
)


def environment_help() -> str:
    """The block of environment variables appended to CLI help texts."""
    width = max(len(name) for name, _ in ENVIRONMENT_HELP)
    lines = [f"  {name.ljust(width)}  {meaning}" for name, meaning in ENVIRONMENT_HELP]
    return "Environment variables:\n\n" + "\n\n".join(lines)
