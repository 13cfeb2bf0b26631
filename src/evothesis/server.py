"""How the collector is put on a socket; shared by the CLI and the test suite."""

from __future__ import annotations

from functools import partial
from typing import Any

import uvicorn
from fastapi import FastAPI

from evothesis.api.transport.edge import EdgeHttpProtocol, EdgeLimits
from evothesis.app import Evothesis
from evothesis.config import Settings

#: ``proxy_headers`` is off because forwarded headers are interpreted by our own
#: ``TRUSTED_PROXIES`` logic; uvicorn's would rewrite the peer address first. A client that
#: stalls must not hold a shutdown (SIGTERM, rolling deploys) forever: after
#: ``GRACEFUL_SHUTDOWN_SECONDS`` the remaining connections are closed; what was already
#: acknowledged is durable either way. Nothing here speaks WebSocket, so uvicorn does not
#: offer to (its handshake refusals would be its own, not JSON).
GRACEFUL_SHUTDOWN_SECONDS = 20
#: A connection kept alive after an answer is closed when no request starts within this
#: (nginx's upstream keep-alive in deploy/nginx is shorter, so it never reuses one we close).
KEEP_ALIVE_SECONDS = 5
_OPTIONS: dict[str, Any] = {
    "log_config": None,
    "proxy_headers": False,
    "server_header": False,
    "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    "ws": "none",
}

#: Import path of the factory each worker process calls (``--workers`` > 1).
WORKER_FACTORY = "evothesis.app:app_from_environment"


def edge_limits(settings: Settings) -> EdgeLimits:
    return EdgeLimits(
        header_timeout=settings.header_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        max_idle_connections=settings.max_idle_connections,
    )


def _options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options; the protocol is a ``partial`` (it pickles, for worker processes)
    that gives every connection the edge limits."""
    return {**_OPTIONS, "http": partial(EdgeHttpProtocol, limits=edge_limits(settings))}


def uvicorn_config(
    app: Evothesis | FastAPI,
    *,
    host: str,
    port: int,
    settings: Settings,
    access_log: bool = False,
) -> uvicorn.Config:
    """Config for one in-process server (tests, ``serve --workers 1``, pixel management)."""
    return uvicorn.Config(app, host=host, port=port, access_log=access_log, **_options(settings))


def run_workers(
    *, host: str, port: int, workers: int, access_log: bool, settings: Settings
) -> None:
    """Fork ``workers`` processes sharing one listening socket, each with its own pool.

    Workers rebuild the app from the environment, so ``DATABASE_URL`` must be set.
    """
    uvicorn.run(
        WORKER_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        **_options(settings),
    )
