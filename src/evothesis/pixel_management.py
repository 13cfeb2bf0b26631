"""The standalone pixel-management service: the client registry on its own port.

Collectors reach it over HTTP (``PIXEL_MANAGEMENT_URL``); operators and provisioning
scripts use its admin API. The same routes can also live inside a collector
(``api.registry.include_pixel_management``); this factory is for running them alone.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from starlette.responses import Response

from evothesis import __version__
from evothesis.api.factory import new_api
from evothesis.api.registry import include_pixel_management
from evothesis.api.responses import JSONResponse
from evothesis.clock import iso_millis
from evothesis.config import Settings
from evothesis.errors import StorageUnavailable
from evothesis.registry.store import RegistryStore
from evothesis.storage.events import EventStore
from evothesis.storage.pool import create_pool

__all__ = ["create_pixel_management_app"]

logger = logging.getLogger("evothesis.pixel_management")


def _nothing_cached() -> None:
    """The standalone service caches no lookups, so a change has nothing to invalidate."""


def create_pixel_management_app(
    settings: Settings,
    *,
    database_url: str,
    on_change: Callable[[], None] | None = None,
) -> FastAPI:
    """Build the service; the pool and store are created in the lifespan, not here.

    ``on_change`` becomes ``app.state.registry_changed``, called after every successful
    change (tests observe it; the standalone service needs nothing done).
    """
    box = settings.secret_box()  # fail at start-up, not on the first request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            database_url, min_size=settings.pool_size, max_size=settings.pool_max_size
        )
        registry = RegistryStore(pool, box)
        app.state.pool = pool
        app.state.registry = registry
        try:
            if settings.is_development:
                await registry.ensure_development_client()
            yield
        finally:
            await pool.close()

    app = new_api("Evothesis pixel management", settings, lifespan)
    app.state.registry_changed = on_change or _nothing_cached
    app.add_api_route("/health", health, methods=["GET"], summary="Database status")
    include_pixel_management(app)
    return app


async def health(request: Request) -> Response:
    """200 when the registry database answers, 503 otherwise; load balancers poll this."""
    body: dict[str, object] = {
        "status": "healthy",
        "database": "connected",
        "service": "pixel-management",
        "version": __version__,
        "timestamp": iso_millis(datetime.now(UTC)),
    }
    try:
        await EventStore(request.app.state.pool).ping()
    except StorageUnavailable as exc:
        body.update(status="unhealthy", database="disconnected", error=exc.message)
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)
