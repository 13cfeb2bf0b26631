"""Operational endpoints from the seed: health, event counts, recent events.

``/health`` is public, for load balancers: anonymous callers learn only healthy, degraded
or unhealthy (and the status code). Everything else here reads stored data and needs an
operator (``api.tokens``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from evothesis.api.deps import ClockDep, IngestionDep, RuntimeDep, SettingsDep
from evothesis.api.responses import JSONResponse
from evothesis.api.routes.metrics import read_spool_status
from evothesis.api.tokens import Bearer, caller_access, require_reader
from evothesis.clock import iso_millis
from evothesis.errors import BadRequest, StorageUnavailable
from evothesis.registry.domains import site_host

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Database and attribution status")
async def health(
    request: Request,
    ingestion: IngestionDep,
    clock: ClockDep,
    runtime: RuntimeDep,
    credentials: Bearer,
) -> Response:
    """``healthy``; ``degraded`` (200) while events are spooled to disk or replayed from it;
    ``unhealthy`` (503) when nothing can be made durable. Load balancers poll this; the
    details (database, attribution, counts, spool) are for operators only."""
    body = await _health(ingestion, clock)
    status_code = 503 if body["status"] == "unhealthy" else 200
    if caller_access(request, runtime, credentials) is None:
        body = {"status": body["status"]}
    return JSONResponse(body, status_code=status_code)


async def _health(ingestion: IngestionDep, clock: ClockDep) -> dict[str, Any]:
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
        # Still accepting while the disk spool has room: events go there (answered 202).
        body["status"] = "unhealthy" if spool is None or spool.full else "degraded"
        return body
    if spool is not None and spool.segments:
        body["status"] = "degraded"  # replaying the spool
    return body


#: What each number of /events/count is, said in every answer.
COUNT_DEFINITIONS: Final = {
    "count": "events stored since the database was created, all time and per client "
    "(a batch of N events stores N + 1, as /collect counts them); retention and "
    "data-subject deletions do not lower it",
    "buffer": "events PostgreSQL holds now: not yet exported, or exported but not yet "
    "removed by retention (a day at a time, at least BUFFER_RETENTION after export)",
}


@router.get(
    "/events/count",
    summary="Events stored since the start, and in the buffer now; total and per client",
    dependencies=[Depends(require_reader)],
)
async def events_count(ingestion: IngestionDep) -> Response:
    """The seeds' "total event count for monitoring and billing": ``count`` and
    ``by_client`` are all-time totals; ``buffer`` is what the buffer holds, which exports
    and retention empty. (Accepted events still in a collector's disk spool count once
    replayed; billing's accepted events, without batch envelopes: /billing/usage.)"""
    counts = await ingestion.events.count()
    return JSONResponse(
        {
            "count": sum(counts.total.values()),
            "by_client": counts.total,
            "buffer": {"count": sum(counts.buffered.values()), "by_client": counts.buffered},
            "definitions": COUNT_DEFINITIONS,
        }
    )


#: Filters of the event lists; ids and types are short, so longer values are refused.
ClientFilter = Annotated[
    str | None, Query(max_length=200, description="Only this client's events.")
]


@router.get(
    "/events/recent",
    summary="Newest events with their attribution",
    dependencies=[Depends(require_reader)],
)
async def events_recent(
    ingestion: IngestionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    client_id: ClientFilter = None,
    site_id: Annotated[
        str | None,
        Query(max_length=300, description="Only events of this site (a host, any case)."),
    ] = None,
    event_type: Annotated[
        str | None, Query(max_length=100, description="Only events of this type.")
    ] = None,
) -> Response:
    """A list, newest first, exactly as stored (after privacy rules and redaction);
    ``limit`` is bounded so a typo cannot dump the table. Each row also carries the seeds'
    ``eventType`` and ``siteId``, which their ``jq`` filters read."""
    site = None
    if site_id:
        site = site_host(site_id)
        if site is None:
            raise BadRequest(f"site_id {site_id[:40]!r} is not a host")
    rows = await ingestion.events.recent(
        min(limit, settings.recent_max_limit),
        client_id=client_id or None,
        site_id=site,
        event_type=event_type or None,
    )
    for row in rows:
        row["eventType"] = row["event_type"]
        row["siteId"] = row["site_id"]
        row["raw_event_data"] = orjson.loads(row["raw_event_data"])
    return JSONResponse(rows)


@router.get(
    "/events/failed",
    summary="Newest failed events with their reasons",
    dependencies=[Depends(require_reader)],
)
async def events_failed(
    ingestion: IngestionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    client_id: ClientFilter = None,
) -> Response:
    """Inner events of batches that failed validation, and stored events no export format
    could carry (``unrenderable``), newest first, with the payload as stored (redacted by
    the client's privacy rules); they leave the buffer with their export batch."""
    rows = await ingestion.events.recent_failures(limit, client_id=client_id or None)
    for row in rows:
        row["payload"] = orjson.loads(row["payload"])
    return JSONResponse(rows)
