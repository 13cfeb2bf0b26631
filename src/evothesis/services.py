"""The composition root: the only place that turns ``Settings`` and a database into objects.

Every process opens what it needs here, the same way: the collector app's lifespan, the
pixel-management service and every CLI command. Each ``open_*`` is an async context
manager over one ``AsyncExitStack``, so a failure half-way (a bad ``GEOIP_DATABASE``, an
unreadable secret key, a database that is down) closes what was already opened: the pool,
the spool's lock, background tasks, HTTP clients.

* ``open_services``: what every process shares and that costs nothing to keep open:
  the pool, the registry (when this process hosts it), the export pipeline, data-subject
  requests and billing.
* ``open_ingestion``: what only a collector needs: the event store, the disk spool and its
  replay, the write buffer, the cached registry lookups (with their snapshot on disk), the
  enricher and the collector.
* ``scheduled_exports``: the export schedule as a background task (``serve``, ``worker``).

A collector starts while PostgreSQL is down (``tolerate_outage``): its pool then opens
without connections, events go to the spool, and the registry snapshot answers for the
sites it knew until the registry answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

from evothesis.billing.service import Billing
from evothesis.clock import Clock, SystemClock
from evothesis.config import Settings
from evothesis.domain import SchedulerRole
from evothesis.enrich.limits import EventLimits
from evothesis.errors import BucketConfigError, RegistryUnavailable, SecretKeyError
from evothesis.export.notices import NoticeSender, NotifyLookup
from evothesis.export.pipeline import ExportPipeline, PipelineSettings
from evothesis.export.process import TargetLookup
from evothesis.export.replays import Replays
from evothesis.export.scheduler import SchedulerState, run_scheduler, runner_name
from evothesis.gdpr.requests import DataSubjectRequests
from evothesis.ingest.collector import Collector
from evothesis.ingest.enrichment import Enricher, build_enricher
from evothesis.objects.buckets import BucketSpec, ExportBuckets, bucket_url, s3_options
from evothesis.registry.cache import CachedDirectory, RegistrySource
from evothesis.registry.http import HttpRegistrySource
from evothesis.registry.secrets import SecretBox, load_secret_box
from evothesis.registry.snapshot import SnapshotKeeper
from evothesis.registry.store import NotifyTarget, RegistryStore
from evothesis.storage.events import EventStore
from evothesis.storage.pool import MonitoredPool, create_pool, database_unreachable
from evothesis.storage.replay import replay_forever
from evothesis.storage.sessions import describe_error
from evothesis.storage.spool import Spool
from evothesis.storage.write_buffer import WriteBuffer

__all__ = [
    "CLI_POOL",
    "Ingestion",
    "PoolSize",
    "Services",
    "event_limits",
    "export_buckets",
    "open_ingestion",
    "open_services",
    "scheduled_exports",
    "secret_box",
]

logger = logging.getLogger("evothesis.services")

#: The write buffer refuses new events past this many flushes' worth of waiting rows.
PENDING_FLUSHES_LIMIT: Final = 20


@dataclass(frozen=True, slots=True)
class PoolSize:
    min_size: int
    max_size: int


#: One command's work needs few connections; export runs need two (see ``ExportLedger``).
CLI_POOL: Final = PoolSize(1, 4)


@dataclass(frozen=True, slots=True)
class Services:
    """What every Evothesis process works with."""

    settings: Settings
    clock: Clock
    pool: MonitoredPool
    #: The registry tables of this database: the CLI's and the admin API's, the export's
    #: source of client destinations, and the collector's lookups unless pixel management
    #: is another service (``PIXEL_MANAGEMENT_URL``). ``None`` only in a process that has
    #: no secret key to open client secrets with (a collector-only production process).
    registry: RegistryStore | None
    #: The key ring sealing client secrets, and the registry snapshot; ``None`` where no
    #: secret key is configured (then no snapshot is kept).
    box: SecretBox | None
    pipeline: ExportPipeline
    #: Backfill and replay of clients' past deliveries.
    replays: Replays
    #: Notices to clients' webhooks.
    notices: NoticeSender
    subjects: DataSubjectRequests
    billing: Billing


@dataclass(frozen=True, slots=True)
class Ingestion:
    """What a collector adds: events in, durably."""

    events: EventStore
    spool: Spool | None
    buffer: WriteBuffer
    sites: CachedDirectory
    collector: Collector


# ------------------------------------------------------------------- settings → values


def secret_box(settings: Settings) -> SecretBox:
    """The box sealing client secrets; raises ``SecretKeyError`` when unconfigured (a
    development or test process falls back to a key file in the data folder)."""
    return load_secret_box(
        settings.secret_key,
        data_dir=settings.data_dir,
        allow_key_file=settings.environment != "production",
    )


def export_buckets(settings: Settings) -> ExportBuckets:
    """The operator's three buckets, local folders under the data directory when unset."""
    root = settings.data_dir / "buckets"

    def spec(value: str | None, name: str, key: str | None, secret: str | None) -> BucketSpec:
        url = bucket_url(value, default_folder=root / name)
        if url.startswith("file://"):
            return BucketSpec(url)
        options = s3_options(
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            access_key=key,
            secret_key=secret,
        )
        return BucketSpec(url, options)

    return ExportBuckets(
        raw=spec(settings.raw_bucket, "raw", settings.raw_access_key, settings.raw_secret_key),
        processed=spec(
            settings.processed_bucket,
            "processed",
            settings.processed_access_key,
            settings.processed_secret_key,
        ),
        backup=spec(
            settings.backup_bucket,
            "backup",
            settings.backup_access_key,
            settings.backup_secret_key,
        ),
    )


