"""The HTTP edge: what a connection may cost before it is a request, and the project's JSON
error body on every answer the HTTP layer writes by itself.

The collector may face the internet with no nginx in front (``scripts/serve``), and
uvicorn's httptools protocol bounds nothing before a request starts: a connection that
sends nothing, or half a head, stays open for good (the keep-alive timer only runs between
requests, and any byte stops it); httptools buffers a header of any size (64 MiB cost
120 MB); malformed input is answered with a plain-text 400. This protocol adds:

* a deadline for the head: ``header_timeout`` from the connection (or from a following
  request's first byte) to the end of its headers; then a 408, or only closing when
  nothing came at all (a browser's spare connection, a port scan);
* a budget for the head: ``max_header_bytes`` for the request line and headers, counted as
  the bytes arrive, before the parser buffers them, and ``max_headers`` fields; then 431.
  (httptools says where a head ends only by calling back: a pipelined request's head that
  begins in the read that ended the request before it is counted from the next read);
* a cap on connections that are not in a request (new, kept alive, sending a head): past
  ``max_idle_connections`` the longest idle one is closed, so idle connections cannot use
  up the process's file descriptors;
* JSON bodies of the project's shape on what the protocol answers itself: 400 (not HTTP),
  408, 431, and 500 (the application failed before answering).

After such an error the connection is half-closed and what the sender still sends is read
and dropped for ``LINGER_SECONDS`` before it is closed: closing with unread input makes the
kernel reset the connection, and a reset can destroy the answer before the sender reads it.

One task per server checks the deadlines a few times per timeout, as ``deadlines.py`` does
for bodies: a timer per connection would cost every request to arm and cancel.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import httptools
import orjson
from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle
from uvicorn.server import ServerState

from evothesis.api.errors import error_payload, internal_error_body
from evothesis.api.transport.one_write import OneWriteHttpToolsProtocol
from evothesis.errors import EvothesisError, HeadersTooLarge, MalformedRequest, RequestTimeout

__all__ = ["LINGER_SECONDS", "EdgeHttpProtocol", "EdgeLimits", "error_response"]

#: How long the rest of a refused request is read and dropped before the connection closes.
LINGER_SECONDS: Final = 2.0

#: The watch looks at least this often, so a deadline is overshot by at most a quarter.
_CHECKS_PER_TIMEOUT: Final = 4
_MAX_CHECK_INTERVAL: Final = 1.0

_INTERNAL_ERROR: Final = orjson.dumps(internal_error_body())


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """The bounds of one server (``HEADER_READ_TIMEOUT``, ``MAX_HEADER_BYTES``,
    ``MAX_HEADERS``, ``MAX_IDLE_CONNECTIONS``)."""

    header_timeout: float
    max_header_bytes: int
    max_headers: int
    max_idle_connections: int


def error_response(error: EvothesisError, default_headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 answer for ``error``, with its JSON body, closing the connection."""
    status, body, headers = error_payload(error)
    content = orjson.dumps(body)
    parts = [STATUS_LINE[status]]
    for name, value in [
        *default_headers,
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"connection", b"close"),
    ]:
        parts += [name, b": ", value, b"\r\n"]
    parts += [b"\r\n", content]
    return b"".join(parts)


class _Watch:
    """One server's connections that are not in a request, longest idle first, and the task
    that closes those whose deadline passed."""

    def __init__(self, limits: EdgeLimits) -> None:
        self.limits = limits
        self.waiting: dict[EdgeHttpProtocol, None] = {}
        self._interval = min(_MAX_CHECK_INTERVAL, limits.header_timeout / _CHECKS_PER_TIMEOUT)
        self._task: asyncio.Task[None] | None = None

    def wait(self, protocol: EdgeHttpProtocol) -> None:
        """``protocol`` is not in a request from now on; the longest idle connection is
        closed if there are too many such."""
        waiting = self.waiting
        waiting.pop(protocol, None)
        waiting[protocol] = None
        if len(waiting) > self.limits.max_idle_connections:
            oldest = next(iter(waiting))
            del waiting[oldest]
            oldest.transport.close()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._watch(), name="http-edge-watch"
            )

    def busy(self, protocol: EdgeHttpProtocol) -> None:
        self.waiting.pop(protocol, None)

    async def _watch(self) -> None:
        """Runs while some connection waits; the next one to wait starts it again."""
        loop = asyncio.get_running_loop()
        try:
            while self.waiting:
                await asyncio.sleep(self._interval)
                now = loop.time()
                for protocol in list(self.waiting):
                    protocol.expire(now)
        finally:
            self._task = None


#: The watch of each running server (``ServerState`` is one server's shared state).
_WATCHES: weakref.WeakKeyDictionary[ServerState, _Watch] = weakref.WeakKeyDictionary()


