"""Data-subject requests over HTTP (admin token): a visitor's events as one JSON Lines file,
their deletion with a receipt, and the audit log of both.

Client and visitor ids travel in a JSON body rather than the path: visitor ids are chosen
by trackers and sites, and may hold characters a path segment cannot.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from evothesis.api.deps import SubjectsDep
from evothesis.api.responses import JSONResponse
from evothesis.api.tokens import require_admin

router = APIRouter(
    prefix="/api/v1/gdpr", tags=["data-subject requests"], dependencies=[Depends(require_admin)]
)

#: How long an HTTP deletion waits for running exports before answering 503 (retry).
DELETE_WAIT_SECONDS = 30.0


class VisitorRequest(BaseModel):
    """Whose events: a visitor within one client (visitor ids are per site, not global)."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1, max_length=200)
    visitor_id: str = Field(min_length=1, max_length=1000)


@router.post("/export", summary="Every event of a visitor, as one JSON Lines file")
async def export_visitor(body: VisitorRequest, subjects: SubjectsDep) -> Response:
    """From the buffer and from every raw object, each event once, oldest first, in the raw
    export's line format. The request is recorded in the audit log."""
    result = await subjects.export(body.client_id, body.visitor_id)
    filename = f"visitor-export-{result.request_id}.jsonl"
    return Response(
        result.data,
        media_type="application/x-ndjson",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Request-Id": str(result.request_id),
            "X-Event-Count": str(result.events),
            "X-Failed-Event-Count": str(result.failed_events),
        },
    )


@router.post("/delete", summary="Delete a visitor's events everywhere; returns the receipt")
async def delete_visitor(body: VisitorRequest, subjects: SubjectsDep) -> Response:
    """Removes the events from the buffer, the raw objects and the client's processed files
    (every format), rewriting only the objects that held them. Waits up to 30 s for running
    exports (503 ``exports_running`` after that: retry); a store failure part-way is a 503
    ``request_incomplete`` and the same request completes the deletion when run again."""
    receipt = await subjects.delete(body.client_id, body.visitor_id, wait_s=DELETE_WAIT_SECONDS)
    return JSONResponse(receipt)


@router.get("/audit", summary="The audit log of data-subject requests, newest first")
async def audit_log(
    subjects: SubjectsDep,
    client_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    return JSONResponse(await subjects.audit_log(client_id, limit))