def event_limits(settings: Settings) -> EventLimits:
    return EventLimits(
        max_properties=settings.event_max_properties,
        max_key_length=settings.event_max_key_length,
        max_string_length=settings.event_max_string_length,
        max_depth=settings.event_max_depth,
    )


def pipeline_settings(settings: Settings, database_url: str) -> PipelineSettings:
    return PipelineSettings(
        batch_size=settings.export_batch_size,
        default_format=settings.export_format,
        retention_s=settings.buffer_retention_s,
        lease_s=settings.export_lease_s,
        interval_s=settings.export_interval_s,
        table_retention_s=settings.table_retention_s,
        iceberg_catalog=settings.iceberg_catalog or database_url,
        default_schedule=settings.export_schedule,
        notice_after_s=settings.export_notice_after_s,
        dead_letter_after_s=settings.export_dead_letter_after_s,
        client_name=settings.client_name,
    )


def _export_targets(
    registry: RegistryStore | None, box_error: SecretKeyError | None
) -> TargetLookup:
    """Where each client's files go. Without the secret key (a collector-only production
    process) client credentials cannot be opened: raw export works, and each delivery
    fails with that reason, visible in the pipeline status, until the key is configured."""
    if registry is not None:
        return registry.export_target
    reason = f"cannot open client export credentials: {box_error}"

    async def unavailable(client_id: str) -> tuple[str | None, dict[str, str] | None]:
        raise BucketConfigError(reason)

    return unavailable


def _notify_targets(
    registry: RegistryStore | None, box_error: SecretKeyError | None
) -> NotifyLookup:
    """Where each client's notices go; without the secret key (a collector-only
    production process) webhook secrets cannot be opened, and notices wait for a process
    that can."""
    if registry is not None:
        return registry.notify_target
    reason = f"cannot open client webhook secrets: {box_error}"

    async def unavailable(client_id: str) -> NotifyTarget | None:
        raise SecretKeyError(reason)

    return unavailable


