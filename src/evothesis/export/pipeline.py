"""The export pipeline as one object: raw export, processing, retention and their status,
shared by the scheduler, the HTTP endpoints and the CLI."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from evothesis.errors import ObjectStoreError
from evothesis.export.ledger import ExportLedger
from evothesis.export.process import DeliveryResult, Processor, TargetLookup
from evothesis.export.raw import RawExporter
from evothesis.export.tables.clients import ClientTables
from evothesis.export.timing import retry_delay
from evothesis.objects.buckets import ExportBuckets
from evothesis.objects.cpu import WORKERS
from evothesis.objects.store import Bucket

logger = logging.getLogger("evothesis.export")

#: Progress callback: (events done so far, events known to be waiting).
Progress = Callable[[int, int], None]
#: Raw batches in flight at once in one exporter.
EXPORT_CONCURRENCY = 2
#: Batches in hand at once while processing: one per worker process is split and encoded
#: while the files of another are uploaded.
PARALLEL_OBJECTS = WORKERS + 1


@dataclass
class ExportReport:
    """What one raw export run did."""

    batches: int = 0
    events: int = 0
    bytes: int = 0
    failed_batches: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProcessReport:
    """What one processing run did."""

    files: int = 0
    events: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, results: list[DeliveryResult]) -> None:
        for result in results:
            if result.error is None:
                self.files += 1
                self.events += result.events
            else:
                self.failed.append(
                    {
                        "batch_id": result.batch_id,
                        "client_id": result.client_id,
                        "error": result.error,
                    }
                )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    batch_size: int
    default_format: str
    retention_s: float
    lease_s: float
    interval_s: float | None
    #: Default retention of tables' removed files, and the Iceberg catalog's URL.
    table_retention_s: float
    iceberg_catalog: str


@dataclass(frozen=True, slots=True)
class Alongside:
    """A raw export running beside processing, and its signal that a batch is done."""

    export: asyncio.Task[ExportReport]
    batch_exported: asyncio.Event


async def _first_done(
    in_flight: set[asyncio.Task[list[DeliveryResult]]], alongside: Alongside | None
) -> set[asyncio.Task[list[DeliveryResult]]]:
    """Wait until a batch in hand is done or, while a raw export runs beside and there is
    room for more, until it exports a batch or ends; return the batches that are done."""
    waiting: set[asyncio.Future[Any]] = set(in_flight)
    signal = None
    if alongside is not None and len(in_flight) < PARALLEL_OBJECTS:
        signal = asyncio.ensure_future(alongside.batch_exported.wait())
        waiting |= {signal, alongside.export}
    try:
        await asyncio.wait(waiting, return_when=FIRST_COMPLETED)
    finally:
        if signal is not None:
            signal.cancel()
    return {task for task in in_flight if task.done()}


def exporter_name() -> str:
    """Lease owner: enough to find the process that holds a batch."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ExportPipeline:
    def __init__(
        self,
        pool: asyncpg.Pool,
        buckets: ExportBuckets,
        settings: PipelineSettings,
        *,
        targets: TargetLookup,
    ) -> None:
        self.settings = settings
        self.buckets = buckets
        self.ledger = ExportLedger(pool, owner=exporter_name(), lease_s=settings.lease_s)
        self.raw_bucket = Bucket(buckets.raw)
        self.backup_bucket = Bucket(buckets.backup)
        self._raw = RawExporter(
            self.ledger,
            self.raw_bucket,
            self.backup_bucket,
            default_format=settings.default_format,
        )
        self.processor = Processor(
            self.ledger,
            self.raw_bucket,
            default_destination=buckets.processed,
            targets=targets,
            tables=ClientTables(
                iceberg_catalog=settings.iceberg_catalog,
                retention=timedelta(seconds=settings.table_retention_s),
            ),
        )

    async def export(
        self, *, deadline_s: float | None = None, progress: Progress | None = None
    ) -> ExportReport:
        """Export due batches (retries first), then claim and export new ones until the
        buffer is drained or ``deadline_s`` has passed.

        ``EXPORT_CONCURRENCY`` batches are in flight at once, so PostgreSQL renders one batch
        while this process compresses and uploads another. A failing batch is recorded with
        its error and retried later with backoff; the run then stops, because the raw bucket
        is shared and the next batch would most likely fail the same way.
        """
        async with self.ledger.running():
            return await self._export(deadline_s, progress)

    async def _export(
        self,
        deadline_s: float | None,
        progress: Progress | None,
        on_batch: Callable[[], None] | None = None,
    ) -> ExportReport:
        """``on_batch`` is called after each exported batch (its deliveries are then due)."""
        report = ExportReport()
        started = time.monotonic()
        waiting = (await self.ledger.backlog(10_000_000))[0] if progress else 0
        stop = False

        async def work() -> None:
            nonlocal stop
            while not stop and (deadline_s is None or time.monotonic() - started < deadline_s):
                batch = await self.ledger.lease_batch() or await self.ledger.claim(
                    self.settings.batch_size
                )
                if batch is None:
                    return
                try:
                    result = await self._raw.export(batch)
                except ObjectStoreError as exc:
                    stop = True
                    delay = retry_delay(batch.attempts)
                    logger.warning(
                        "Raw export of batch %d failed (attempt %d), retry in %.0f s: %s",
                        batch.batch_id,
                        batch.attempts,
                        delay,
                        exc,
                    )
                    await self.ledger.batch_failed(batch, str(exc), delay)
                    report.failed_batches.append({"batch_id": batch.batch_id, "error": str(exc)})
                    return
                report.batches += 1
                report.events += result.events
                report.bytes += result.size
                if on_batch:
                    on_batch()
                if progress:
                    progress(report.events, max(waiting, report.events))

        await asyncio.gather(*(work() for _ in range(EXPORT_CONCURRENCY)))
        report.seconds = round(time.monotonic() - started, 3)
        return report

    async def process(
        self, *, deadline_s: float | None = None, progress: Progress | None = None
    ) -> ProcessReport:
        """Deliver pending per-client files until none is due or ``deadline_s`` passed."""
        async with self.ledger.running():
            return await self._process(deadline_s, progress)

    async def _process(
        self,
        deadline_s: float | None,
        progress: Progress | None,
        alongside: Alongside | None = None,
    ) -> ProcessReport:
        """Keep ``PARALLEL_OBJECTS`` batches in hand, leasing the next as soon as one is done,
        so that the worker processes never wait for the slowest object of a round.

        ``alongside``: a raw export running at the same time; until it ends, finding
        nothing due means waiting for its next batch rather than stopping.
        """
        report = ProcessReport()
        started = time.monotonic()
        waiting = 0
        if progress:
            status = await self.ledger.status()
            waiting = sum(row["pending_events"] for row in status["deliveries"])
        in_flight: set[asyncio.Task[list[DeliveryResult]]] = set()
        try:
            while True:
                # Read before leasing: a batch exported after a lease found nothing is then
                # still seen, by one more round of this loop.
                exporting = alongside is not None and not alongside.export.done()
                if alongside is not None:
                    alongside.batch_exported.clear()
                # A failed delivery is due again only after its backoff, so this ends.
                while len(in_flight) < PARALLEL_OBJECTS and (
                    deadline_s is None or time.monotonic() - started < deadline_s
                ):
                    deliveries = await self.ledger.lease_deliveries()
                    if not deliveries:
                        break
                    in_flight.add(asyncio.create_task(self.processor.process(deliveries)))
                if not in_flight and not exporting:
                    break
                done = await _first_done(in_flight, alongside if exporting else None)
                in_flight -= done
                for task in done:
                    report.add(task.result())
                if progress:
                    progress(report.events, max(waiting, report.events))
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        report.seconds = round(time.monotonic() - started, 3)
        return report

    async def purge(self) -> int:
        """Delete buffered events of batches exported longer ago than the retention."""
        deleted = 0
        while (purged := await self.ledger.purge_one(self.settings.retention_s)) is not None:
            batch_id, count = purged
            deleted += count
            logger.info("Removed %d exported events of batch %d from the buffer", count, batch_id)
        return deleted

    async def run_once(self, *, deadline_s: float | None = None) -> dict[str, Any]:
        """One scheduled round: raw export and processing side by side, then retention.

        Processing starts with the first exported batch instead of after the last: clients'
        files of a large backlog appear from the first seconds on, and the two stages
        overlap where they wait on different things (PostgreSQL rendering rows, the
        clients' buckets taking uploads).
        """
        async with self.ledger.running():
            batch_exported = asyncio.Event()
            export = asyncio.create_task(
                self._export(deadline_s, None, on_batch=batch_exported.set)
            )
            alongside = Alongside(export, batch_exported)
            try:
                processed = await self._process(deadline_s, None, alongside)
            finally:
                if not export.done():
                    export.cancel()
                    await asyncio.gather(export, return_exceptions=True)
            exported = export.result()
        purged = await self.purge()
        return {"export": exported.as_dict(), "process": processed.as_dict(), "purged": purged}

    # ------------------------------------------------------------------------------ status

    async def export_status(self) -> dict[str, Any]:
        ledger = await self.ledger.status()
        backlog, oldest = await self.ledger.backlog(10_000_000)
        summary = ledger["summary"]
        oldest_waiting = min(
            (t for t in (oldest, summary["oldest_pending_at"]) if t is not None), default=None
        )
        return {
            "last_run": _jsonable(ledger["last_batch"]),
            "lag_seconds": _age(oldest_waiting),
            "pending_rows": backlog + summary["pending_batch_events"],
            "unclaimed_rows": backlog,
            "pending_batches": summary["pending_batches"],
            "exported_batches": summary["exported_batches"],
            "exported_events": summary["exported_events"],
            "purged_batches": summary["purged_batches"],
            "failed_batches": _jsonable(ledger["failed_batches"]),
            "schedule_seconds": self.settings.interval_s,
        }

    async def process_status(self) -> dict[str, Any]:
        ledger = await self.ledger.status()
        destinations = {row["client_id"]: row for row in ledger["destinations"]}
        clients = []
        for row in ledger["deliveries"]:
            state = destinations.get(row["client_id"], {})
            clients.append(
                _jsonable(
                    {
                        **row,
                        "paused": bool(state.get("paused")),
                        "paused_until": state.get("paused_until") if state.get("paused") else None,
                        "consecutive_failures": state.get("consecutive_failures", 0),
                        "last_error": state.get("last_error"),
                    }
                )
            )
        return {
            "unprocessed_objects": ledger["unprocessed_objects"],
            "pending_files": sum(c["pending_files"] for c in clients),
            "failing_files": sum(c["failing_files"] for c in clients),
            "paused_clients": [c["client_id"] for c in clients if c["paused"]],
            "clients": clients,
        }

    def config(self) -> dict[str, Any]:
        """The pipeline's configuration as operators may see it (no secrets)."""
        return {
            "buckets": self.buckets.describe(),
            "batch_size": self.settings.batch_size,
            "schedule_seconds": self.settings.interval_s,
            "default_format": self.settings.default_format,
            "buffer_retention_seconds": self.settings.retention_s,
            "lease_seconds": self.settings.lease_s,
            "raw_key_pattern": "raw-events/YYYY/MM/DD/batch-<batch>.jsonl.gz",
            "processed_key_pattern": (
                "processed-events/<client_id>/<YYYY/MM/DD|export_date=YYYY-MM-DD>/"
                "batch-<batch>.<jsonl|csv|parquet> (+ .manifest.json)"
            ),
            "table_key_pattern": (
                "processed-events/<client_id>/<delta|iceberg>/events/event_date=YYYY-MM-DD/"
            ),
            "table_retention_seconds": self.settings.table_retention_s,
            "metering_key_pattern": (
                "metering/YYYY/MM/DD/batch-<batch>.jsonl (one per event day of the batch)"
            ),
        }


def _age(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return round(max(0.0, (datetime.now(UTC) - moment).total_seconds()), 3)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
