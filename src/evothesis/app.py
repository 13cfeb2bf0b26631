"""The collector application: routes, and a lifespan that opens the services in one place.

Nothing stateful is built at import or in ``create_app``: the lifespan opens the shared
services, the ingestion and the export schedule from ``services.py`` on one
``AsyncExitStack``, so a failure half-way (a bad ``GEOIP_DATABASE``) closes what was
already open, and shutdown closes everything in reverse.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from evothesis.api.collect import COLLECT_OPENAPI, CollectEndpoint
from evothesis.api.deps import Runtime
from evothesis.api.factory import new_api
from evothesis.api.routes import billing, deliveries, export, gdpr, metrics, ops, site
from evothesis.api.routes.registry import include_pixel_management
from evothesis.api.transport.asgi import ASGIApp, Receive, Scope, Send
from evothesis.api.transport.deadlines import ReadDeadlines
from evothesis.clock import Clock, SystemClock
from evothesis.config import Settings, read_settings
from evothesis.domain import SchedulerRole
from evothesis.heap import settle_after_startup
from evothesis.logs import configure_logging
from evothesis.services import open_ingestion, open_services, scheduled_exports


class Evothesis:
    """The ASGI application: /collect goes straight to its endpoint, the rest to FastAPI;
    every request is counted for /metrics."""

    def __init__(self, api: FastAPI, runtime: Runtime) -> None:
        self.api = api
        self.runtime = runtime
        self._collect = CollectEndpoint(runtime)
        self._app: ASGIApp = runtime.http_metrics.wrap(self._route)

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
    runtime = Runtime(settings, clock or SystemClock())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            services = await stack.enter_async_context(
                open_services(
                    settings,
                    database_url=database_url,
                    clock=runtime.clock,
                    development_client=True,
                    tolerate_outage=True,
                )
            )
            ingestion = await stack.enter_async_context(open_ingestion(services))
            if settings.export_in_serve:
                await stack.enter_async_context(
                    scheduled_exports(services, SchedulerRole.COLLECTOR)
                )
            deadlines = await stack.enter_async_context(
                ReadDeadlines.running(settings.body_timeout_s)
            )
            runtime.start(services, ingestion=ingestion, deadlines=deadlines)
            stack.callback(runtime.stop)
            if long_running:
                settle_after_startup()
            yield

    app = new_api("Evothesis collector", runtime, lifespan)
    app.include_router(ops.router)
    app.include_router(metrics.router)
    app.include_router(export.router)
    app.include_router(deliveries.router)
    app.include_router(gdpr.router)
    app.include_router(billing.router)
    app.include_router(site.router)
    if not settings.pixel_management_url:
        include_pixel_management(app)
    if settings.serve_demo:
        site.mount_demo(app)
    _document_collect(app)
    return Evothesis(app, runtime)


def app_from_environment() -> Evothesis:
    """Factory for worker processes: settings and ``DATABASE_URL`` come from the environment
    (the parent process has already started any embedded database and run migrations).
    The parent also checked the same environment: it refused names of one setting that
    disagree (refused here too, should a worker be started otherwise) and warned once about
    unread names, which the workers do not repeat."""
    settings, _ = read_settings()
    if not settings.database_url:
        raise RuntimeError("worker processes need DATABASE_URL; start them with evothesis serve")
    os.umask(settings.umask)  # as serve set it: what this process creates stays owner-only
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

    # FastAPI's documented way to extend the schema is to replace this method.
    app.openapi = openapi  # type: ignore[method-assign]
