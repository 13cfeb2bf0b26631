"""Operational endpoints from the seed: health, event counts, recent events."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from evothesis.api.metrics import read_spool_status
from evothesis.api.responses import JSONResponse
from evothesis.clock import iso_millis
from evothesis.errors import StorageUnavailable
from evothesis.storage.events import EventStore

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Database and attribution status")
async def health(request: Request) -> Response:
    """``healthy``; ``degraded`` (200) while events are spooled to disk or replayed from it;
    ``unhealthy`` (503) when nothing can be made durable. Load balancers poll this."""
    state = request.app.state
    store: EventStore = state.store
    body: dict[str, Any] = {
        "status": "healthy",
        "database": "connected",
        "client_attribution": state.sites.status(),
        "refused_or_dropped": dict(state.collector.outcomes),
        "write_buffer": {
            "pending_events": state.buffer.pending_rows,
            "flushes": state.buffer.flushed_batches,
            "events_flushed": state.buffer.flushed_rows,
        },
        "timestamp": iso_millis(state.clock.now()),
    }
    spool_status = await asyncio.to_thread(read_spool_status, state)
    body["spool"] = spool_status
    backlog = bool(spool_status and spool_status["segments"])
    try:
        await store.ping()
    except StorageUnavailable as exc:
        body.update(database="disconnected", error=exc.message)
        if spool_status is None or spool_status["full"]:
            body["status"] = "unhealthy"
            return JSONResponse(body, status_code=503)
        # Still accepting: events go to the disk spool (answered 202).
        body["status"] = "degraded"
        return JSONResponse(body)
    if backlog:
        body["status"] = "degraded"  # replaying the spool
    return JSONResponse(body)


@router.get("/events/count", summary="Events in the buffer, total and per client")
async def events_count(request: Request) -> Response:
    per_client = await request.app.state.store.count()
    return JSONResponse({"count": sum(per_client.values()), "by_client": per_client})


@router.get("/events/recent", summary="Newest events with their attribution")
async def events_recent(
    request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 10
) -> Response:
    """A list, newest first; ``limit`` is bounded so a typo cannot dump the table."""
    store: EventStore = request.app.state.store
    rows = await store.recent(min(limit, request.app.state.settings.recent_max_limit))
    for row in rows:
        row["eventType"] = row["event_type"]
        row["raw_event_data"] = orjson.loads(row["raw_event_data"])
    return JSONResponse(rows)