class _JsonErrorCycle(RequestResponseCycle):
    """uvicorn's request cycle, with the 500 it sends for an application that failed
    before answering in the project's JSON shape."""

    async def send_500_response(self) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_INTERNAL_ERROR)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": _INTERNAL_ERROR})


class EdgeHttpProtocol(OneWriteHttpToolsProtocol):
    """uvicorn's httptools protocol (over the one-write transport) within ``EdgeLimits``.

    uvicorn builds one per connection with its own arguments; ``server.py`` binds
    ``limits`` with a ``functools.partial``.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: EdgeLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        watch = _WATCHES.get(server_state)
        if watch is None:
            watch = _WATCHES[server_state] = _Watch(limits)
        self._watch = watch
        #: Between a message's end and its successor's headers' end (the head is read).
        self._in_head = True
        #: Bytes of the head in progress received so far.
        self._head_bytes = 0
        #: Whether a byte of the head in progress has arrived.
        self._head_started = False
        #: When the head in progress must be complete: set on connecting and on a following
        #: request's first byte (an idle kept-alive connection has uvicorn's own timeout).
        self._head_deadline: float | None = None
        #: Input is dropped: the connection was answered with an error, or asked to upgrade.
        self._ignoring_input = False
        #: When a refused connection is closed, whatever the sender still does.
        self._linger_deadline: float | None = None

    # uvicorn narrows asyncio.Protocol's connection_made to a Transport (see one_write.py).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline = self.loop.time() + self._limits.header_timeout
        self._watch.wait(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._watch.busy(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._ignoring_input:
            return
        self._unset_keepalive_if_required()
        limit = self._limits.max_header_bytes
        if not self._in_head or self._head_bytes + len(data) <= limit:
            if self._in_head:
                self._head_bytes += len(data)
            self._feed(data)
            return
        # Over budget unless the head ends within it: parse up to the budget and look.
        room = limit - self._head_bytes
        self._head_bytes = limit
        self._feed(data[:room])
        if self._ignoring_input:
            return
        if self._in_head and self._head_bytes == limit:  # still the same head
            self._refuse(HeadersTooLarge(f"the request line and headers exceed {limit} bytes"))
            return
        # The head ended: the rest is its body or the next request (whose head, if it began
        # within the budget, is counted from here on).
        self.data_received(data[room:])

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Nothing here speaks another protocol (WebSockets are off): the request is
            # answered as plain HTTP, and as what follows its head is not, the connection
            # closes after the answer.
            self._ignoring_input = True
            self.cycle.keep_alive = False
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, EvothesisError):  # raised by a callback below
                self._refuse(cause)
            else:
                self.logger.warning("Invalid HTTP request received: %s", exc)
                self._refuse(MalformedRequest(f"invalid HTTP request: {exc}"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_deadline is None:
            self._head_deadline = self.loop.time() + self._limits.header_timeout
        self._head_started = True

    def on_headers_complete(self) -> None:
        limit = self._limits.max_headers
        if len(self.headers) > limit:
            raise HeadersTooLarge(
                f"a request may have at most {limit} header fields; this one has "
                f"{len(self.headers)}"
            )
        self._in_head = self._head_started = False
        self._head_deadline = None
        self._watch.busy(self)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # kept alive, waiting for a request
            self._watch.wait(self)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # uvicorn builds the cycle itself, of its own class; changing the class of that
        # instance to a subclass that only overrides one method is what lets the 500 it
        # sends speak JSON without copying uvicorn's request handling.
        cycle.__class__ = _JsonErrorCycle
        super()._start_asgi_task(cycle, app)

    def expire(self, now: float) -> None:
        """Close or refuse the connection if its deadline has passed (called by the watch)."""
        if self._linger_deadline is not None:
            if now >= self._linger_deadline:
                self.transport.close()
        elif self._head_deadline is not None and now >= self._head_deadline:
            if self._head_started:
                seconds = self._limits.header_timeout
                self._refuse(
                    RequestTimeout(f"the request headers did not arrive within {seconds:g} s")
                )
            else:
                self.transport.close()

    def _refuse(self, error: EvothesisError) -> None:
        """Answer ``error`` and close the connection, reading and dropping input meanwhile."""
        self._ignoring_input = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()  # nothing can follow half an answer
                return
            # The request being served gets this answer; its own, if the application still
            # sends one, goes nowhere (as after a disconnect).
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(error_response(error, self.server_state.default_headers))
        self.transport.write_eof()
        self.flow.resume_reading()
        self._head_deadline = None
        self._linger_deadline = self.loop.time() + LINGER_SECONDS
        self._watch.wait(self)
