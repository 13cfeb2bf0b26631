"""Raw export of one batch: the buffer's rows as gzip JSON Lines in the raw bucket, plus the
batch's metering records (one file per event day) and failed events in the backup bucket,
then the batch is recorded as exported.

The order is what makes a crash harmless: objects are written before the ledger says so, and
their keys and bytes depend only on the batch, so whatever was written before a crash is
overwritten with the same content when the batch is retried.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime

from evothesis.export.keys import failed_events_key, metering_key, raw_key
from evothesis.export.ledger import Batch, ExportLedger, FailedLine
from evothesis.export.metering import (
    MeteredEvent,
    MeteredFailure,
    encode_metering,
    meter,
)
from evothesis.export.rows import read_batch_rows
from evothesis.objects.cpu import run_in_worker
from evothesis.objects.store import Bucket

logger = logging.getLogger("evothesis.export")

#: Fast compression: raw objects are written once per batch and read once by processing, so
#: speed matters more than the last few percent of size (level 1 is ~4x faster than 6).
GZIP_LEVEL = 1


@dataclass(frozen=True, slots=True)
class RawResult:
    batch_id: int
    events: int
    key: str
    size: int
    recorded: bool


class RawExporter:
    """Writes a leased batch to the raw and backup buckets and records it."""

    def __init__(self, ledger: ExportLedger, raw: Bucket, backup: Bucket) -> None:
        self._ledger = ledger
        self._raw = raw
        self._backup = backup

    async def export(self, batch: Batch) -> RawResult:
        """Raises ``ObjectStoreError`` (the batch stays pending) or ``StorageUnavailable``."""
        rows = await self._ledger.batch_rows(batch)
        failed = await self._ledger.batch_failed_lines(batch)
        encoded = await run_in_worker(encode_batch, batch.batch_id, rows, failed)
        body = encoded.body
        key = raw_key(batch.batch_id, batch.claimed_at)
        puts = [self._raw.put(key, body)]
        puts.extend(
            self._backup.put(metering_key(batch.batch_id, day), records)
            for day, records in encoded.metering.items()
        )
        if failed:
            # Only batches with failures get a file; same batch, same failures, same bytes.
            puts.append(
                self._backup.put(
                    failed_events_key(batch.batch_id, batch.claimed_at),
                    gzip_object("".join(f"{failure.line}\n" for failure in failed).encode()),
                )
            )
        await asyncio.gather(*puts)
        recorded = await self._ledger.mark_exported(
            batch,
            raw_key=key,
            raw_bytes=len(body),
            event_count=encoded.events,
            client_counts=encoded.client_counts,
            failed_clients=sorted({failure.client_id for failure in failed}),
        )
        logger.info(
            "Successfully uploaded %d events to raw S3: %s%s",
            encoded.events,
            key,
            "" if recorded else " (already recorded by another exporter)",
        )
        return RawResult(batch.batch_id, encoded.events, key, len(body), recorded)


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A batch as it is written: the gzip raw object, its metering files by event day, and
    the counts the ledger records."""

    body: bytes
    metering: dict[date, bytes]
    events: int
    client_counts: dict[str, int]


def encode_batch(batch_id: int, rows: bytes, failed: list[FailedLine]) -> EncodedBatch:
    """The raw object (``mtime=0``: same batch, same bytes) and its metering from the
    batch's COPY rows (in a worker process: only bytes travel)."""
    read = read_batch_rows(rows)
    metered = (
        MeteredEvent(client_id, site_id, day, size, envelope=envelope, count=count)
        for (client_id, site_id, day, envelope), (count, size) in read.tallies.items()
    )
    failures = (
        MeteredFailure(f.client_id, f.site_id, _utc_day(f.received_at), f.reason) for f in failed
    )
    files = {
        day: encode_metering(records) for day, records in meter(batch_id, metered, failures).items()
    }
    return EncodedBatch(gzip_object(read.body), files, read.events, read.client_counts())


def gzip_object(body: bytes) -> bytes:
    """A raw object's bytes: ``mtime=0`` so that the same lines always give the same bytes,
    whoever writes (or, for a data-subject deletion, rewrites) them."""
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()
