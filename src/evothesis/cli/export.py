"""``evothesis export …``, ``evothesis process …`` and ``evothesis worker``: the export
pipeline from a shell, through the same ``ExportPipeline`` as the scheduler and the API.

Runs show their progress (a bar on a terminal, a line every few seconds otherwise) and end
with a JSON summary; a run where a bucket refused exits 1 after recording the failure.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
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
from evothesis.domain import SchedulerRole
from evothesis.export.pipeline import ExportPipeline, Progress
from evothesis.services import CLI_POOL, open_services, scheduled_exports

__all__ = ["export_app", "process_app", "worker"]

T = TypeVar("T")

export_app = command_group("export", "Export the buffer to the raw bucket (and inspect it).")
process_app = command_group("process", "Write per-client files from raw objects.")

Deadline = Annotated[
    float | None,
    typer.Option(help="Stop claiming new work after this many seconds (default: until done)."),
]


def _run(work: Callable[[ExportPipeline], Awaitable[T]]) -> T:
    return run_services(lambda services: work(services.pipeline))


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


@process_app.command("run")
def process_run(deadline: Deadline = None) -> None:
    """Write every pending per-client file (each client's format and destination)."""
    report = _run(
        _with_progress(
            "processing",
            lambda pipeline, progress: pipeline.process(deadline_s=deadline, progress=progress),
        )
    )
    print_json(report.as_dict())
    if report.failed:
        first = report.failed[0]
        fail(f"client {first['client_id']}, batch {first['batch_id']}: {first['error']}")


@process_app.command("status")
def process_status() -> None:
    """Unprocessed raw objects and each client's deliveries and pause state."""
    print_json(_run(lambda pipeline: pipeline.process_status()))


def worker() -> None:
    """Run the export schedule without a collector: raw export every EXPORT_SCHEDULE (or
    as soon as EXPORT_BATCH_SIZE events wait), processing, and buffer retention. Several
    workers (and collectors with EXPORT_IN_SERVE) can run at once; they share the work."""
    settings = load_settings()
    interval = settings.export_interval_s
    if interval is None:
        fail("EXPORT_SCHEDULE is off: run `evothesis export run` on demand instead")
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
