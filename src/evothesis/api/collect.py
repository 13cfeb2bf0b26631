"""POST/OPTIONS /collect: read the body within limits, run the collector, answer the seed shape."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from evothesis.api.client_ip import client_ip
from evothesis.api.errors import error_response
from evothesis.api.responses import JSONResponse
from evothesis.clock import iso_millis
from evothesis.config import Settings
from evothesis.domain import RequestContext
from evothesis.errors import EvothesisError, MalformedBody, PayloadTooLarge, UnsupportedMediaType
from evothesis.ingest.collector import Collector
from evothesis.ingest.envelope import check_media_type

router = APIRouter(tags=["collection"])

#: The body as documented in OpenAPI; the handler parses it itself for speed.
EVENT_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["eventType", "siteId"],
    "properties": {
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
        "events": {
            "type": "array",
            "maxItems": 500,
            "items": {
                "type": "object",
                "required": ["eventType"],
                "properties": {
                    "eventType": {"type": "string", "minLength": 1, "maxLength": 100},
                    "eventId": {"type": "string", "format": "uuid"},
                    "timestamp": {"type": "string", "format": "date-time"},
                    "eventData": {"type": "object"},
                },
            },
        },
    },
}

COLLECT_OPENAPI: dict[str, object] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": EVENT_SCHEMA},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    "responses": {
        "200": {"description": "Every event is committed to PostgreSQL."},
        "400": {"description": "Malformed JSON."},
        "403": {"description": "The site is not authorized for any client."},
        "413": {"description": "Body or batch too large."},
        "415": {"description": "Unsupported Content-Type or Content-Encoding."},
        "422": {"description": "An event has the wrong shape; the error names the field."},
        "503": {"description": "Storage unavailable; retry after Retry-After seconds."},
    },
}


def cors_headers(request: Request) -> dict[str, str]:
    """Browsers on client sites post cross-origin; echo the origin so they may read the answer."""
    origin = request.headers.get("origin")
    return {"Access-Control-Allow-Origin": origin or "*", "Vary": "Origin"}


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes, refusing early on a large Content-Length."""
    if request.headers.get("content-encoding", "identity").lower() != "identity":
        raise UnsupportedMediaType("compressed request bodies are not accepted")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedBody(f"invalid Content-Length header: {declared[:40]!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body is {declared} bytes; at most {limit} accepted")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/collect", openapi_extra=COLLECT_OPENAPI, summary="Collect events")
async def collect(request: Request) -> Response:
    """Store a single event or a batch; 200 means every event is committed."""
    settings: Settings = request.app.state.settings
    collector: Collector = request.app.state.collector
    cors = cors_headers(request)
    try:
        check_media_type(request.headers.get("content-type"))
        body = await read_body(request, settings.max_body_bytes)
        headers = request.headers
        peer = request.client.host if request.client else None
        context = RequestContext(
            client_ip=client_ip(peer, headers, settings.trusted_proxies),
            user_agent=headers.get("user-agent"),
            received_at=request.app.state.clock.now(),
            origin=headers.get("origin"),
        )
        result = await collector.collect(body, context)
    except EvothesisError as exc:
        return error_response(exc, headers=cors)
    return JSONResponse(
        {
            "status": "success",
            "message": f"{result.events_processed} event(s) received and stored",
            "events_processed": result.events_processed,
            "client_id": result.client_id,
            "timestamp": iso_millis(result.received_at),
        },
        headers=cors,
    )


@router.options("/collect", include_in_schema=False)
async def collect_preflight(request: Request) -> Response:
    """CORS preflight; the tracker sends text/plain, so most browsers never need one."""
    headers = cors_headers(request)
    headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    headers["Access-Control-Allow-Headers"] = request.headers.get(
        "access-control-request-headers", "Content-Type"
    )
    headers["Access-Control-Max-Age"] = "86400"
    return Response(status_code=204, headers=headers)
