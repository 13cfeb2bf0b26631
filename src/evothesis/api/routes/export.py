"""The seed's pipeline endpoints: run and inspect the raw export and the processing; a
run of one client's deliveries, and the seed's ``/export/run?since=…&until=…`` as a replay."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from evothesis.api.deps import PipelineDep, ReplaysDep
from evothesis.api.responses import JSONResponse
from evothesis.api.tokens import require_operator, require_reader
from evothesis.domain import ExportFormat
from evothesis.export.pipeline import ExportPipeline
from evothesis.export.replays import ReplayRange, Replays
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


ClientQuery = Annotated[
    str | None, Query(max_length=200, description="One client; omitted: every client.")
]


@router.post(
    "/export/run",
    summary="Export the buffer to the raw bucket now, or replay a range (since/until)",
    dependencies=[Depends(require_operator)],
)
async def export_run(
    pipeline: PipelineDep,
    replays: ReplaysDep,
    since: Annotated[
        datetime | None,
        Query(description="Replay: deliveries with events that arrived from then (ISO 8601)."),
    ] = None,
    until: Annotated[datetime | None, Query(description="Replay: … until then (excluded).")] = None,
    client_id: ClientQuery = None,
    format: Annotated[
        ExportFormat | None, Query(description="Replay: in this format (default the client's).")
    ] = None,
) -> Response:
    """Without ``since``/``until``, the raw export as the seed has it. With them, every
    delivered delivery of the range is written again (``format`` given: in that format), as
    replays that this call starts and the schedule carries on (``GET /export/replays``)."""
    if since is not None or until is not None:
        return await _replay_range(
            pipeline, replays, ReplayRange(since=since, until=until), client_id, format
        )
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


async def _replay_range(
    pipeline: ExportPipeline,
    replays: Replays,
    selection: ReplayRange,
    client_id: str | None,
    fmt: ExportFormat | None,
) -> Response:
    clients = [client_id] if client_id else await pipeline.ledger.delivered_clients()
    made = [
        {"client_id": client, **await replays.create(client, selection, fmt=fmt)}
        for client in clients
    ]
    for replay in made:
        await replays.run(replay["replay_id"], deadline_s=RUN_DEADLINE_SECONDS / len(made))
    listed = [(await replays.list(replay_id=r["replay_id"], limit=1))[0] for r in made]
    finished = all(replay["state"] == "finished" for replay in listed)
    return JSONResponse(
        {
            "status": "success" if finished else "accepted",
            "message": f"{sum(r['deliveries'] for r in made)} delivery(ies) of "
            f"{len(made)} client(s) written again"
            + ("" if finished else "; the schedule carries on the rest"),
            "replays": listed,
        },
        status_code=200 if finished else 202,
    )


@router.post(
    "/process/run",
    summary="Deliver every client's pending events now (or one client's)",
    dependencies=[Depends(require_operator)],
)
async def process_run(pipeline: PipelineDep, client_id: ClientQuery = None) -> Response:
    """A manual delivery: every pending event, whatever the clients' schedules say."""
    report = await pipeline.process(deadline_s=RUN_DEADLINE_SECONDS, client_id=client_id)
    status = await pipeline.process_status()
    return _outcome(
        "process",
        report.as_dict(),
        report.failed,
        message=f"{report.events} event(s) delivered in {report.deliveries} delivery(ies), "
        f"{report.files} file(s)",
        unprocessed_objects=status["unprocessed_objects"],
    )


@router.get(
    "/process/status",
    summary="Per client: schedule, next delivery, deliveries waiting, failing and dead",
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
        and not process["failing_deliveries"]
        and not process["dead_deliveries"]
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
