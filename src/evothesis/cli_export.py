"""``evothesis export …``, ``evothesis process …`` and ``evothesis worker``: the export
pipeline from a shell, through the same ``ExportPipeline`` as the scheduler and the API.

Runs show their progress (a bar on a terminal, a line every few seconds otherwise) and end
with a JSON summary; a run where a bucket refused exits 1 after recording the failure.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
import typer

from evothesis.cli_registry import (
    DATABASE_ERRORS,
    command_group,
    fail,
    prepared_database,
    print_json,
)
from evothesis.config import Settings
from evothesis.errors import EvothesisError
from evothesis.export.pipeline import ExportPipeline, Progress, pipeline_from_settings
from evothesis.storage.pool import create_pool
from evothesis.storage.sessions import describe_error

__all__ = ["ProgressReport", "export_app", "process_app", "run_with_pool", "worker"]

T = TypeVar("T")

export_app = command_group("export", "Export the buffer to the raw bucket (and inspect it).")
process_app = command_group("process", "Write per-client files from raw objects.")

Deadline = Annotated[
    float | None,
    typer.Option(help="Stop claiming new work after this many seconds (default: until done)."),
]


def run_with_pool(work: Callable[[Settings, asyncpg.Pool], Awaitable[T]]) -> T:
    """Run ``work`` on a small pool to the configured (or embedded) database, migrated; our
    errors and an unreachable database end the command with one line, not a traceback."""
    from evothesis.cli import load_settings
    from evothesis.logs import configure_logging

    settings = load_settings()
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    url = prepared_database(settings)

    async def run() -> T:
        pool = await create_pool(url, min_size=1, max_size=4)
        try:
            return await work(settings, pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except EvothesisError as exc:
        fail(str(exc))
    except DATABASE_ERRORS as exc:
        fail(f"cannot use the database: {describe_error(exc)}")


def _run(work: Callable[[ExportPipeline], Awaitable[T]]) -> T:
    return run_with_pool(lambda settings, pool: work(pipeline_from_settings(settings, pool)))


class ProgressReport:
    """A bar on a terminal; elsewhere (CI, logs) a line every ``every_s`` seconds."""

    def __init__(self, label: str, every_s: float = 5.0, *, unit: str = "events") -> None:
        self._label = label
        self._unit = unit
        self._every = every_s
        self._last = 0.0
        self._bar: Any = None
        if sys.stderr.isatty():
            from rich.progress import Progress as Bar

            self._bar = Bar(transient=False)
            self._task = self._bar.add_task(label, total=None)
            self._bar.start()

    def __call__(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
            return
        now = time.monotonic()
        if now - self._last >= self._every or done >= total:
            self._last = now
            share = f" ({100 * done / total:.0f}%)" if total else ""
            typer.echo(f"{self._label}: {done}/{total} {self._unit}{share}", err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


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
    import logging
    import signal

    from evothesis.cli import load_settings
    from evothesis.export.scheduler import SchedulerState, run_scheduler
    from evothesis.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)
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
        pool = await create_pool(url, min_size=1, max_size=4)
        task = asyncio.create_task(
            run_scheduler(
                pipeline_from_settings(settings, pool), SchedulerState(), interval_s=interval
            )
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            await pool.close()

    asyncio.run(run())
