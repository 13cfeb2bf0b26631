"""The seed's pipeline endpoints: run and inspect the raw export and the processing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.responses import Response

from evothesis.api.deps import PipelineDep
from evothesis.api.responses import JSONResponse
from evothesis.api.tokens import require_operator, require_reader
from evothesis.export.scheduler import schedule_status

#: Runs need the admin token; everything else here reads pipeline state (operator token).
router = APIRouter(tags=["export pipeline"])

#: An on-demand run stops claiming new work after this long and reports what is left; the
#: scheduler (or another call) carries on.
RUN_DEADLINE_SECONDS = 25.0


def _outcome(kind: str, report: dict[str, Any], failures: list[Any], **extra: Any) -> Response:
    """200 when everything due was done; 502 naming the failure when a bucket refused."""
    if failures:
        first = failures[0]
        body = {
            "status": "error",
            "error": {"code": f"{kind}_failed", "message": first["error"]},
            kind: report,
            **extra,
        }
        return JSONResponse(body, status_code=502)
    return JSONResponse({"status": "success", kind: report, **extra})


@router.post(
    "/export/run",
    summary="Export the buffer to the raw bucket now",
    dependencies=[Depends(require_operator)],
)
async def export_run(pipeline: PipelineDep) -> Response:
    report = await pipeline.export(deadline_s=RUN_DEADLINE_SECONDS)
    status = await pipeline.export_status()
    return _outcome(
        "export",
        report.as_dict(),
        report.failed_batches,
        message=f"{report.events} event(s) exported in {report.batches} batch(es)",
        pending_rows=status["pending_rows"],
    )


@router.get(
    "/export/status",
    summary="Last raw export, lag, pending rows, failed batches",
    dependencies=[Depends(require_reader)],
)
async def export_status(pipeline: PipelineDep) -> Response:
    return JSONResponse(await pipeline.export_status())


@router.get(
    "/export/config",
    summary="Buckets, batch size, schedule (no secrets)",
    dependencies=[Depends(require_reader)],
)
async def export_config(pipeline: PipelineDep) -> Response:
    return JSONResponse(pipeline.config())


@router.post(
    "/process/run",
    summary="Write pending per-client files now",
    dependencies=[Depends(require_operator)],
)
async def process_run(pipeline: PipelineDep) -> Response:
    report = await pipeline.process(deadline_s=RUN_DEADLINE_SECONDS)
    status = await pipeline.process_status()
    return _outcome(
        "process",
        report.as_dict(),
        report.failed,
        message=f"{report.events} event(s) delivered in {report.files} file(s)",
        unprocessed_objects=status["unprocessed_objects"],
    )


@router.get(
    "/process/status",
    summary="Unprocessed raw objects, per-client deliveries",
    dependencies=[Depends(require_reader)],
)
async def process_status(pipeline: PipelineDep) -> Response:
    return JSONResponse(await pipeline.process_status())


@router.get(
    "/pipeline/status",
    summary="The whole pipeline at a glance",
    dependencies=[Depends(require_reader)],
)
async def pipeline_status(pipeline: PipelineDep) -> Response:
    """``scheduler`` is the export schedule as the database records it, whichever processes
    run it (this collector, other collectors, ``evothesis worker``)."""
    export = await pipeline.export_status()
    process = await pipeline.process_status()
    healthy = (
        not export["failed_batches"]
        and not process["paused_clients"]
        and not process["failing_files"]
    )
    return JSONResponse(
        {
            "status": "healthy" if healthy else "degraded",
            "export": export,
            "process": process,
            "scheduler": await schedule_status(pipeline.ledger),
            "config": pipeline.config(),
        }
    )
