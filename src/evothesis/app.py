"""Application factory: everything stateful is built in the lifespan, nothing at import."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI

from evothesis.api import billing, export, gdpr, metrics, ops, site
from evothesis.api.asgi import Receive, Scope, Send
from evothesis.api.collect import COLLECT_OPENAPI, CollectEndpoint
from evothesis.api.deadlines import ReadDeadlines
from evothesis.api.factory import new_api
from evothesis.api.metrics import RequestMetrics
from evothesis.api.registry import include_pixel_management
from evothesis.billing.service import Billing
from evothesis.clock import Clock, SystemClock
from evothesis.config import Settings
from evothesis.export.pipeline import ExportPipeline, pipeline_from_settings
from evothesis.export.scheduler import SchedulerState, run_scheduler
from evothesis.gdpr.requests import DataSubjectRequests
from evothesis.heap import settle_after_startup
from evothesis.ingest.collector import Collector
from evothesis.ingest.enrichment import enricher_from_settings
from evothesis.registry.cache import CachedDirectory, RegistrySource
from evothesis.registry.http import HttpRegistrySource
from evothesis.registry.store import RegistryStore
from evothesis.storage.events import EventStore
from evothesis.storage.pool import create_pool
from evothesis.storage.replay import replay_forever
from evothesis.storage.spool import Spool
from evothesis.storage.write_buffer import WriteBuffer

#: The write buffer refuses new events past this many flushes' worth of waiting rows.
PENDING_FLUSHES_LIMIT = 20


class Evothesis:
    """The ASGI application: /collect goes straight to its endpoint, the rest to FastAPI."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api
        self._collect = CollectEndpoint(api.state)
        self._app = RequestMetrics(self._route, api.state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/collect":
            await self._collect(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    database_url: str,
    clock: Clock | None = None,
    long_running: bool = False,
) -> Evothesis:
    """Build the collector app; ``database_url`` is explicit because the embedded default
    decides it at start-up, after settings are read.

    The registry is read over HTTP when ``PIXEL_MANAGEMENT_URL`` is set; otherwise this
    process hosts pixel management itself (its API included) on the same database.
    ``long_running`` (``serve`` and its workers, not tests that build many apps in one
    process) tunes the garbage collector once start-up is done (``heap``).
    """
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            database_url, min_size=settings.pool_size, max_size=settings.pool_max_size
        )
        store = EventStore(pool)
        spool = (
            Spool(settings.spool_folder, max_bytes=settings.spool_max_bytes)
            if settings.spool_max_bytes
            else None
        )
        buffer = WriteBuffer(
            store.insert,
            max_events=settings.buffer_max_events,
            max_delay=settings.buffer_max_delay_ms / 1000,
            concurrency=settings.buffer_flush_concurrency,
            max_pending=settings.buffer_max_events * PENDING_FLUSHES_LIMIT,
            spool=spool,
        )
        directory, http_source = await _registry_directory(settings, pool, app)
        buffer.start()
        read_deadlines = ReadDeadlines(settings.body_timeout_s)
        read_deadlines.start()
        app.state.read_deadlines = read_deadlines
        replayer = (
            asyncio.create_task(replay_forever(spool, store.insert), name="spool-replay")
            if spool is not None
            else None
        )
        app.state.store = store
        app.state.buffer = buffer
        app.state.spool = spool
        app.state.sites = directory
        app.state.collector = Collector(
            sites=directory,
            buffer=buffer,
            max_batch_events=settings.max_batch_events,
            enricher=await asyncio.to_thread(enricher_from_settings, settings),
            limits=settings.event_limits,
        )
        app.state.pipeline = pipeline = pipeline_from_settings(settings, pool)
        app.state.subjects = DataSubjectRequests(pool, pipeline)
        app.state.billing = Billing(pool, pipeline.backup_bucket)
        exporter = _start_scheduler(settings, pipeline, app)
        if long_running:
            settle_after_startup()
        try:
            yield
        finally:
            if exporter is not None:
                exporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await exporter
            if replayer is not None:
                replayer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await replayer
            await read_deadlines.close()
            await buffer.close()
            await pool.close()
            if spool is not None:
                spool.close()
            if http_source is not None:
                await http_source.close()

    app = new_api("Evothesis collector", settings, lifespan)
    app.state.clock = clock
    app.include_router(ops.router)
    app.include_router(metrics.router)
    app.include_router(export.router)
    app.include_router(gdpr.router)
    app.include_router(billing.router)
    app.include_router(site.router)
    if not settings.pixel_management_url:
        include_pixel_management(app)
    if settings.serve_demo:
        site.mount_demo(app)
    _document_collect(app)
    return Evothesis(app)


def _start_scheduler(
    settings: Settings, pipeline: ExportPipeline, app: FastAPI
) -> asyncio.Task[None] | None:
    """The export schedule inside the collector, unless EXPORT_IN_SERVE is off (a separate
    ``evothesis worker`` exports) or EXPORT_SCHEDULE is off (on demand only)."""
    app.state.export_scheduler = None
    interval = settings.export_interval_s
    if not settings.export_in_serve or interval is None:
        return None
    state = app.state.export_scheduler = SchedulerState()
    return asyncio.create_task(
        run_scheduler(pipeline, state, interval_s=interval), name="export-scheduler"
    )


async def _registry_directory(
    settings: Settings, pool: asyncpg.Pool, app: FastAPI
) -> tuple[CachedDirectory, HttpRegistrySource | None]:
    """The cached registry the collector attributes with, over HTTP or on ``pool``; the
    HTTP client is returned too, for the lifespan to close."""
    source: RegistrySource
    http_source = None
    if settings.pixel_management_url:
        source = http_source = HttpRegistrySource(
            settings.pixel_management_url,
            token=settings.pixel_management_token,
            timeout=settings.registry_timeout_s,
        )
    else:
        registry = RegistryStore(pool, settings.secret_box())
        if settings.is_development:
            await registry.ensure_development_client()
        app.state.registry = source = registry
    directory = CachedDirectory(
        source,
        kind="http" if http_source else "database",
        ttl=settings.registry_cache_ttl_s,
        negative_ttl=settings.registry_negative_ttl_s,
        stale_for=settings.registry_stale_s,
    )
    app.state.registry_changed = directory.invalidate
    return directory, http_source


def app_from_environment() -> Evothesis:
    """Factory for worker processes: settings and ``DATABASE_URL`` come from the environment
    (the parent process has already started any embedded database and run migrations)."""
    from evothesis.logs import configure_logging

    settings = Settings()
    if not settings.database_url:
        raise RuntimeError("worker processes need DATABASE_URL; start them with evothesis serve")
    configure_logging(settings.log_level)
    return create_app(settings, database_url=settings.database_url, long_running=True)


def _document_collect(app: FastAPI) -> None:
    """Add the bare /collect endpoint to the generated OpenAPI schema."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema["paths"] = {"/collect": COLLECT_OPENAPI, **schema.get("paths", {})}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
