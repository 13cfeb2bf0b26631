"""How the collector is put on a socket; shared by the CLI and the test suite."""

from __future__ import annotations

import uvicorn

from evothesis.app import Evothesis


def uvicorn_config(
    app: Evothesis, *, host: str, port: int, access_log: bool = False
) -> uvicorn.Config:
    """Uvicorn settings Evothesis depends on.

    ``proxy_headers`` is off because forwarded headers are interpreted by our own
    ``TRUSTED_PROXIES`` logic; uvicorn's would rewrite the peer address first.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_config=None,
        proxy_headers=False,
        server_header=False,
    )
