"""The same-run baseline: a bare ASGI app that reads the body and answers 204.

It bounds what any Python collector can do on this machine with this load generator, so
the collector's figures are reported as a ratio against it, measured minutes apart.
"""

from __future__ import annotations

from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
