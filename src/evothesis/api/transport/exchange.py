"""One HTTP exchange of the bare ingestion endpoints (/collect and the Segment API's
/v1/*): the headers they read, the write key a request carries, CORS for registered pages,
reading a body within its size and time limits (decompressing it when allowed), and
sending an answer in one piece.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import orjson

from evothesis.api.errors import error_body, error_payload
from evothesis.api.transport.asgi import Receive, Scope, Send
from evothesis.api.transport.client_ip import client_ip
from evothesis.api.transport.deadlines import ReadDeadlines
from evothesis.config import IPNetwork
from evothesis.domain import ClientConfig, RequestContext
from evothesis.errors import EvothesisError, MalformedBody, PayloadTooLarge, UnsupportedMediaType
from evothesis.privacy import signal_on

__all__ = [
    "ErrorSender",
    "Page",
    "cors_headers",
    "gunzip",
    "page_or_answer",
    "preflight_headers",
    "read_body",
    "receive_all",
    "request_context",
    "request_headers",
    "send",
    "send_error",
    "write_key",
]

#: Request headers the endpoints read; the rest are never decoded.
_WANTED_HEADERS: Final = frozenset(
    {
        b"content-type",
        b"content-length",
        b"content-encoding",
        b"origin",
        b"referer",
        b"user-agent",
        b"x-write-key",
        b"authorization",
        b"dnt",
        b"sec-gpc",
        b"x-forwarded-for",
        b"x-real-ip",
        b"access-control-request-headers",
    }
)

#: What a gzip body is taken as: the gzip format only (``wbits`` 16 + 15), as Segment's
#: SDKs send it.
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS


def request_headers(scope: Scope) -> dict[str, str]:
    """The headers the endpoints read, by lower-case name."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _WANTED_HEADERS
    }


