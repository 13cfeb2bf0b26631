"""Operational endpoints from the seed: health, event counts, recent events."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from starlette.responses import Response

from evothesis.api.deps import ClockDep, IngestionDep, SettingsDep
from evothesis.api.responses import JSONResponse
from evothesis.api.routes.metrics import read_spool_status
from evothesis.clock import iso_millis
from evothesis.errors import StorageUnavailable

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Database and attribution status")
async def health(ingestion: IngestionDep, clock: ClockDep) -> Response:
    """``healthy``; ``degraded`` (200) while events are spooled to disk or replayed from it;
    ``unhealthy`` (503) when nothing can be made durable. Load balancers poll this."""
    buffer = ingestion.buffer.stats()
    body: dict[str, Any] = {
        "status": "healthy",
        "database": "connected",
        "client_attribution": ingestion.sites.status().as_dict(),
        "refused_or_dropped": ingestion.collector.outcomes.as_dict(),
        "write_buffer": {
            "pending_events": buffer.pending_rows,
            "flushes": buffer.flushed_batches,
            "events_flushed": buffer.flushed_rows,
        },
        "timestamp": iso_millis(clock.now()),
    }
    spool = await asyncio.to_thread(read_spool_status, ingestion.spool)
    body["spool"] = spool.as_dict() if spool is not None else None
    try:
        await ingestion.events.ping()
    except StorageUnavailable as exc:
        body.update(database="disconnected", error=exc.message)
        if spool is None or spool.full:
            body["status"] = "unhealthy"
            return JSONResponse(body, status_code=503)
        # Still accepting: events go to the disk spool (answered 202).
        body["status"] = "degraded"
        return JSONResponse(body)
    if spool is not None and spool.segments:
        body["status"] = "degraded"  # replaying the spool
    return JSONResponse(body)


@router.get("/events/count", summary="Events in the buffer, total and per client")
async def events_count(ingestion: IngestionDep) -> Response:
    per_client = await ingestion.events.count()
    return JSONResponse({"count": sum(per_client.values()), "by_client": per_client})


@router.get("/events/recent", summary="Newest events with their attribution")
async def events_recent(
    ingestion: IngestionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> Response:
    """A list, newest first; ``limit`` is bounded so a typo cannot dump the table."""
    rows = await ingestion.events.recent(min(limit, settings.recent_max_limit))
    for row in rows:
        row["eventType"] = row["event_type"]
        row["raw_event_data"] = orjson.loads(row["raw_event_data"])
    return JSONResponse(rows)
