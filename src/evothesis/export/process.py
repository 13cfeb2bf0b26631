"""Processing: each raw object not yet processed is split per client and written to that
client's destination, in the client's format, with its export metadata.

A delivery is one (raw batch, client) pair. A client whose destination fails is paused with
its error recorded; its deliveries wait, and other clients' go on. Keys depend only on the
client, the batch, the format and the layout fixed when the delivery was created, so a retry
overwrites. A table format (delta, iceberg) appends the delivery's rows to the client's
table instead, under the delivery's identity, which the table recognises on a retry.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from evothesis.errors import ObjectStoreError, StorageUnavailable
from evothesis.export.formats import (
    TABLE_FORMATS,
    BadLine,
    ClientEvents,
    encode_events,
    event_columns,
    export_metadata,
    parse_raw_lines,
    split_by_client,
    typed_columns,
)
from evothesis.export.keys import batch_name, manifest_key, processed_key
from evothesis.export.ledger import Delivery, ExportLedger
from evothesis.export.tables.clients import ClientTables
from evothesis.export.tables.core import MAINTENANCE_INTERVAL_S
from evothesis.export.tables.schema import rows_to_ipc, table_rows
from evothesis.export.timing import retry_delay
from evothesis.objects.buckets import BucketSpec, client_bucket
from evothesis.objects.cpu import run_in_worker
from evothesis.objects.store import Bucket

logger = logging.getLogger("evothesis.export")

#: Client files of one raw object uploaded at once: uploads wait on the network.
PARALLEL_UPLOADS = 8

#: Resolves a client's destination: (bucket URL or None, credentials or None).
TargetLookup = Callable[[str], Awaitable[tuple[str | None, dict[str, str] | None]]]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    batch_id: int
    client_id: str
    events: int
    key: str | None
    size: int = 0
    error: str | None = None


class Processor:
    """Turns leased deliveries into per-client files."""

    def __init__(
        self,
        ledger: ExportLedger,
        raw: Bucket,
        *,
        default_destination: BucketSpec,
        targets: TargetLookup,
        tables: ClientTables,
    ) -> None:
        self._ledger = ledger
        self._raw = raw
        self._default = default_destination
        self._targets = targets
        self.tables = tables
        self._buckets: dict[tuple[str, tuple[tuple[str, str], ...]], Bucket] = {}

    async def process(self, group: Sequence[Delivery]) -> list[DeliveryResult]:
        """One batch's deliveries (as a lease hands them out): its raw object is read once,
        its clients' files are written concurrently and recorded at once.

        Whatever goes wrong with one object (a damaged object, a bug) is recorded on its
        deliveries, which are retried later with backoff, and never stops the others'; only
        the database's own outage, which stops everything anyway, is raised.
        """
        try:
            return await self._process(group)
        except StorageUnavailable:
            raise
        except Exception as exc:
            logger.exception("Processing %s failed", group[0].raw_key)
            error = f"could not process the raw object: {type(exc).__name__}: {exc}"[:500]
            for delivery in group:
                await self._ledger.delivery_failed(
                    delivery, error, retry_in_s=retry_delay(delivery.attempts), pause_s=None
                )
            return [_failed(delivery, error) for delivery in group]

    async def _process(self, group: Sequence[Delivery]) -> list[DeliveryResult]:
        key = group[0].raw_key
        if any(delivery.raw_key != key for delivery in group):
            raise ValueError("deliveries of more than one raw object")
        try:
            raw = await self._raw.get(key)
        except ObjectStoreError as exc:
            # The raw bucket is ours: its outage is not the clients' fault, so nobody is
            # paused; the deliveries are retried later.
            for delivery in group:
                await self._ledger.delivery_failed(
                    delivery, str(exc), retry_in_s=retry_delay(delivery.attempts), pause_s=None
                )
            return [_failed(delivery, str(exc)) for delivery in group]
        rendered: Rendered = await run_in_worker(render_files, raw, group)
        if rendered.bad:
            await self._ledger.record_unrenderable(key, rendered.bad)
            logger.warning(
                "%d line(s) of %s cannot be rendered; kept as failed events: %s",
                len(rendered.bad),
                key,
                "; ".join(f"line {line.number}: {line.reason}" for line in rendered.bad[:5]),
            )
        files = rendered.files
        limit = asyncio.Semaphore(PARALLEL_UPLOADS)

        async def deliver(delivery: Delivery, file: RenderedFile) -> DeliveryResult:
            async with limit:
                return await self._deliver(delivery, file)

        outcomes = await asyncio.gather(*map(deliver, group, files))
        done = [(d, o.key, o.size) for d, o in zip(group, outcomes, strict=True) if o.key]
        await self._ledger.delivered(done)
        for delivery, object_key, _ in done:
            logger.info(
                "Successfully uploaded %d events for client %s to processed S3: %s",
                delivery.event_count,
                delivery.client_id,
                object_key,
            )
        return list(outcomes)

    async def _deliver(self, delivery: Delivery, file: RenderedFile) -> DeliveryResult:
        """Write one client's file and manifest; a failure is recorded (and the client
        paused) here, a success by the caller together with the others of the object."""
        try:
            bucket = await self.bucket_for(delivery.client_id)
            if delivery.format in TABLE_FORMATS:
                key = await self._append(delivery, bucket, file)
            else:
                key = processed_key(
                    delivery.client_id,
                    delivery.batch_id,
                    delivery.claimed_at,
                    delivery.format,
                    delivery.layout,
                )
                # Data first: a manifest is present only next to a complete file.
                await bucket.put(key, file.data)
                await bucket.put(manifest_key(key), file.manifest)
        except ObjectStoreError as exc:
            failures = await self._ledger.destination_failures(delivery.client_id) + 1
            pause = retry_delay(failures)
            logger.warning(
                "Export to client %s failed (attempt %d), paused for %.0f s: %s",
                delivery.client_id,
                failures,
                pause,
                exc,
            )
            await self._ledger.delivery_failed(delivery, str(exc), retry_in_s=pause, pause_s=pause)
            return _failed(delivery, str(exc))
        return DeliveryResult(
            delivery.batch_id, delivery.client_id, file.events, key, len(file.data)
        )

    async def _append(self, delivery: Delivery, bucket: Bucket, file: RenderedFile) -> str:
        """Append a table delivery's rows under its identity, then maintain the table if
        no other exporter is; the table's location."""
        client_id, fmt = delivery.client_id, delivery.format
        ref = self.tables.ref(fmt, bucket.spec, client_id)
        await self.tables.append(
            ref,
            file.data,
            delivery_identity(delivery),
            {"evothesis.batch_id": str(delivery.batch_id)},
        )
        days, maintained_at = await self._ledger.table_state(client_id, fmt)
        full = (
            maintained_at is None
            or (datetime.now(UTC) - maintained_at).total_seconds() >= MAINTENANCE_INTERVAL_S
        )
        retention = None if days is None else timedelta(days=days)
        done = await self._ledger.maintain_table(
            client_id, fmt, lambda: self.tables.maintain(ref, retention=retention, full=full)
        )
        if full and done is not None:
            await self._ledger.table_maintained(client_id, fmt)
        return ref.location

    async def bucket_for(self, client_id: str) -> Bucket:
        """The client's destination as it is configured now (opened once, then reused)."""
        destination, credentials = await self._targets(client_id)
        spec = client_bucket(destination, credentials, default=self._default)
        cache_key = (spec.url, tuple(sorted(spec.options.items())))
        bucket = self._buckets.get(cache_key)
        if bucket is None:
            bucket = self._buckets[cache_key] = Bucket(spec)
        return bucket


