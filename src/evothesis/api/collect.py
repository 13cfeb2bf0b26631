"""POST/GET/OPTIONS /collect as a bare ASGI endpoint: the hot path skips the framework.

FastAPI's routing and middleware stack costs ~130 µs a request on this hardware, more
than parsing and storing an event; /collect is the one route where that matters, so it
is served directly and documented in the OpenAPI schema by hand (``COLLECT_OPENAPI``).

``GET /collect?eventType=…&siteId=…`` is the image pixel (``ingest/query_event.py``): the
same event as a POST, answered with a transparent 1x1 GIF when it is stored or spooled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii

import orjson

from evothesis.api.deps import Runtime
from evothesis.api.errors import error_body, error_payload
from evothesis.api.transport.asgi import Receive, Scope, Send
from evothesis.api.transport.client_ip import client_ip
from evothesis.api.transport.deadlines import ReadDeadlines
from evothesis.clock import iso_millis
from evothesis.domain import ClientConfig, RequestContext
from evothesis.errors import (
    EvothesisError,
    MalformedBody,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from evothesis.ingest.collector import CollectResult
from evothesis.ingest.envelope import check_media_type
from evothesis.ingest.query_event import EVENT_FIELDS, event_from_query
from evothesis.privacy import signal_on

PATH = "/collect"
_ALLOWED_METHODS = ("GET", "POST", "OPTIONS")

#: The pixel's answer: a transparent 1x1 GIF (43 bytes), never cached, so each view counts.
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_PIXEL_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"cache-control", b"no-store, max-age=0"),
]

#: Request headers the endpoint reads; the rest are never decoded.
_WANTED_HEADERS = frozenset(
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

_EVENT_PROPERTIES: dict[str, object] = {
    "eventType": {"type": "string", "minLength": 1, "maxLength": 100},
    "eventId": {"type": "string", "format": "uuid"},
    "sessionId": {"type": "string", "maxLength": 256},
    "visitorId": {"type": "string", "maxLength": 256},
    "siteId": {"type": "string", "minLength": 1, "maxLength": 253},
    "timestamp": {"type": "string", "format": "date-time"},
    "url": {"type": "string", "maxLength": 8192},
    "path": {"type": "string", "maxLength": 4096},
    "referrer": {"type": "string", "maxLength": 8192},
    "eventData": {"type": "object"},
    "attribution": {"type": "object"},
}

#: The /collect operation as it appears in /openapi.json.
COLLECT_OPENAPI: dict[str, object] = {
    "post": {
        "tags": ["collection"],
        "summary": "Collect events",
        "description": "Store a single event or a batch envelope; 200 means every event "
        "is committed to PostgreSQL. Inner events inherit sessionId, visitorId, siteId, "
        "timestamp, url, path and referrer from the envelope.",
        "operationId": "collect",
        "parameters": [
            {
                "name": "X-Write-Key",
                "in": "header",
                "required": False,
                "description": "The client's write key; required when neither Origin nor "
                "Referer is sent.",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["eventType", "siteId"],
                        "properties": {
                            **_EVENT_PROPERTIES,
                            "events": {
                                "type": "array",
                                "maxItems": 500,
                                "items": {
                                    "type": "object",
                                    "required": ["eventType"],
                                    "properties": _EVENT_PROPERTIES,
                                },
                            },
                        },
                    }
                },
                "text/plain": {"schema": {"type": "string"}},
            },
        },
        "responses": {
            "200": {
                "description": "Every valid event is committed; inner events of a batch "
                "that failed validation are kept in failed_events and counted in "
                "events_rejected, with the first reasons in rejected_reasons."
            },
            "202": {
                "description": "The database is unreachable: every event is fsync'ed to the "
                "disk spool and will be stored when it returns."
            },
            "400": {"description": "Malformed JSON."},
            "401": {
                "description": "No Origin or Referer, and no valid X-Write-Key "
                "(server-to-server senders authenticate with the client's write key)."
            },
            "403": {
                "description": "The siteId is not authorized for any client, or the page "
                "(Origin/Referer) belongs to another client."
            },
            "413": {"description": "Body or batch too large."},
            "408": {"description": "The body did not arrive within BODY_READ_TIMEOUT."},
            "415": {"description": "Unsupported Content-Type or Content-Encoding."},
            "422": {
                "description": "The event or the batch envelope has the wrong shape; the "
                "error names the field."
            },
            "503": {"description": "Storage unavailable; retry after Retry-After seconds."},
        },
    },
    "get": {
        "tags": ["collection"],
        "summary": "Collect one event from query parameters (image pixel)",
        "description": "For <img> and <noscript> pixels: the parameters named like an "
        "event's fields are those fields, `eventData.<name>` and any other parameter go "
        "into eventData as strings. Authorized by the page (Referer) like a POST; the same "
        "privacy and limits apply. A batch cannot be sent this way.",
        "operationId": "collect_pixel",
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": name in ("eventType", "siteId"),
                "schema": _EVENT_PROPERTIES[name],
            }
            for name in sorted(EVENT_FIELDS)
        ],
        "responses": {
            "200": {
                "description": "Stored: a transparent 1x1 GIF, not cacheable.",
                "content": {"image/gif": {}},
            },
            "202": {
                "description": "Spooled to disk (the database is unreachable): the same GIF.",
                "content": {"image/gif": {}},
            },
            "400": {"description": "A query string that is not percent-encoded UTF-8."},
            "403": {
                "description": "The siteId is not authorized, or the page is another client's."
            },
            "413": {"description": "Query string too long, or too many parameters."},
            "422": {"description": "The event has the wrong shape; the error names the field."},
            "503": {"description": "Storage unavailable; retry after Retry-After seconds."},
        },
    },
    "options": {
        "tags": ["collection"],
        "summary": "CORS preflight for /collect",
        "operationId": "collect_preflight",
        "responses": {"204": {"description": "CORS headers for the requesting origin."}},
    },
}


class CollectEndpoint:
    """ASGI app for /collect; reads its collaborators from the runtime at call time, because
    the lifespan starts them after this object is built."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _WANTED_HEADERS
        }
        method = scope["method"]
        if method not in _ALLOWED_METHODS:
            body = error_body("method_not_allowed", f"{method} is not allowed on {PATH}")
            allow = ", ".join(_ALLOWED_METHODS).encode()
            await _send(send, 405, orjson.dumps(body), [(b"allow", allow)])
            return
        collector = self._runtime.ingestion.collector
        origin = headers.get("origin")
        # The page is resolved once: its owner decides the CORS answer and, for a POST,
        # whether the page may send events for the siteId's client.
        page = origin if origin is not None else headers.get("referer")
        try:
            page_owner = await collector.page_owner(page)
        except EvothesisError as exc:
            await _send_error(send, exc, [])
            return
        cors = _cors_headers(origin) if origin is not None and page_owner is not None else []
        if method == "OPTIONS":
            if origin is not None and page_owner is None:
                body = error_body(
                    "unauthorized_origin", f"origin {origin[:100]!r} is not a registered site"
                )
                await _send(send, 403, orjson.dumps(body), [])
            else:
                await _send(send, 204, b"", _preflight_headers(headers, cors))
            return
        try:
            result = await self._collect(scope, receive, headers, page_owner)
        except EvothesisError as exc:
            await _send_error(send, exc, cors)
            return
        status = 202 if result.spooled else 200
        if method == "GET":
            await _send(send, status, PIXEL_GIF, [*cors, *_PIXEL_HEADERS])
        else:
            await _send(send, status, orjson.dumps(success_body(result)), cors)

    async def _collect(
        self,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        page_owner: ClientConfig | None,
    ) -> CollectResult:
        runtime = self._runtime
        settings = runtime.settings
        if scope["method"] == "GET":
            body = event_from_query(scope["query_string"], max_bytes=settings.max_body_bytes)
        else:
            check_media_type(headers.get("content-type"))
            assert runtime.deadlines is not None  # started with the ingestion
            body = await _read_body(receive, headers, settings.max_body_bytes, runtime.deadlines)
        peer = scope.get("client")
        context = RequestContext(
            client_ip=client_ip(peer[0] if peer else None, headers, settings.trusted_proxies),
            user_agent=headers.get("user-agent"),
            received_at=runtime.clock.now(),
            origin=headers.get("origin"),
            referer=headers.get("referer"),
            write_key=write_key(headers),
            dnt=signal_on(headers.get("dnt")),
            gpc=signal_on(headers.get("sec-gpc")),
        )
        return await runtime.ingestion.collector.collect(body, context, page_owner)


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


