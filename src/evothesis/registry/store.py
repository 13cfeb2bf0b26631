"""The registry in PostgreSQL: clients, their domains and settings, secrets sealed.

One store serves the pixel-management API, the CLI and the in-process collector lookup,
so every path validates and seals the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg
import orjson

from evothesis.domain import (
    BotPolicy,
    ClientConfig,
    ConsentMode,
    ExportFormat,
    FileLayout,
    IpCollection,
    PrivacyLevel,
    UserIdStorage,
)
from evothesis.errors import (
    Conflict,
    InvalidSetting,
    NotFound,
    RegistryUnavailable,
    SecretKeyError,
)
from evothesis.registry.domains import candidate_patterns, validate_pattern
from evothesis.registry.secrets import (
    SecretBox,
    hash_write_key,
    new_salt,
    new_write_key,
)
from evothesis.schedules import REAL_TIME, parse_schedule
from evothesis.storage.pool import Connection
from evothesis.storage.queries import query
from evothesis.storage.sessions import UNAVAILABLE_ERRORS, describe_error

logger = logging.getLogger("evothesis.registry")

__all__ = [
    "ClientRecord",
    "ClientSpec",
    "NotifyTarget",
    "RegistryStore",
    "validate_client_id",
]

#: The development client the embedded default registers for the demo site.
DEVELOPMENT_CLIENT: Final = "client_test"
DEVELOPMENT_DOMAINS: Final = ("localhost", "127.0.0.1")

_CLIENT_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def validate_client_id(client_id: str) -> str:
    """Client ids become bucket prefixes and log fields: lowercase, 2-63 safe characters."""
    if (
        not 2 <= len(client_id) <= 63
        or not set(client_id) <= _CLIENT_ID_CHARS
        or client_id[0] in "_-"
    ):
        raise InvalidSetting(
            f"invalid client_id {client_id!r}: use 2-63 lowercase letters, digits, '_' or "
            "'-', starting with a letter or digit",
            field="client_id",
        )
    return client_id


def canonical_domains(patterns: Iterable[str]) -> list[str]:
    """Validated, canonical, de-duplicated domain patterns, in the order given."""
    canonical: list[str] = []
    for pattern in patterns:
        try:
            domain = validate_pattern(pattern)
        except ValueError as exc:
            raise InvalidSetting(str(exc), field="domains") from None
        if domain not in canonical:
            canonical.append(domain)
    return canonical


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """Everything an operator sets on a client. Secrets are plain here and sealed on write;
    ``None`` for ``ip_salt`` means "generate one"."""

    name: str
    privacy_level: PrivacyLevel = PrivacyLevel.STANDARD
    ip_collection: IpCollection = IpCollection.FULL
    honour_dnt: bool = True
    consent_mode: ConsentMode = ConsentMode.NONE
    bot_policy: BotPolicy = BotPolicy.KEEP
    require_write_key: bool = False
    #: ``None``: the privacy level's default (``UserIdStorage.for_level``).
    user_id_storage: UserIdStorage | None = None
    export_destination: str | None = None
    export_format: ExportFormat = ExportFormat.JSON
    export_layout: FileLayout = FileLayout.DATED
    #: Days a table keeps removed files (time travel, deleted visitors) before vacuum;
    #: ``None``: the operator's ``TABLE_RETENTION``.
    table_retention_days: int | None = None
    export_credentials: Mapping[str, str] | None = None
    #: The delivery schedule (``schedules``); ``None``: ``EXPORT_SCHEDULE``.
    export_schedule: str | None = None
    #: Deliver early once this many events are waiting; ``None``: never early.
    export_threshold: int | None = None
    #: The notification webhook and the secret its notices are signed with.
    notify_url: str | None = None
    notify_secret: str | None = None
    ip_salt: bytes | None = None
    active: bool = True


def validate_export_settings(spec: ClientSpec) -> ClientSpec:
    """The spec with its schedule in canonical spelling; ``InvalidSetting`` names what is
    wrong with a schedule, a threshold or a webhook."""
    schedule = spec.export_schedule
    if schedule is not None:
        try:
            schedule = parse_schedule(schedule).text
        except ValueError as exc:
            raise InvalidSetting(str(exc), field="export_schedule") from None
    if spec.export_threshold is not None and spec.export_threshold < 1:
        raise InvalidSetting("export_threshold must be at least 1", field="export_threshold")
    if spec.notify_url is not None:
        parts = urlsplit(spec.notify_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidSetting(
                f"notify_url must be an http(s) URL: {spec.notify_url!r}", field="notify_url"
            )
        if not spec.notify_secret:
            raise InvalidSetting(
                "notify_url needs notify_secret, the secret its notices are signed with",
                field="notify_secret",
            )
    return replace(spec, export_schedule=schedule)


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """Where a client's notices go, and the secret they are signed with."""

    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A client as operators see it: settings and domains, secrets only as flags."""

    client_id: str
    name: str
    privacy_level: PrivacyLevel
    ip_collection: IpCollection
    honour_dnt: bool
    consent_mode: ConsentMode
    bot_policy: BotPolicy
    require_write_key: bool
    user_id_storage: UserIdStorage | None
    export_destination: str | None
    export_format: ExportFormat
    export_layout: FileLayout
    table_retention_days: int | None
    has_export_credentials: bool
    export_schedule: str | None
    export_threshold: int | None
    notify_url: str | None
    has_notify_secret: bool
    active: bool
    domains: tuple[str, ...]
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


SPEC_FIELDS: Final = frozenset(field.name for field in fields(ClientSpec))


class RegistryStore:
    """Clients and domains behind a small interface; driver errors become ``EvothesisError``.

    Whoever caches answers (the in-process collector's ``CachedDirectory``) registers with
    ``on_change`` and hears of every successful change, so a new domain or a deactivated
    client takes effect at once instead of after the cache's TTL.
    """

    def __init__(self, pool: asyncpg.Pool, box: SecretBox) -> None:
        self._pool = pool
        self._box = box
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every change this store makes."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    # ---------------------------------------------------------------- collector lookup

    async def lookup(self, host: str) -> ClientConfig | None:
        """The active client whose most specific pattern matches ``host``, or ``None``.

        An exact pattern of a deactivated client shadows a wildcard of another client:
        deactivating a site must stop its events, not hand them to someone else.
        """
        try:
            candidates = candidate_patterns(host)
        except ValueError:
            return None
        rows = await self._fetch("registry_lookup", candidates)
        by_pattern = {row["domain"]: row for row in rows}
        for candidate in candidates:
            row = by_pattern.get(candidate)
            if row is not None:
                return self._config(row) if row["active"] else None
        return None

    async def lookup_write_key(self, digest: str) -> ClientConfig | None:
        """The active client whose write key has the SHA-256 ``digest``, or ``None``."""
        row = await self._fetchrow("registry_write_key_lookup", digest)
        if row is None or not row["active"]:
            return None
        return self._config(row)

    async def client_salt(self, client_id: str) -> bytes | None:
        """The client's salt, active or not (its stored user ids were hashed with it), or
        ``None`` for a client that is not registered (any more)."""
        row = await self._fetchrow("client_get", client_id)
        return None if row is None else self._spec(row).ip_salt

    async def config_for_client(self, client_id: str) -> ClientConfig | None:
        """The active client's config (for its tracker), or ``None``."""
        row = await self._fetchrow("client_get", client_id)
        if row is None or not row["active"]:
            return None
        return self._config(row)

    async def export_target(self, client_id: str) -> tuple[str | None, dict[str, str] | None]:
        """The client's export destination and its opened credentials, for the exporter.

        A client that is not (or no longer) registered exports to the operator's bucket:
        its events were accepted, so they are delivered.
        """
        row = await self._fetchrow("client_get", client_id)
        if row is None:
            return None, None
        spec = self._spec(row)
        credentials = dict(spec.export_credentials) if spec.export_credentials else None
        return spec.export_destination, credentials

    async def notify_target(self, client_id: str) -> NotifyTarget | None:
        """The client's webhook and its signing secret, opened; ``None`` without one."""
        row = await self._fetchrow("client_get", client_id)
        if row is None or row["notify_url"] is None or row["notify_secret"] is None:
            return None
        return NotifyTarget(row["notify_url"], self._box.open(row["notify_secret"]).decode())

    # ---------------------------------------------------------------- administration

    async def create_client(
        self, client_id: str, spec: ClientSpec, domains: Iterable[str] = ()
    ) -> tuple[ClientRecord, str]:
        """Create a client owning ``domains``; returns it and its write key (shown once).

        One transaction: an id in use or a domain owned by someone else creates nothing.
        """
        validate_client_id(client_id)
        spec = validate_export_settings(spec)
        wanted = canonical_domains(domains)
        write_key = new_write_key()
        values = self._spec_values(spec, hash_write_key(write_key))
        async with self._connection() as connection, connection.transaction():
            if await connection.fetchval(query("client_insert"), client_id, *values) is None:
                raise Conflict(f"client {client_id!r} already exists")
            for domain in wanted:
                owner = await connection.fetchval(query("domain_insert"), domain, client_id)
                if owner != client_id:
                    raise Conflict(f"domain {domain!r} already belongs to client {owner!r}")
        self._changed()
        return await self.get_client(client_id), write_key

    async def update_client(self, client_id: str, changes: Mapping[str, Any]) -> ClientRecord:
        """Apply ``changes`` (names of ``ClientSpec`` fields) to a client."""
        unknown = set(changes) - SPEC_FIELDS
        if unknown:
            raise InvalidSetting(f"unknown client fields: {', '.join(sorted(unknown))}")
        async with self._connection() as connection, connection.transaction():
            row = await connection.fetchrow(query("client_lock"), client_id)
            if row is None:
                raise NotFound(f"client {client_id!r} does not exist")
            spec = validate_export_settings(replace(self._spec(row), **changes))
            write_key_digest = row["write_key_sha256"]
            await connection.execute(
                query("client_update"),
                client_id,
                *self._spec_values(spec, write_key_digest),
                spec.active,
            )
        self._changed()
        return await self.get_client(client_id)

    async def rotate_write_key(self, client_id: str) -> str:
        write_key = new_write_key()
        if await self._fetchval("client_set_write_key", client_id, hash_write_key(write_key)):
            self._changed()
            return write_key
        raise NotFound(f"client {client_id!r} does not exist")

    async def get_client(self, client_id: str) -> ClientRecord:
        row = await self._fetchrow("client_get", client_id)
        if row is None:
            raise NotFound(f"client {client_id!r} does not exist")
        return self._record(row)

    async def list_clients(self) -> list[ClientRecord]:
        return [self._record(row) for row in await self._fetch("client_list")]

    async def add_domain(self, client_id: str, pattern: str) -> str:
        """Register a domain pattern; returns its canonical form."""
        [domain] = canonical_domains([pattern])
        await self.get_client(client_id)
        owner = await self._fetchval("domain_insert", domain, client_id)
        if owner != client_id:
            raise Conflict(f"domain {domain!r} already belongs to client {owner!r}")
        self._changed()
        return domain

    async def remove_domain(self, client_id: str, pattern: str) -> str:
        [domain] = canonical_domains([pattern])
        if await self._fetchval("domain_delete", domain, client_id) is None:
            raise NotFound(f"domain {domain!r} is not registered for client {client_id!r}")
        self._changed()
        return domain

    async def ensure_development_client(self) -> None:
        """Register ``client_test`` for localhost unless it exists (development only). It
        delivers in real time, so a newcomer sees its files within a minute of clicking
        around the demo; one registered before schedules existed is given real time too."""
        try:
            record = await self.get_client(DEVELOPMENT_CLIENT)
            if record.export_schedule is None:
                await self.update_client(DEVELOPMENT_CLIENT, {"export_schedule": REAL_TIME})
        except NotFound:
            try:
                await self.create_client(
                    DEVELOPMENT_CLIENT,
                    ClientSpec(name="Development (localhost)", export_schedule=REAL_TIME),
                )
            except Conflict:
                return  # another process created it first
            for domain in DEVELOPMENT_DOMAINS:
                try:
                    await self.add_domain(DEVELOPMENT_CLIENT, domain)
                except Conflict:
                    continue  # an operator gave it to another client: leave it there

    # ---------------------------------------------------------------- helpers

    def _spec_values(self, spec: ClientSpec, write_key_digest: str) -> tuple[Any, ...]:
        credentials = (
            None
            if spec.export_credentials is None
            else self._box.seal(orjson.dumps(dict(spec.export_credentials)))
        )
        salt = spec.ip_salt if spec.ip_salt is not None else new_salt()
        return (
            spec.name,
            spec.privacy_level,
            spec.ip_collection,
            spec.honour_dnt,
            spec.consent_mode,
            self._box.seal(salt),
            write_key_digest,
            spec.export_destination,
            spec.export_format,
            credentials,
            spec.bot_policy,
            spec.require_write_key,
            spec.export_schedule,
            spec.export_threshold,
            spec.notify_url,
            None if spec.notify_secret is None else self._box.seal(spec.notify_secret.encode()),
            spec.user_id_storage,
            spec.export_layout,
            spec.table_retention_days,
        )

    def _spec(self, row: asyncpg.Record) -> ClientSpec:
        credentials = row["export_credentials"]
        return ClientSpec(
            name=row["name"],
            **_privacy_settings(row),
            export_destination=row["export_destination"],
            export_format=ExportFormat(row["export_format"]),
            export_layout=FileLayout(row["export_layout"]),
            table_retention_days=row["table_retention_days"],
            export_credentials=(
                None if credentials is None else orjson.loads(self._box.open(credentials))
            ),
            export_schedule=row["export_schedule"],
            export_threshold=row["export_threshold"],
            notify_url=row["notify_url"],
            notify_secret=(
                None
                if row["notify_secret"] is None
                else self._box.open(row["notify_secret"]).decode()
            ),
            ip_salt=self._box.open(row["ip_salt"]),
            active=row["active"],
        )

    def _config(self, row: asyncpg.Record) -> ClientConfig:
        try:
            salt = self._box.open(row["ip_salt"])
        except SecretKeyError as exc:
            # A misconfigured key is an outage of attribution (503, retried), not a 500.
            logger.error("Cannot open the secrets of client %s: %s", row["client_id"], exc)
            raise RegistryUnavailable(str(exc)) from None
        return ClientConfig(
            client_id=row["client_id"],
            **_privacy_settings(row),
            ip_salt=salt,
            write_key_sha256=row["write_key_sha256"],
        )

    @staticmethod
    def _record(row: asyncpg.Record) -> ClientRecord:
        return ClientRecord(
            client_id=row["client_id"],
            name=row["name"],
            **_privacy_settings(row),
            export_destination=row["export_destination"],
            export_format=ExportFormat(row["export_format"]),
            export_layout=FileLayout(row["export_layout"]),
            table_retention_days=row["table_retention_days"],
            has_export_credentials=row["export_credentials"] is not None,
            export_schedule=row["export_schedule"],
            export_threshold=row["export_threshold"],
            notify_url=row["notify_url"],
            has_notify_secret=row["notify_secret"] is not None,
            active=row["active"],
            domains=tuple(row["domains"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection whose outage errors become ``RegistryUnavailable``, while
        constraint violations (our callers' input) stay visible as what they are."""
        try:
            async with asyncio.timeout(10):
                connection = await self._pool.acquire()
        except UNAVAILABLE_ERRORS as exc:
            raise RegistryUnavailable(
                f"registry database unreachable: {describe_error(exc)}"
            ) from exc
        try:
            yield connection
        except asyncpg.CheckViolationError as exc:
            raise InvalidSetting(f"invalid client settings: {exc.constraint_name}") from exc
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound("the client does not exist") from exc
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"already registered: {exc.detail or exc}") from exc
        except UNAVAILABLE_ERRORS as exc:
            raise RegistryUnavailable(
                f"registry database unreachable: {describe_error(exc)}"
            ) from exc
        finally:
            await self._pool.release(connection)

    async def _fetch(self, name: str, *args: object) -> list[asyncpg.Record]:
        async with self._connection() as connection:
            return await connection.fetch(query(name), *args)

    async def _fetchrow(self, name: str, *args: object) -> asyncpg.Record | None:
        async with self._connection() as connection:
            return await connection.fetchrow(query(name), *args)

    async def _fetchval(self, name: str, *args: object) -> Any:
        async with self._connection() as connection:
            return await connection.fetchval(query(name), *args)


def _privacy_settings(row: asyncpg.Record) -> dict[str, Any]:
    """The settings every view of a client carries (spec, collector config, admin record),
    as the closed sets they are; the database's CHECK constraints hold the same sets."""
    return {
        "privacy_level": PrivacyLevel(row["privacy_level"]),
        "ip_collection": IpCollection(row["ip_collection"]),
        "honour_dnt": row["honour_dnt"],
        "consent_mode": ConsentMode(row["consent_mode"]),
        "bot_policy": BotPolicy(row["bot_policy"]),
        "require_write_key": row["require_write_key"],
        "user_id_storage": (
            None if row["user_id_storage"] is None else UserIdStorage(row["user_id_storage"])
        ),
    }
