"""The FastAPI application shell both services share: naming, error shapes, the runtime."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from evothesis import __version__
from evothesis.api.deps import Runtime
from evothesis.api.errors import install_error_handlers
from evothesis.api.transport.access_log import install_private_access_log


def _operation_id(route: object) -> str:
    """OpenAPI operation ids are the handler names: stable and readable in clients."""
    return route.name if isinstance(route, APIRoute) else str(route)


def new_api(
    title: str,
    runtime: Runtime,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
) -> FastAPI:
    """A FastAPI app with our error bodies installed, serving with ``runtime``."""
    app = FastAPI(
        title=title,
        version=__version__,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    runtime.attach(app)
    install_error_handlers(app)
    install_private_access_log()
    return app