# ------------------------------------------------------------------------------ opening


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    database_url: str,
    clock: Clock | None = None,
    pool_size: PoolSize | None = None,
    development_client: bool = False,
    tolerate_outage: bool = False,
) -> AsyncIterator[Services]:
    """Open the shared services on ``database_url`` (already migrated).

    The registry needs the secret key; without one only a process that leaves the registry
    to another service (``PIXEL_MANAGEMENT_URL``) starts, and any other fails at once
    (``SecretKeyError``). ``development_client``: a process hosting the registry registers
    ``client_test`` for localhost in development, as the embedded default promises.
    ``tolerate_outage`` (a collector): a database that does not answer does not stop
    start-up (see ``_open_pool``).
    """
    hosts_registry = not settings.pixel_management_url
    box: SecretBox | None = None
    box_error: SecretKeyError | None = None
    try:
        box = secret_box(settings)
    except SecretKeyError as exc:
        if hosts_registry:
            raise
        box_error = exc
    size = pool_size or PoolSize(settings.pool_size, settings.pool_max_size)
    clock = clock or SystemClock()
    async with AsyncExitStack() as stack:
        pool = await _open_pool(
            database_url,
            size,
            tolerate_outage=tolerate_outage,
            log_saturation=pool_size is None,
        )
        stack.push_async_callback(pool.close)
        registry = RegistryStore(pool, box) if box is not None else None
        if (
            registry is not None
            and hosts_registry
            and development_client
            and settings.is_development
        ):
            try:
                await registry.ensure_development_client()
            except RegistryUnavailable as exc:
                if not tolerate_outage:
                    raise
                logger.warning("Development client not checked (%s)", exc.message)
        pipeline = ExportPipeline(
            pool,
            export_buckets(settings),
            pipeline_settings(settings, database_url),
            targets=_export_targets(registry, box_error),
            clock=clock,
        )
        notices = NoticeSender(pool, _notify_targets(registry, box_error))
        stack.push_async_callback(notices.close)
        yield Services(
            settings=settings,
            clock=clock,
            pool=pool,
            registry=registry,
            box=box,
            pipeline=pipeline,
            replays=Replays(pool, pipeline),
            notices=notices,
            subjects=DataSubjectRequests(
                pool, pipeline, registry.client_salt if registry is not None else None
            ),
            billing=Billing(pool, pipeline.backup_bucket),
        )


async def _open_pool(
    database_url: str, size: PoolSize, *, tolerate_outage: bool, log_saturation: bool
) -> MonitoredPool:
    """The pool, with its ``min_size`` connections open. When no PostgreSQL answers and an
    outage is tolerated, a pool that opens connections only when asked instead (asyncpg
    cannot raise a pool's floor afterwards: such a pool keeps no idle connections until the
    process restarts, and pays a connection set-up after an idle spell).

    Its size is logged once: the seeds' operators look for pool lines in the log. Waits
    are logged (``log_saturation``) where the settings size the pool."""
    try:
        pool = await create_pool(
            database_url,
            min_size=size.min_size,
            max_size=size.max_size,
            log_saturation=log_saturation,
        )
    except Exception as exc:
        if not (tolerate_outage and database_unreachable(exc)):
            raise
        logger.warning(
            "PostgreSQL does not answer (%s): starting without it; events are spooled "
            "and known sites attributed from the registry snapshot until it returns",
            describe_error(exc),
        )
        pool = await create_pool(
            database_url, min_size=0, max_size=size.max_size, log_saturation=log_saturation
        )
    logger.info(
        "Connection pool open: %d connection(s), keeps %d, at most %d (DATABASE_POOL_SIZE, "
        "+ DATABASE_MAX_OVERFLOW); saturation is logged, /metrics has evothesis_db_pool_*",
        pool.get_size(),
        pool.get_min_size(),
        pool.get_max_size(),
    )
    return pool


