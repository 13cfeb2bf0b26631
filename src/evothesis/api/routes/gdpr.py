"""Data-subject requests over HTTP (admin token): a person's events, named by a visitor id
or a user id (the Segment API's ``userId``), as one JSON Lines file, their deletion with a
receipt, and the audit log of both. Both follow the client's alias links.

Client, visitor and user ids travel in a JSON body rather than the path: they are chosen
by trackers, sites and SDKs, and may hold characters a path segment cannot.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from evothesis.api.deps import SubjectsDep
from evothesis.api.responses import JSONResponse
from evothesis.api.tokens import require_admin

router = APIRouter(
    prefix="/api/v1/gdpr", tags=["data-subject requests"], dependencies=[Depends(require_admin)]
)

#: How long an HTTP deletion waits for running exports before answering 503 (retry).
DELETE_WAIT_SECONDS = 30.0


class SubjectRequest(BaseModel):
    """Whose events: a visitor or a user within one client (ids are the client's, not
    global); exactly one of ``visitor_id`` and ``user_id``."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1, max_length=200)
    visitor_id: str | None = Field(None, min_length=1, max_length=1000)
    user_id: str | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="A Segment userId as sent: found whether the client keeps, hashes or "
        "(now) drops user ids.",
    )

    @model_validator(mode="after")
    def _one_id(self) -> SubjectRequest:
        if (self.visitor_id is None) == (self.user_id is None):
            raise ValueError("send exactly one of visitor_id and user_id")
        return self


@router.post("/export", summary="Every event of a visitor or a user, as one JSON Lines file")
async def export_visitor(body: SubjectRequest, subjects: SubjectsDep) -> Response:
    """From the buffer and from every raw object, each event once, oldest first, in the raw
    export's line format, for the id and every id alias links tie to it. The request is
    recorded in the audit log."""
    result = await subjects.export(body.client_id, body.visitor_id, user_id=body.user_id)
    filename = f"subject-export-{result.request_id}.jsonl"
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


@router.post(
    "/delete", summary="Delete a visitor's or a user's events everywhere; returns the receipt"
)
async def delete_visitor(body: SubjectRequest, subjects: SubjectsDep) -> Response:
    """Removes the events of the id and of every id alias links tie to it from the buffer,
    the raw objects and the client's processed files (every format), rewriting only the
    objects that held them, and the links themselves. Waits up to 30 s for running exports
    (503 ``exports_running`` after that: retry); a store failure part-way is a 503
    ``request_incomplete`` and the same request completes the deletion when run again."""
    receipt = await subjects.delete(
        body.client_id, body.visitor_id, user_id=body.user_id, wait_s=DELETE_WAIT_SECONDS
    )
    return JSONResponse(receipt)


@router.get("/audit", summary="The audit log of data-subject requests, newest first")
async def audit_log(
    subjects: SubjectsDep,
    client_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    return JSONResponse(await subjects.audit_log(client_id, limit))
