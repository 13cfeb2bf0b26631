"""The standalone pixel-management service: the client registry on its own port.

Collectors reach it over HTTP (``PIXEL_MANAGEMENT_URL``); operators and provisioning
scripts use its admin API. The same routes can also live inside a collector
(``api.routes.registry.include_pixel_management``); this factory is for running them alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.responses import Response

from evothesis import __version__
from evothesis.api.deps import ClockDep, Runtime, ServicesDep
from evothesis.api.factory import new_api
from evothesis.api.responses import JSONResponse
from evothesis.api.routes.registry import include_pixel_management
from evothesis.clock import SystemClock, iso_millis
from evothesis.config import Settings
from evothesis.errors import StorageUnavailable
from evothesis.services import open_services, secret_box
from evothesis.storage.events import EventStore

__all__ = ["create_pixel_management_app"]


def create_pixel_management_app(
    settings: Settings,
    *,
    database_url: str,
    on_change: Callable[[], None] | None = None,
) -> FastAPI:
    """Build the service; the pool and store are opened in the lifespan, not here.

    ``on_change`` is called after every successful change of the registry (tests observe
    it; the standalone service caches nothing, so it needs nothing done).
    """
    secret_box(settings)  # fail at start-up, not on the first request
    runtime = Runtime(settings, SystemClock())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(
            settings, database_url=database_url, clock=runtime.clock, development_client=True
        ) as services:
            if on_change is not None and services.registry is not None:
                services.registry.on_change(on_change)
            runtime.start(services)
            try:
                yield
            finally:
                runtime.stop()

    app = new_api("Evothesis pixel management", runtime, lifespan)
    app.add_api_route("/health", health, methods=["GET"], summary="Database status")
    include_pixel_management(app)
    return app


async def health(services: ServicesDep, clock: ClockDep) -> Response:
    """200 when the registry database answers, 503 otherwise; load balancers poll this."""
    body: dict[str, object] = {
        "status": "healthy",
        "database": "connected",
        "service": "pixel-management",
        "version": __version__,
        "timestamp": iso_millis(clock.now()),
    }
    try:
        await EventStore(services.pool).ping()
    except StorageUnavailable as exc:
        body.update(status="unhealthy", database="disconnected", error=exc.message)
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)
