"""Delivery operations: replays, dead letters and retry-now, notices (operators), and the
clients' own on-demand request (their write key).

Operators' routes sit under ``/export/`` and ``/process/`` like the seed's pipeline
endpoints (nginx answers them to private networks only). ``POST /client/deliveries`` is a
client's: it authenticates with the client's write key, never the admin token, and is
rate-limited per client.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from evothesis.api.collect import write_key
from evothesis.api.deps import NoticesDep, PipelineDep, ReplaysDep
from evothesis.api.responses import JSONResponse
from evothesis.api.routes.export import RUN_DEADLINE_SECONDS, ClientQuery
from evothesis.api.tokens import require_operator, require_reader
from evothesis.domain import ExportFormat
from evothesis.errors import InvalidWriteKey, RateLimited, WriteKeyRequired
from evothesis.export.replays import ReplayRange

__all__ = ["ON_DEMAND_INTERVAL_SECONDS", "router"]

router = APIRouter(tags=["deliveries"])

#: A client may ask for a delivery once a minute.
ON_DEMAND_INTERVAL_SECONDS = 60.0


class ReplayCreate(BaseModel):
    """``POST /export/replays``: which of a client's deliveries to write again, and how."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1, max_length=200)
    since: datetime | None = Field(None, description="Events that arrived from then on.")
    until: datetime | None = Field(None, description="… before then.")
    from_batch: int | None = Field(None, ge=1, description="Batches numbered from …")
    to_batch: int | None = Field(None, ge=1, description="… to (included).")
    format: ExportFormat | None = Field(None, description="Default: the client's format now.")
    destination: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        description="Another bucket URL (the client's credentials are used); default: the "
        "client's destination.",
    )


@router.post(
    "/export/replays",
    status_code=202,
    summary="Write a range of a client's deliveries again",
    dependencies=[Depends(require_operator)],
)
async def create_replay(body: ReplayCreate, replays: ReplaysDep) -> Response:
    """The replay starts here and the schedule carries on what the call's time did not
    cover; ``GET /export/replays/{id}`` shows its progress."""
    selection = ReplayRange(body.since, body.until, body.from_batch, body.to_batch)
    created = await replays.create(
        body.client_id, selection, fmt=body.format, destination=body.destination
    )
    status = await replays.run(created["replay_id"], deadline_s=RUN_DEADLINE_SECONDS)
    if status is None:  # another exporter holds it, or it selected nothing
        status = (await replays.list(replay_id=created["replay_id"], limit=1))[0]
    return JSONResponse(status, status_code=200 if status["state"] == "finished" else 202)


@router.get(
    "/export/replays",
    summary="Replays, newest first, with their progress",
    dependencies=[Depends(require_reader)],
)
async def list_replays(replays: ReplaysDep, client_id: ClientQuery = None) -> Response:
    return JSONResponse(await replays.list(client_id=client_id))


@router.get(
    "/export/replays/{replay_id}",
    summary="One replay and its progress",
    dependencies=[Depends(require_reader)],
)
async def get_replay(replay_id: int, replays: ReplaysDep) -> Response:
    return JSONResponse((await replays.list(replay_id=replay_id, limit=1))[0])


@router.get(
    "/process/dead-letters",
    summary="Deliveries given up after failing too long, with their errors",
    dependencies=[Depends(require_reader)],
)
async def dead_letters(pipeline: PipelineDep, client_id: ClientQuery = None) -> Response:
    rows = await pipeline.ledger.dead_letters(client_id)
    return JSONResponse(
        [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in r.items()} for r in rows]
    )


@router.post(
    "/process/retry",
    summary="Retry now: dead and failing deliveries (and replays) due at once, then run",
    dependencies=[Depends(require_operator)],
)
async def retry_now(
    pipeline: PipelineDep, replays: ReplaysDep, client_id: ClientQuery = None
) -> Response:
    """For one client or every client: pauses lifted, failure clocks reset, and a delivery
    run (of that client's pending events, when one is named) started at once."""
    retried = await pipeline.ledger.retry_now(client_id)
    replayed = await replays.retry_now(client_id)
    report = await pipeline.process(deadline_s=RUN_DEADLINE_SECONDS, client_id=client_id)
    body = {
        "status": "error" if report.failed else "success",
        "retried_deliveries": retried,
        "retried_replays": replayed,
        "process": report.as_dict(),
    }
    return JSONResponse(body, status_code=502 if report.failed else 200)


@router.get(
    "/process/notices",
    summary="Notices sent (or being sent) to clients' webhooks, with their delivery log",
    dependencies=[Depends(require_reader)],
)
async def notices(
    sender: NoticesDep,
    client_id: ClientQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    return JSONResponse(await sender.list(client_id, limit))


@router.post(
    "/client/deliveries",
    status_code=202,
    summary="A client asks for its pending events now (its write key; once a minute)",
    openapi_extra={
        "parameters": [
            {
                "name": "X-Write-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "The client's write key (or HTTP Basic with it as user name).",
            }
        ]
    },
)
async def request_delivery(request: Request, pipeline: PipelineDep) -> Response:
    """Authenticated with the client's own write key (``X-Write-Key``, or HTTP Basic with
    the key as user name). The events waiting for the client's schedule are delivered by
    the next round of whichever process runs the export schedule (it looks for due
    deliveries every few seconds), including those not yet in the raw bucket."""
    key = write_key(dict(request.headers))
    if not key:
        raise WriteKeyRequired("send the client's write key as X-Write-Key")
    client_id = await pipeline.ledger.client_for_write_key(key)
    if client_id is None:
        raise InvalidWriteKey("the write key is not an active client's")
    retry_after = await pipeline.ledger.request_delivery(client_id, ON_DEMAND_INTERVAL_SECONDS)
    if retry_after is not None:
        raise RateLimited(
            f"one on-demand delivery a minute; retry in {math.ceil(retry_after)} s",
            retry_after_s=retry_after,
        )
    return JSONResponse(
        {
            "status": "accepted",
            "client_id": client_id,
            "message": "your pending events are delivered by the next export round",
        },
        status_code=202,
    )
