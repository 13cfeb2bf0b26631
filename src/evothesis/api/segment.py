"""The Segment tracking API (``POST /v1/track``, ``/page``, ``/screen``, ``/identify``,
``/group``, ``/alias``, ``/batch``, ``/import``, and the one-letter paths Segment's browser
SDK posts to) as a bare ASGI endpoint, like /collect: every SDK that speaks the spec and
takes a custom host becomes an Evothesis SDK.

Answers are what those SDKs expect: ``200 {"success": true}`` once every stored message is
durable (committed, or fsync'ed to the disk spool), so they do not retry; ``400`` with the
reason for a malformed request (they drop it); ``401`` for a missing or wrong write key;
``413`` for a body over the limit; ``503`` with ``Retry-After`` when nothing can be made
durable (they retry, and ``messageId`` makes the retry store each message once). Error
bodies carry Segment's ``code`` and ``message`` next to ours.
"""

from __future__ import annotations

from typing import Final

import orjson

from evothesis.api.deps import Runtime
from evothesis.api.errors import error_payload
from evothesis.api.transport.asgi import Receive, Scope, Send
from evothesis.api.transport.exchange import (
    page_or_answer,
    read_body,
    request_context,
    request_headers,
    send,
)
from evothesis.clock import iso_millis
from evothesis.domain import ClientConfig, SegmentCall
from evothesis.errors import EvothesisError, NotFound, WriteKeyRequired
from evothesis.ingest.collector import CollectResult
from evothesis.ingest.envelope import check_media_type
from evothesis.ingest.segment import CALL_PATHS

__all__ = ["PREFIX", "SEGMENT_OPENAPI", "SegmentEndpoint", "segment_body"]

#: Every path under it is the Segment API's.
PREFIX: Final = "/v1/"


