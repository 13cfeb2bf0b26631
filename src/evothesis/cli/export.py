"""``evothesis export …``, ``evothesis process …`` and ``evothesis worker``: the export
pipeline from a shell, through the same ``ExportPipeline`` (and replays, notices) as the
scheduler and the API.

Runs show their progress (a bar on a terminal, a line every few seconds otherwise) and end
with a JSON summary; a run where a bucket refused exits 1 after recording the failure.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from evothesis.cli.common import (
    ProgressReport,
    command_group,
    fail,
    load_settings,
    prepared_database,
    print_json,
    run_services,
)
from evothesis.domain import ExportFormat, SchedulerRole
from evothesis.export.pipeline import ExportPipeline, Progress
from evothesis.export.replays import ReplayRange
from evothesis.services import CLI_POOL, Services, open_services, scheduled_exports

__all__ = ["export_app", "process_app", "worker"]

T = TypeVar("T")

export_app = command_group(
    "export", "Export the buffer to the raw bucket (and inspect it); replay past deliveries."
)
process_app = command_group(
    "process",
    "Deliver clients' files from raw objects (schedules, triggers, dead letters, notices).",
)

Deadline = Annotated[
    float | None,
    typer.Option(help="Stop claiming new work after this many seconds (default: until done)."),
]
Client = Annotated[
    str | None, typer.Option("--client", help="One client's only (default: every client).")
]


def _run(work: Callable[[ExportPipeline], Awaitable[T]]) -> T:
    return run_services(lambda services: work(services.pipeline))


def _utc(moment: datetime | None) -> datetime | None:
    """A time typed without a zone is UTC, as every time Evothesis shows."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _with_progress(
    label: str, run: Callable[[ExportPipeline, Progress], Awaitable[T]]
) -> Callable[[ExportPipeline], Awaitable[T]]:
    async def work(pipeline: ExportPipeline) -> T:
        report = ProgressReport(label)
        try:
            return await run(pipeline, report)
        finally:
            report.close()

    return work


@export_app.command("run")
def export_run(deadline: Deadline = None) -> None:
    """Claim every unexported event into numbered batches and write them to the raw bucket
    (gzip JSON Lines) with their metering records; then show the summary."""
    report = _run(
        _with_progress(
            "raw export",
            lambda pipeline, progress: pipeline.export(deadline_s=deadline, progress=progress),
        )
    )
    print_json(report.as_dict())
    if report.failed_batches:
        fail(f"batch {report.failed_batches[0]['batch_id']}: {report.failed_batches[0]['error']}")


@export_app.command("status")
def export_status() -> None:
    """Last export, lag, pending rows and failed batches (as /export/status)."""
    print_json(_run(lambda pipeline: pipeline.export_status()))


@export_app.command("config")
def export_config() -> None:
    """Buckets, batch size, schedule and retention, without secrets (as /export/config)."""

    async def config(pipeline: ExportPipeline) -> dict[str, Any]:
        return pipeline.config()

    print_json(_run(config))


@export_app.command("replay")
def export_replay(
    client: Annotated[str, typer.Option("--client", help="The client whose deliveries.")],
    since: Annotated[
        datetime | None,
        typer.Option(help="Deliveries with events that arrived from then on (ISO 8601, UTC)."),
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="… before then.")] = None,
    from_batch: Annotated[int | None, typer.Option(min=1, help="Batches numbered from …")] = None,
    to_batch: Annotated[int | None, typer.Option(min=1, help="… to (included).")] = None,
    fmt: Annotated[
        ExportFormat | None,
        typer.Option("--format", help="Write in this format (default: the client's now)."),
    ] = None,
    destination: Annotated[
        str | None,
        typer.Option(
            help="Another bucket URL, with the client's credentials (default: "
            "the client's destination)."
        ),
    ] = None,
    deadline: Deadline = None,
) -> None:
    """Write a client's past deliveries again, whole, from the raw objects: after fixing
    credentials, after changing format, or to seed a new warehouse. The same delivery in
    the same format to the same place gets the same keys and bytes, so running a replay
    again changes nothing; one cut short (or past --deadline) is carried on by the
    schedule, or by `evothesis export replays --resume ID`."""
    selection = ReplayRange(_utc(since), _utc(until), from_batch, to_batch)

    async def work(services: Services) -> dict[str, Any] | None:
        created = await services.replays.create(client, selection, fmt=fmt, destination=destination)
        report = ProgressReport(f"replay {created['replay_id']}", unit="deliveries")
        try:
            return await services.replays.run(
                created["replay_id"], deadline_s=deadline, progress=report
            )
        finally:
            report.close()

    status = run_services(work)
    if status is None:
        fail("the replay is being written by another exporter; see `evothesis export replays`")
    print_json(status)
    if status["last_error"]:
        fail(f"replay {status['replay_id']}: {status['last_error']}")