@asynccontextmanager
async def open_ingestion(services: Services) -> AsyncIterator[Ingestion]:
    """Open what a collector needs on top of ``services``; the write buffer is flushed, the
    spool released and the replay stopped on the way out."""
    settings = services.settings
    async with AsyncExitStack() as stack:
        events = EventStore(services.pool, dedup_window_s=settings.dedup_window_s)
        spool = None
        if settings.spool_max_bytes:
            spool = Spool(settings.spool_folder, max_bytes=settings.spool_max_bytes)
            stack.callback(spool.close)
        buffer = WriteBuffer(
            events.insert,
            max_events=settings.buffer_max_events,
            max_delay=settings.buffer_max_delay_ms / 1000,
            concurrency=settings.buffer_flush_concurrency,
            max_pending=settings.buffer_max_events * PENDING_FLUSHES_LIMIT,
            spool=spool,
        )
        buffer.start()
        stack.push_async_callback(buffer.close)
        if spool is not None:
            await stack.enter_async_context(
                _background(replay_forever(spool, events.insert), "spool-replay")
            )
        sites = await stack.enter_async_context(_registry_directory(services))
        enricher: Enricher = await asyncio.to_thread(
            build_enricher,
            enabled=settings.enrichment,
            geoip_database=settings.geoip_database,
            cache_dir=settings.cache_folder,
        )
        yield Ingestion(
            events=events,
            spool=spool,
            buffer=buffer,
            sites=sites,
            collector=Collector(
                sites=sites,
                buffer=buffer,
                max_batch_events=settings.max_batch_events,
                enricher=enricher,
                limits=event_limits(settings),
            ),
        )


@asynccontextmanager
async def _registry_directory(services: Services) -> AsyncIterator[CachedDirectory]:
    """The cached registry the collector attributes with: over HTTP, or on this database
    (then every change made through this process's registry drops the cached answers),
    seeded from and kept in the registry snapshot of the data folder."""
    settings = services.settings
    async with AsyncExitStack() as stack:
        source: RegistrySource
        if settings.pixel_management_url:
            http = HttpRegistrySource(
                settings.pixel_management_url,
                token=settings.pixel_management_token,
                timeout=settings.registry_timeout_s,
            )
            stack.push_async_callback(http.close)
            source, kind = http, "http"
        else:
            assert services.registry is not None  # open_services refuses to start without it
            source, kind = services.registry, "database"
        keeper = _snapshot_keeper(services)
        directory = CachedDirectory(
            source,
            kind=kind,
            ttl=settings.registry_cache_ttl_s,
            negative_ttl=settings.registry_negative_ttl_s,
            stale_for=settings.registry_stale_s,
            listener=keeper,
        )
        if keeper is not None:
            for host, client, age in await asyncio.to_thread(keeper.load):
                directory.seed(host, client, age=age)
            await stack.enter_async_context(keeper.running())
        if isinstance(source, RegistryStore):
            source.on_change(directory.invalidate)
        yield directory


def _snapshot_keeper(services: Services) -> SnapshotKeeper | None:
    """The keeper of the registry snapshot, whose answers are trusted as long as a running
    collector serves them stale; ``None`` (said once) without a secret key to seal it."""
    settings = services.settings
    if services.box is None:
        logger.warning(
            "No EVOTHESIS_SECRET_KEY: no registry snapshot is kept, so a collector started "
            "while the registry is unreachable refuses events until it answers"
        )
        return None
    return SnapshotKeeper(
        settings.data_dir,
        services.box,
        max_age=settings.registry_cache_ttl_s + settings.registry_stale_s,
    )


@asynccontextmanager
async def scheduled_exports(services: Services, role: SchedulerRole) -> AsyncIterator[None]:
    """Run the export schedule while the block runs, recorded in the database as run by a
    ``role`` process; nothing when ``EXPORT_INTERVAL`` is off (exports then run on
    demand only)."""
    interval = services.settings.export_interval_s
    if interval is None:
        yield
        return
    pipeline = services.pipeline
    state = SchedulerState(runner_name(pipeline.ledger), role)
    scheduler = run_scheduler(
        pipeline,
        state,
        interval_s=interval,
        notices=services.notices,
        replays=services.replays,
    )
    async with _background(scheduler, "export-scheduler"):
        yield


@asynccontextmanager
async def _background(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run a coroutine as a task for the block's length, cancelled and awaited after it."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