class SegmentEndpoint:
    """ASGI app for ``/v1/*``; reads its collaborators from the runtime at call time."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send_to: Send) -> None:
        headers = request_headers(scope)
        name = scope["path"][len(PREFIX) :].rstrip("/")
        if name not in CALL_PATHS:
            await _send_error(send_to, NotFound(f"no endpoint {scope['path'][:100]!r}"), [])
            return
        # Browsers (Segment's browser SDK) post cross-origin with an Authorization header,
        # so they ask first; registered pages of any client are answered, and the write
        # key then decides whether the page is the key's client's.
        collector = self._runtime.ingestion.collector
        page = await page_or_answer(scope, headers, send_to, collector.page_owner, _send_error)
        if page is None:
            return
        try:
            result = await self._collect(scope, receive, headers, CALL_PATHS[name], page.owner)
        except EvothesisError as exc:
            await _send_error(send_to, exc, page.cors)
            return
        await send(send_to, 200, orjson.dumps(segment_body(result)), page.cors)

    async def _collect(
        self,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        call: SegmentCall | None,
        page_owner: ClientConfig | None,
    ) -> CollectResult:
        runtime = self._runtime
        settings = runtime.settings
        check_media_type(headers.get("content-type"))
        assert runtime.deadlines is not None  # started with the ingestion
        body = await read_body(
            receive, headers, settings.max_body_bytes, runtime.deadlines, gzip=True
        )
        context = request_context(
            scope, headers, received_at=runtime.clock.now(), proxies=settings.trusted_proxies
        )
        return await runtime.ingestion.collector.collect_segment(body, call, context, page_owner)


def segment_body(result: CollectResult) -> dict[str, object]:
    """Segment's success answer, with what /collect's answer says of the same request."""
    body: dict[str, object] = {
        "success": True,
        "stored": result.events_processed,
        "spooled": result.spooled,
        "client_id": result.client_id,
        "timestamp": iso_millis(result.received_at),
        "rejected": result.events_rejected,
        "rejected_reasons": list(result.rejected_reasons),
    }
    if result.events_dropped:
        assert result.dropped_because is not None
        body["dropped"] = result.events_dropped
        body["dropped_because"] = result.dropped_because
    if result.duplicates:
        body["duplicates"] = result.duplicates
    if result.event_id is not None:
        body["event_id"] = result.event_id
    return body


async def _send_error(
    send_to: Send, error: EvothesisError, cors: list[tuple[bytes, bytes]]
) -> None:
    """Our error body with Segment's ``success``, ``code`` and ``message`` beside it; a
    malformed message is a 400 (what Segment answers) where /collect says 422."""
    status, payload, extra = error_payload(error)
    if status == 422:
        status = 400
    if isinstance(error, WriteKeyRequired):
        extra["WWW-Authenticate"] = 'Basic realm="Evothesis"'
    body = {"success": False, "code": error.code, "message": error.message, **payload}
    headers = [*cors, *((k.encode(), v.encode()) for k, v in extra.items())]
    await send(send_to, status, orjson.dumps(body), headers)


def _operation(call: SegmentCall | None, path: str) -> dict[str, object]:
    """One /v1 operation as /openapi.json shows it."""
    what = "a batch of messages of any call" if call is None else f"one {call.value} message"
    message: dict[str, object] = {"$ref": "#/components/schemas/SegmentMessage"}
    schema: dict[str, object] = (
        {
            "type": "object",
            "required": ["batch"],
            "properties": {
                "batch": {"type": "array", "minItems": 1, "maxItems": 500, "items": message},
                "context": {"type": "object", "description": "Merged into each message's."},
                "integrations": {"type": "object"},
                "sentAt": {"type": "string", "format": "date-time"},
                "writeKey": {"type": "string"},
            },
        }
        if call is None
        else message
    )
    return {
        "post": {
            "tags": ["segment"],
            "summary": f"Segment API: {what}",
            "description": (
                "The Segment tracking spec (also what RudderStack's SDKs send). "
                "Authenticate with the client's write key as the HTTP Basic user name (or "
                "writeKey in the body). Bodies may be gzip (Content-Encoding: gzip), at "
                "most MAX_BODY_BYTES once decompressed. "
                + (
                    "An invalid message of a batch is kept as a failed event and the rest "
                    "is stored."
                    if call is None
                    else ""
                )
            ),
            "operationId": f"segment_{path.strip('/').replace('/', '_')}",
            "security": [{"writeKey": []}, {}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": schema},
                    "text/plain": {"schema": {"type": "string"}},
                },
            },
            "responses": {
                "200": {"description": 'Every stored message is durable: {"success": true, ...}.'},
                "400": {"description": "Malformed JSON or message; the reason is named."},
                "401": {"description": "No write key, or one of no active client."},
                "403": {"description": "A page (Origin or a message's) of another client."},
                "408": {"description": "The body did not arrive within BODY_READ_TIMEOUT."},
                "413": {"description": "Body (decompressed) or batch too large."},
                "415": {"description": "A Content-Type or Content-Encoding not accepted."},
                "503": {"description": "Nothing could be made durable: retry after Retry-After."},
            },
        }
    }


_MESSAGE_SCHEMA: Final[dict[str, object]] = {
    "type": "object",
    "description": "A Segment message: userId or anonymousId is required; event for track, "
    "groupId for group, previousId for alias.",
    "properties": {
        "type": {"type": "string", "enum": [call.value for call in SegmentCall]},
        "messageId": {"type": "string", "maxLength": 256},
        "anonymousId": {"type": "string", "maxLength": 256},
        "userId": {"type": "string", "maxLength": 256},
        "event": {"type": "string", "maxLength": 100},
        "name": {"type": "string"},
        "groupId": {"type": "string", "maxLength": 256},
        "previousId": {"type": "string", "maxLength": 256},
        "properties": {"type": "object"},
        "traits": {"type": "object"},
        "context": {"type": "object"},
        "integrations": {"type": "object"},
        "timestamp": {"type": "string", "format": "date-time"},
        "originalTimestamp": {"type": "string", "format": "date-time"},
        "sentAt": {"type": "string", "format": "date-time"},
    },
}

#: The documented /v1 paths (the one-letter ones are the same operations).
_DOCUMENTED: Final = ("track", "page", "screen", "identify", "group", "alias", "batch", "import")

#: The /v1 operations, their schemas and the write-key scheme, for /openapi.json.
SEGMENT_OPENAPI: Final[dict[str, dict[str, object]]] = {
    "paths": {f"{PREFIX}{name}": _operation(CALL_PATHS[name], name) for name in _DOCUMENTED},
    "schemas": {"SegmentMessage": _MESSAGE_SCHEMA},
    "securitySchemes": {
        "writeKey": {
            "type": "http",
            "scheme": "basic",
            "description": "The client's write key as the user name, no password.",
        }
    },
}
