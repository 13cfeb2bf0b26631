"""uvicorn's HTTP protocol with each response sent in one write instead of two.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and the body on ``http.response.body``: two ``send()`` system
calls, two TCP segments on the wire, and on loopback two wake-ups of the reader. For
/collect's small answers the first of those writes was the most expensive line of the
whole request in a py-spy profile. Here writes are joined and handed to the socket once
the callbacks already queued on the event loop have run: an ASGI app that sends start and
body back to back (as /collect does) has its response leave in one piece.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class OneWriteTransport:
    """Forwards everything to ``transport``; ``write`` is deferred until the callbacks
    already queued on the loop have run, so the writes made until then become one
    ``send()``."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        """Hand what was written to the real transport (which buffers if the peer is slow)."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` over a ``OneWriteTransport``."""

    # Both ignores are uvicorn's shape, not a guess: it narrows asyncio.Protocol's
    # connection_made to a Transport (as this override does, with the same ignore in
    # uvicorn), and the stand-in passed on is duck-typed, forwarding what it does not do.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport, self.loop))  # type: ignore[arg-type]
