"""How the collector is put on a socket; shared by the CLI and the test suite."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI

from evothesis.api.transport.one_write import OneWriteHttpToolsProtocol
from evothesis.app import Evothesis

#: ``proxy_headers`` is off because forwarded headers are interpreted by our own
#: ``TRUSTED_PROXIES`` logic; uvicorn's would rewrite the peer address first. A client that
#: stalls must not hold a shutdown (SIGTERM, rolling deploys) forever: after
#: ``GRACEFUL_SHUTDOWN_SECONDS`` the remaining connections are closed; what was already
#: acknowledged is durable either way.
GRACEFUL_SHUTDOWN_SECONDS = 20
_OPTIONS: dict[str, Any] = {
    "log_config": None,
    "proxy_headers": False,
    "server_header": False,
    "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    "http": OneWriteHttpToolsProtocol,
}

#: Import path of the factory each worker process calls (``--workers`` > 1).
WORKER_FACTORY = "evothesis.app:app_from_environment"


def uvicorn_config(
    app: Evothesis | FastAPI, *, host: str, port: int, access_log: bool = False
) -> uvicorn.Config:
    """Config for one in-process server (tests, ``serve --workers 1``, pixel management)."""
    return uvicorn.Config(app, host=host, port=port, access_log=access_log, **_OPTIONS)


def run_workers(*, host: str, port: int, workers: int, access_log: bool) -> None:
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
        **_OPTIONS,
    )