#: Answers an error in the endpoint's own shape (/collect's, or the Segment API's).
ErrorSender = Callable[[Send, EvothesisError, list[tuple[bytes, bytes]]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Page:
    """The page a request says it comes from (``Origin``, else ``Referer``), resolved once:
    its owner decides the CORS answer and whether the page may send for a client."""

    owner: ClientConfig | None
    cors: list[tuple[bytes, bytes]]


async def page_or_answer(
    scope: Scope,
    headers: dict[str, str],
    send_to: Send,
    owner_of: Callable[[str | None], Awaitable[ClientConfig | None]],
    send_failure: ErrorSender,
    *,
    methods: tuple[str, ...] = ("POST", "OPTIONS"),
) -> Page | None:
    """The request's page, or ``None`` once the request has been answered here: a method
    not in ``methods`` (405), a registry that cannot say who owns the page, or a CORS
    preflight (204 for registered pages and requests without an Origin, else 403)."""
    method = scope["method"]
    if method not in methods:
        body = error_body("method_not_allowed", f"{method} is not allowed on {scope['path']}")
        allow = ", ".join(methods).encode()
        await send(send_to, 405, orjson.dumps(body), [(b"allow", allow)])
        return None
    origin = headers.get("origin")
    try:
        owner = await owner_of(origin if origin is not None else headers.get("referer"))
    except EvothesisError as exc:
        await send_failure(send_to, exc, [])
        return None
    cors = cors_headers(origin) if origin is not None and owner is not None else []
    if method == "OPTIONS":
        if origin is not None and owner is None:
            body = error_body(
                "unauthorized_origin", f"origin {origin[:100]!r} is not a registered site"
            )
            await send(send_to, 403, orjson.dumps(body), [])
        else:
            await send(send_to, 204, b"", preflight_headers(headers, cors))
        return None
    return Page(owner, cors)


def request_context(
    scope: Scope,
    headers: dict[str, str],
    *,
    received_at: datetime,
    proxies: Sequence[IPNetwork],
) -> RequestContext:
    """What the request itself says of every event it carries: the sender's address
    (behind trusted ``proxies``), agent, page, write key and privacy signals."""
    peer = scope.get("client")
    return RequestContext(
        client_ip=client_ip(peer[0] if peer else None, headers, proxies),
        user_agent=headers.get("user-agent"),
        received_at=received_at,
        origin=headers.get("origin"),
        referer=headers.get("referer"),
        write_key=write_key(headers),
        dnt=signal_on(headers.get("dnt")),
        gpc=signal_on(headers.get("sec-gpc")),
    )


def write_key(headers: dict[str, str]) -> str | None:
    """The write key a request carries: ``X-Write-Key``, or the user name of HTTP Basic
    authentication (how Segment-style SDKs send it). An Authorization header that is Basic
    but unreadable is a key that cannot match, not an absent one: the request is refused
    rather than treated as carrying no key."""
    key = headers.get("x-write-key")
    if key is not None:
        return key
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[0]


async def send_error(send_to: Send, error: EvothesisError, cors: list[tuple[bytes, bytes]]) -> None:
    """The error's status and JSON body (``api.errors``), with ``cors`` and its headers."""
    status, payload, extra = error_payload(error)
    headers = [*cors, *((k.encode(), v.encode()) for k, v in extra.items())]
    await send(send_to, status, orjson.dumps(payload), headers)


def cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    """Registered sites post cross-origin; echo their origin so the browser may read answers.
    Origins of no client get no CORS headers at all, so their pages cannot read answers."""
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", b"Retry-After"),
        (b"vary", b"Origin"),
    ]


def preflight_headers(
    headers: dict[str, str], cors: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """A preflight's answer: the methods the endpoints take, the headers the page asked for."""
    requested = headers.get("access-control-request-headers", "Content-Type")
    return [
        *cors,
        (b"access-control-allow-methods", b"POST, OPTIONS"),
        (b"access-control-allow-headers", requested.encode("latin-1")),
        (b"access-control-max-age", b"86400"),
    ]


async def read_body(
    receive: Receive,
    headers: dict[str, str],
    limit: int,
    deadlines: ReadDeadlines,
    *,
    gzip: bool = False,
) -> bytes:
    """Read at most ``limit`` bytes before the read deadline (a stalled sender must not
    hold a connection and a task forever), refusing early on a large Content-Length.

    With ``gzip``, a ``Content-Encoding: gzip`` body is accepted and decompressed, to at
    most ``limit`` bytes too: a few kilobytes of gzip can stand for gigabytes of JSON, so
    the limit is on what is parsed, checked while decompressing, never after.
    """
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity" and not (gzip and encoding == "gzip"):
        raise UnsupportedMediaType(
            "only gzip request bodies are accepted here"
            if gzip
            else "compressed request bodies are not accepted"
        )
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedBody(f"invalid Content-Length header: {declared[:40]!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body is {declared} bytes; at most {limit} accepted")
    reader = deadlines.begin()
    try:
        body = await receive_all(receive, limit)
    except asyncio.CancelledError:
        timeout = deadlines.timed_out(reader)
        if timeout is None:
            raise
        raise timeout from None
    finally:
        deadlines.end(reader)
    return body if encoding == "identity" else gunzip(body, limit)


def gunzip(data: bytes, limit: int) -> bytes:
    """A gzip body decompressed, refused (413) as soon as it passes ``limit`` bytes."""
    inflater = zlib.decompressobj(_GZIP_WBITS)
    try:
        body = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise MalformedBody(f"the gzip body cannot be decompressed: {exc}") from None
    if len(body) > limit:
        raise PayloadTooLarge(f"the decompressed body exceeds {limit} bytes")
    if not inflater.eof:
        raise MalformedBody("the gzip body is truncated")
    if inflater.unused_data.strip(b"\x00"):
        raise MalformedBody("the gzip body has data after its end")
    return body


async def receive_all(receive: Receive, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes of it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise MalformedBody("client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send(send_to: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """The answer in one start and one body message (``one_write`` joins them); its body is
    JSON unless ``headers`` name another type."""
    response_headers = [*headers, (b"content-length", str(len(body)).encode())]
    if body and not any(name == b"content-type" for name, _ in headers):
        response_headers.append((b"content-type", b"application/json"))
    await send_to({"type": "http.response.start", "status": status, "headers": response_headers})
    await send_to({"type": "http.response.body", "body": body})