@dataclass(frozen=True, slots=True)
class RenderedFile:
    """One delivery's file body and sidecar manifest, as they are uploaded (for a table
    format, ``data`` is the rows to append as Arrow IPC)."""

    data: bytes
    manifest: bytes
    events: int


@dataclass(frozen=True, slots=True)
class Rendered:
    """One raw object's files, one per delivery, and the lines none of them could carry."""

    files: list[RenderedFile]
    bad: list[BadLine]


def render_files(raw: bytes, deliveries: Sequence[Delivery]) -> Rendered:
    """Split a gzip raw object per client and encode each delivery's file (in a worker
    process: only bytes travel back)."""
    return render_lines(gzip.decompress(raw), deliveries)


def render_lines(lines: bytes, deliveries: Sequence[Delivery]) -> Rendered:
    """``render_files`` for a raw object's decompressed JSON Lines."""
    tabular = any(delivery.format != "json" for delivery in deliveries)
    parsed = parse_raw_lines(lines)
    events = split_by_client(parsed.events, columns=tabular)
    nothing = ClientEvents([], None)
    files = []
    for delivery in deliveries:
        mine = events.get(delivery.client_id, nothing)
        files.append(RenderedFile(*_encode(delivery, mine), len(mine.events)))
    return Rendered(files, parsed.bad)


def delivery_identity(delivery: Delivery) -> str:
    """The delivery's export id: its manifest's ``export_id`` and, for a table, the identity
    its commit carries."""
    return f"exp_{batch_name(delivery.batch_id)}_{delivery.client_id}"


def _encode(delivery: Delivery, events: ClientEvents) -> tuple[bytes, bytes]:
    """The client's file and its sidecar manifest; the export time is the batch's claim time
    so that a retried delivery writes identical bytes."""
    metadata = export_metadata(
        export_id=delivery_identity(delivery),
        export_time=delivery.claimed_at.isoformat(),
        events=events,
        fmt=delivery.format,
        batch_id=delivery.batch_id,
        client_id=delivery.client_id,
    )
    if delivery.format in TABLE_FORMATS:
        columns = events.columns if events.columns is not None else event_columns(events.events)
        data = rows_to_ipc(table_rows(typed_columns(columns)))
    else:
        data = encode_events(events, delivery.format, metadata=metadata)
    return data, orjson.dumps({"export_metadata": metadata}, option=orjson.OPT_INDENT_2)


def _failed(delivery: Delivery, error: str) -> DeliveryResult:
    return DeliveryResult(delivery.batch_id, delivery.client_id, 0, None, error=error)