@export_app.command("replays")
def export_replays(
    client: Client = None,
    resume: Annotated[
        int | None, typer.Option(help="Carry on this replay now (with its progress).")
    ] = None,
) -> None:
    """Replays with their progress (deliveries written of the total), newest first."""

    async def work(services: Services) -> Any:
        if resume is None:
            return await services.replays.list(client_id=client)
        report = ProgressReport(f"replay {resume}", unit="deliveries")
        try:
            status = await services.replays.run(resume, progress=report)
        finally:
            report.close()
        return status or (await services.replays.list(replay_id=resume, limit=1))[0]

    print_json(run_services(work))


@process_app.command("run")
def process_run(deadline: Deadline = None, client: Client = None) -> None:
    """Deliver every client's pending events now (or one client's), whatever their
    schedules say: each client's format and destination."""
    report = _run(
        _with_progress(
            "processing",
            lambda pipeline, progress: pipeline.process(
                deadline_s=deadline, progress=progress, client_id=client
            ),
        )
    )
    print_json(report.as_dict())
    if report.failed:
        first = report.failed[0]
        fail(f"client {first['client_id']}, delivery {first['delivery']}: {first['error']}")


@process_app.command("status")
def process_status() -> None:
    """Each client's schedule, next delivery, deliveries waiting, failing and dead, and
    pause state."""
    print_json(_run(lambda pipeline: pipeline.process_status()))


@process_app.command("dead-letters")
def process_dead_letters(client: Client = None) -> None:
    """Deliveries given up after failing for EXPORT_DEAD_LETTER_AFTER, with their errors
    (retry them with `evothesis process retry`)."""
    print_json(_run(lambda pipeline: pipeline.ledger.dead_letters(client)))


@process_app.command("retry")
def process_retry(client: Client = None, deadline: Deadline = None) -> None:
    """Retry now: dead and failing deliveries (and failing replays) of one client or all
    due at once, pauses lifted; then deliver (as `process run`)."""

    async def work(services: Services) -> dict[str, Any]:
        retried = await services.pipeline.ledger.retry_now(client)
        replays = await services.replays.retry_now(client)
        report = await services.pipeline.process(deadline_s=deadline, client_id=client)
        return {
            "retried_deliveries": retried,
            "retried_replays": replays,
            "process": report.as_dict(),
        }

    result = run_services(work)
    print_json(result)
    if result["process"]["failed"]:
        first = result["process"]["failed"][0]
        fail(f"client {first['client_id']}, delivery {first['delivery']}: {first['error']}")


@process_app.command("notices")
def process_notices(
    client: Client = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
) -> None:
    """Notices to clients' webhooks, newest first, each with its delivery log."""
    print_json(run_services(lambda services: services.notices.list(client, limit)))


def worker() -> None:
    """Run the export schedule without a collector: raw export every EXPORT_INTERVAL (or
    as soon as EXPORT_BATCH_SIZE events wait), deliveries as each client's schedule
    (EXPORT_SCHEDULE by default) and triggers say, replays, notices to clients' webhooks,
    and buffer retention. Several workers (and collectors with EXPORT_IN_SERVE) can run
    at once; they share the work."""
    settings = load_settings()
    interval = settings.export_interval_s
    if interval is None:
        fail("EXPORT_INTERVAL is off: run `evothesis export run` on demand instead")
    url = prepared_database(settings)
    logging.getLogger("evothesis.export").info(
        "Export worker started: every %.0f s or at %d waiting events",
        interval,
        settings.export_batch_size,
    )

    async def run() -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
        async with (
            open_services(settings, database_url=url, pool_size=CLI_POOL) as services,
            scheduled_exports(services, SchedulerRole.WORKER),
        ):
            await stopped.wait()

    asyncio.run(run())
