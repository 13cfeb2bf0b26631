"""The export pipeline as one object: raw export, cutting and processing deliveries,
retention and their status, shared by the scheduler, the HTTP endpoints and the CLI."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from evothesis.clock import Clock
from evothesis.domain import DeliveryTrigger
from evothesis.errors import ObjectStoreError
from evothesis.export.deliveries import (
    MAX_DELIVERY_EVENTS,
    Cut,
    due_cut,
    next_delivery,
)
from evothesis.export.ledger import ExportLedger
from evothesis.export.process import DeliveryResult, Processor, TargetLookup
from evothesis.export.raw import RawExporter
from evothesis.export.tables.clients import ClientTables
from evothesis.export.timing import retry_delay
from evothesis.objects.buckets import ExportBuckets
from evothesis.objects.cpu import WORKERS
from evothesis.objects.store import Bucket
from evothesis.schedules import DeliverySchedule
from evothesis.storage.partitions import BufferPartitions

logger = logging.getLogger("evothesis.export")

#: What a destination test writes (and deletes right after): a file name an operator
#: recognises if a deletion ever fails.
DESTINATION_TEST_PREFIX = "evothesis-destination-test-"
DESTINATION_TEST_BODY = b"Written by Evothesis to test this export destination; safe to delete.\n"
#: Progress callback: (events done so far, events known to be waiting).
Progress = Callable[[int, int], None]
#: Raw batches in flight at once in one exporter.
EXPORT_CONCURRENCY = 2
#: Batches in hand at once while processing: one per worker process is split and encoded
#: while the files of another are uploaded.
PARALLEL_OBJECTS = WORKERS + 1
#: Events of the deliveries one exporter processes at once (at least one delivery). A group
#: takes every due delivery that overlaps its first one's batches up to this many, so that
#: each raw object is read once for all of them: with a backlog, each client's delivery
#: spans the same batches as every other client's. Their lines wait on disk until each
#: delivery's last object is read (``export.process``), a few hundred bytes per event:
#: this bounds that folder, not memory.
GROUP_EVENTS = 2_000_000


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
    """What one processing run did: deliveries cut, deliveries written (with their files
    and events), and those that failed."""

    cut: int = 0
    deliveries: int = 0
    files: int = 0
    events: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, results: list[DeliveryResult]) -> None:
        for result in results:
            if result.error is None:
                self.deliveries += 1
                self.files += result.files
                self.events += result.events
            else:
                self.failed.append(
                    {
                        "client_id": result.client_id,
                        "delivery": result.seq,
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
    #: Seconds between scheduled rounds of the raw export; ``None``: on demand only.
    interval_s: float | None
    #: Default retention of tables' removed files, and the Iceberg catalog's URL.
    table_retention_s: float
    iceberg_catalog: str
    #: The delivery schedule of clients without one of their own.
    default_schedule: DeliverySchedule
    #: A delivery failing this long is told to its client's webhook …
    notice_after_s: float = 3600.0
    #: … and this long, it is no longer retried by itself (a dead letter).
    dead_letter_after_s: float = 86400.0
    #: ``CLIENT_NAME``: the client a VM-per-client deployment serves, as operators named it.
    client_name: str | None = None


@dataclass(frozen=True, slots=True)
class Retention:
    """One retention pass over the buffer."""

    #: Exported events deleted row by row: those of the DEFAULT partition.
    deleted: int
    #: Day partitions of ``events_log`` dropped whole, and added ahead, by name.
    dropped: list[str]
    added: list[str]


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
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.buckets = buckets
        #: Decides schedule ticks (injected: tests move it by hours).
        self.clock = clock
        self.ledger = ExportLedger(
            pool,
            owner=exporter_name(),
            lease_s=settings.lease_s,
            default_schedule=settings.default_schedule,
            default_format=settings.default_format,
        )
        self.partitions = BufferPartitions(pool)
        self.raw_bucket = Bucket(buckets.raw)
        self.backup_bucket = Bucket(buckets.backup)
        self._raw = RawExporter(self.ledger, self.raw_bucket, self.backup_bucket)
        #: Events of the deliveries in hand at most (at least a whole batch).
        self._group_events = max(GROUP_EVENTS, settings.batch_size)
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
        self,
        *,
        deadline_s: float | None = None,
        progress: Progress | None = None,
        client_id: str | None = None,
    ) -> ProcessReport:
        """Deliver every client's pending events now (``client_id``: that client's only),
        whatever their schedules say (a manual delivery), until nothing is due or
        ``deadline_s`` passed."""
        async with self.ledger.running():
            report = ProcessReport()
            for client in await self.ledger.pending_clients(client_id):
                trigger = DeliveryTrigger.MANUAL
                if client.schedule.real_time:
                    trigger = DeliveryTrigger.REAL_TIME
                report.cut += len(
                    await self.ledger.cut(
                        client.client_id, Cut(trigger), max_events=MAX_DELIVERY_EVENTS
                    )
                )
            return await self._process(deadline_s, progress, client_id=client_id, report=report)

    async def cut_due(self, *, caught_up: bool = True, client_id: str | None = None) -> int:
        """Cut the deliveries that schedules and triggers say are due now; how many.
        ``caught_up``: the raw export has claimed what was waiting (see ``due_cut``)."""
        now = self.clock.now()
        cut = 0
        for client in await self.ledger.pending_clients(client_id):
            decision = due_cut(client, now, caught_up=caught_up)
            if decision is not None:
                seqs = await self.ledger.cut(
                    client.client_id, decision, max_events=MAX_DELIVERY_EVENTS
                )
                cut += len(seqs)
        return cut

    async def deliveries_due(self) -> bool:
        """Whether a schedule or a trigger has a delivery to cut now (the scheduler then
        runs a round without waiting for its interval)."""
        now = self.clock.now()
        return any(due_cut(c, now) is not None for c in await self.ledger.pending_clients())

    async def _process(
        self,
        deadline_s: float | None,
        progress: Progress | None,
        alongside: Alongside | None = None,
        *,
        client_id: str | None = None,
        report: ProcessReport | None = None,
    ) -> ProcessReport:
        """Cut what is due, and keep up to ``PARALLEL_OBJECTS`` groups of deliveries
        (``GROUP_EVENTS`` events in all) in hand, leasing the next as soon as one is done,
        so that the worker processes never wait for the slowest object of a round.

        ``alongside``: a raw export running at the same time; until it ends, finding
        nothing due means waiting for its next batch rather than stopping.
        """
        report = report or ProcessReport()
        started = time.monotonic()
        waiting = 0
        if progress:
            status = await self.ledger.status()
            waiting = sum(
                row["pending_events"] + row["waiting_events"] for row in status["deliveries"]
            )
        in_flight: dict[asyncio.Task[list[DeliveryResult]], int] = {}
        try:
            while True:
                # Read before leasing: a batch exported after a lease found nothing is then
                # still seen, by one more round of this loop.
                exporting = alongside is not None and not alongside.export.done()
                if alongside is not None:
                    alongside.batch_exported.clear()
                report.cut += await self.cut_due(caught_up=not exporting, client_id=client_id)
                # A failed delivery is due again only after its backoff, so this ends.
                while (
                    len(in_flight) < PARALLEL_OBJECTS
                    and (room := self._group_events - sum(in_flight.values())) > 0
                    and (deadline_s is None or time.monotonic() - started < deadline_s)
                ):
                    deliveries = await self.ledger.lease_deliveries(
                        client_id=client_id, group_events=room
                    )
                    if not deliveries:
                        break
                    task = asyncio.create_task(self.processor.process(deliveries))
                    in_flight[task] = sum(delivery.event_count for delivery in deliveries)
                if not in_flight and not exporting:
                    break
                done = await _first_done(set(in_flight), alongside if exporting else None)
                for task in done:
                    del in_flight[task]
                    report.add(task.result())
                if progress:
                    progress(report.events, max(waiting, report.events))
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        report.seconds = round(time.monotonic() - started, 3)
        return report

    async def test_destination(self, client_id: str) -> dict[str, Any]:
        """Write a small object where the client's files go and delete it again, as
        processing would: the store's own error comes out as ``ObjectStoreError``, word
        for word, within seconds (no retries)."""
        spec = await self.processor.destination(client_id)
        started = time.monotonic()
        bucket = Bucket(spec, probe=True)
        key = f"{DESTINATION_TEST_PREFIX}{uuid.uuid4().hex}.txt"
        await bucket.put(key, DESTINATION_TEST_BODY)
        await bucket.delete(key)
        return {
            "client_id": client_id,
            "destination": spec.describe(),
            "key": key,
            "seconds": round(time.monotonic() - started, 3),
        }

    async def purge(self) -> Retention:
        """Retention: rows of the DEFAULT partition and failed events go with their batch
        once it was exported longer ago than the retention; the days' partitions of
        ``events_log`` go whole once every row they hold has (``BufferPartitions``), and
        the coming days get theirs."""
        deleted = 0
        while (purged := await self.ledger.purge_one(self.settings.retention_s)) is not None:
            batch_id, count = purged
            deleted += count
            if count:
                logger.info(
                    "Removed %d exported events of batch %d from the buffer", count, batch_id
                )
        partitions = await self.partitions.maintain(self.settings.retention_s, self.clock.now())
        return Retention(deleted, partitions.dropped, partitions.added)

    async def run_once(self, *, deadline_s: float | None = None) -> dict[str, Any]:
        """One scheduled round: raw export and processing (of the deliveries that clients'
        schedules and triggers make due) side by side, then the failure sweep (notices,
        dead letters) and retention.

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
        noticed, dead = await self.ledger.sweep_failures(
            notice_after_s=self.settings.notice_after_s,
            dead_after_s=self.settings.dead_letter_after_s,
        )
        retention = await self.purge()
        return {
            "export": exported.as_dict(),
            "process": processed.as_dict(),
            "failing_noticed": noticed,
            "dead_lettered": dead,
            "purged": retention.deleted,
            "partitions_dropped": retention.dropped,
            "partitions_added": retention.added,
        }

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
            "interval_seconds": self.settings.interval_s,
        }

    async def process_status(self) -> dict[str, Any]:
        """Per client: its schedule and next delivery, deliveries waiting, failing, dead and
        done, events waiting for the schedule, pause state."""
        ledger = await self.ledger.status()
        now = self.clock.now()
        destinations = {row["client_id"]: row for row in ledger["destinations"]}
        schedules = {row["client_id"]: row for row in ledger["schedules"]}
        summaries = {row["client_id"]: row for row in ledger["deliveries"]}
        clients = []
        for client_id in sorted(schedules.keys() | summaries.keys()):
            state = destinations.get(client_id, {})
            own = schedules.get(client_id, {})
            schedule = self.ledger.schedule_of(own.get("export_schedule"))
            summary = summaries.get(client_id) or _EMPTY_SUMMARY
            clients.append(
                _jsonable(
                    {
                        "client_id": client_id,
                        "schedule": schedule.text,
                        "schedule_is_default": not own.get("export_schedule"),
                        "threshold": own.get("export_threshold"),
                        "next_delivery_at": next_delivery(schedule, now, own.get("last_tick")),
                        "delivery_requested_at": own.get("delivery_requested_at"),
                        "notify": bool(own.get("notify")),
                        **{k: v for k, v in summary.items() if k not in _INTERNAL},
                        "paused": bool(state.get("paused")),
                        "paused_until": state.get("paused_until") if state.get("paused") else None,
                        "consecutive_failures": state.get("consecutive_failures", 0),
                        "last_error": state.get("last_error"),
                    }
                )
            )
        return {
            "unprocessed_objects": ledger["unprocessed_objects"],
            "default_schedule": self.settings.default_schedule.text,
            "pending_deliveries": sum(c["pending_deliveries"] for c in clients),
            "waiting_events": sum(c["waiting_events"] for c in clients),
            "failing_deliveries": sum(c["failing_deliveries"] for c in clients),
            "dead_deliveries": sum(c["dead_deliveries"] for c in clients),
            "paused_clients": [c["client_id"] for c in clients if c["paused"]],
            "clients": clients,
        }

    def config(self) -> dict[str, Any]:
        """The pipeline's configuration as operators may see it (no secrets)."""
        return {
            "client_name": self.settings.client_name,
            "buckets": self.buckets.describe(),
            "batch_size": self.settings.batch_size,
            "interval_seconds": self.settings.interval_s,
            "default_schedule": self.settings.default_schedule.text,
            "default_format": self.settings.default_format,
            "max_delivery_events": MAX_DELIVERY_EVENTS,
            "notice_after_seconds": self.settings.notice_after_s,
            "dead_letter_after_seconds": self.settings.dead_letter_after_s,
            "buffer_retention_seconds": self.settings.retention_s,
            "lease_seconds": self.settings.lease_s,
            "raw_key_pattern": "raw-events/YYYY/MM/DD/batch-<batch>.jsonl.gz",
            "processed_key_pattern": (
                "processed-events/<client_id>/<YYYY/MM/DD|export_date=YYYY-MM-DD>/"
                "delivery-<n>.<json|jsonl|csv|parquet>"
                " (real time: batch-<batch>.<ext>; + .manifest.json)"
            ),
            "table_key_pattern": (
                "processed-events/<client_id>/<delta|iceberg>/events/event_date=YYYY-MM-DD/"
            ),
            "table_retention_seconds": self.settings.table_retention_s,
            "metering_key_pattern": (
                "metering/YYYY/MM/DD/batch-<batch>.jsonl (one per event day of the batch)"
            ),
        }


#: A client's counts before its first export.
_EMPTY_SUMMARY: dict[str, Any] = {
    "pending_deliveries": 0,
    "pending_events": 0,
    "waiting_events": 0,
    "delivered_deliveries": 0,
    "delivered_events": 0,
    "last_delivered_at": None,
    "failing_deliveries": 0,
    "dead_deliveries": 0,
    "delivery_error": None,
}
#: Summary columns used here, not shown.
_INTERNAL = frozenset({"client_id", "oldest_waiting_claimed_at"})


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
