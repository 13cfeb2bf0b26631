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
from evothesis.export.ledger import Batch, BatchLine, ExportLedger, FailedLine, counts_by_client
from evothesis.export.metering import (
    ENVELOPE_EVENT_TYPE,
    MeteredEvent,
    MeteredFailure,
    encode_metering,
    meter,
)
from evothesis.export.objects import Bucket

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

    def __init__(
        self, ledger: ExportLedger, raw: Bucket, backup: Bucket, *, default_format: str
    ) -> None:
        self._ledger = ledger
        self._raw = raw
        self._backup = backup
        self._default_format = default_format

    async def export(self, batch: Batch) -> RawResult:
        """Raises ``ObjectStoreError`` (the batch stays pending) or ``StorageUnavailable``."""
        lines = await self._ledger.batch_lines(batch)
        failed = await self._ledger.batch_failed_lines(batch)
        body, metering = await asyncio.to_thread(_encode, batch.batch_id, lines, failed)
        key = raw_key(batch.batch_id, batch.claimed_at)
        puts = [self._raw.put(key, body)]
        puts.extend(
            self._backup.put(metering_key(batch.batch_id, day), records)
            for day, records in metering.items()
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
            event_count=len(lines),
            client_counts=counts_by_client(lines),
            default_format=self._default_format,
        )
        logger.info(
            "Successfully uploaded %d events to raw S3: %s%s",
            len(lines),
            key,
            "" if recorded else " (already recorded by another exporter)",
        )
        return RawResult(batch.batch_id, len(lines), key, len(body), recorded)


def _encode(
    batch_id: int, lines: list[BatchLine], failed: list[FailedLine]
) -> tuple[bytes, dict[date, bytes]]:
    """The gzip JSON Lines object (``mtime=0``: same batch, same bytes) and its metering
    files by event day (UTC: the session time zone, so ``created_at`` comes in UTC)."""
    encoded = [line.line.encode() for line in lines]
    body = b"".join(line + b"\n" for line in encoded)
    metered = (
        MeteredEvent(
            line.client_id,
            line.site_id,
            _utc_day(line.created_at),
            len(data) + 1,
            envelope=line.event_type == ENVELOPE_EVENT_TYPE,
        )
        for line, data in zip(lines, encoded, strict=True)
    )
    failures = (
        MeteredFailure(f.client_id, f.site_id, _utc_day(f.received_at), f.reason) for f in failed
    )
    files = {
        day: encode_metering(records) for day, records in meter(batch_id, metered, failures).items()
    }
    return gzip_object(body), files


def gzip_object(body: bytes) -> bytes:
    """A raw object's bytes: ``mtime=0`` so that the same lines always give the same bytes,
    whoever writes (or, for a data-subject deletion, rewrites) them."""
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()