async def _send_error(send: Send, error: EvothesisError, cors: list[tuple[bytes, bytes]]) -> None:
    status, payload, extra = error_payload(error)
    headers = [*cors, *((k.encode(), v.encode()) for k, v in extra.items())]
    await _send(send, status, orjson.dumps(payload), headers)


def success_body(result: CollectResult) -> dict[str, object]:
    """The seed's answer, plus what was rejected: events dropped by a privacy signal or the
    bot policy are acknowledged, not stored; inner events that failed validation are
    counted and described in ``events_rejected`` and ``rejected_reasons``."""
    if result.dropped_because is not None:
        message = (
            f"{result.events_dropped} event(s) received and dropped: "
            f"{result.dropped_because.explanation}"
        )
    elif result.spooled:
        message = (
            f"{result.events_processed} event(s) received and spooled to disk; they are "
            "stored when the database is back"
        )
    else:
        message = f"{result.events_processed} event(s) received and stored"
    if result.duplicates:
        message += f"; {result.duplicates} repeated event id(s) stored once"
    if result.events_rejected:
        message += f"; {result.events_rejected} invalid event(s) rejected (see rejected_reasons)"
    body: dict[str, object] = {
        "status": "accepted" if result.spooled else "success",
        "message": message,
        "events_processed": result.events_processed,
        "client_id": result.client_id,
        "timestamp": iso_millis(result.received_at),
        "events_rejected": result.events_rejected,
        "rejected_reasons": list(result.rejected_reasons),
    }
    if result.events_dropped:
        body["events_dropped"] = result.events_dropped
    if result.duplicates:
        body["duplicate_events"] = result.duplicates
    if result.event_id is not None:
        body["event_id"] = result.event_id
    return body


def _cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    """Registered sites post cross-origin; echo their origin so the browser may read answers.
    Origins of no client get no CORS headers at all, so their pages cannot read answers."""
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", b"Retry-After"),
        (b"vary", b"Origin"),
    ]


def _preflight_headers(
    headers: dict[str, str], cors: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    requested = headers.get("access-control-request-headers", "Content-Type")
    return [
        *cors,
        (b"access-control-allow-methods", b"POST, OPTIONS"),
        (b"access-control-allow-headers", requested.encode("latin-1")),
        (b"access-control-max-age", b"86400"),
    ]


async def _read_body(
    receive: Receive, headers: dict[str, str], limit: int, deadlines: ReadDeadlines
) -> bytes:
    """Read at most ``limit`` bytes before the read deadline (a stalled sender must not
    hold a connection and a task forever), refusing early on a large Content-Length."""
    if headers.get("content-encoding", "identity").lower() != "identity":
        raise UnsupportedMediaType("compressed request bodies are not accepted")
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedBody(f"invalid Content-Length header: {declared[:40]!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body is {declared} bytes; at most {limit} accepted")
    reader = deadlines.begin()
    try:
        return await _receive_all(receive, limit)
    except asyncio.CancelledError:
        timeout = deadlines.timed_out(reader)
        if timeout is None:
            raise
        raise timeout from None
    finally:
        deadlines.end(reader)


async def _receive_all(receive: Receive, limit: int) -> bytes:
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


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """Send a whole answer; its body is JSON unless ``headers`` name another type."""
    response_headers = [*headers, (b"content-length", str(len(body)).encode())]
    if body and not any(name == b"content-type" for name, _ in headers):
        response_headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})
