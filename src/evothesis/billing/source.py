"""Metering files of chosen days, read from the backup bucket with bounded concurrency.

The layout (``metering/YYYY/MM/DD/batch-N.jsonl``, one file per batch and event day) lets a
report list exactly its days' folders instead of the whole bucket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TypeVar

from evothesis.errors import BackupUnreadable, ObjectStoreError
from evothesis.export.keys import metering_day_prefix
from evothesis.export.metering import MeteringRecord, decode_metering
from evothesis.objects.store import Bucket

T = TypeVar("T")

#: Requests to the backup bucket in flight at once (listings, then reads).
READ_CONCURRENCY = 16

#: Progress callback: (files read so far, files to read).
FileProgress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class MeteringFile:
    """One file: its key, the batch and event day its name and folder say, its records."""

    key: str
    batch_id: int
    day: date
    records: list[MeteringRecord]


@dataclass
class MeteringRead:
    """What was read: decoded files, and the files that could not be decoded (key ->
    error), which are reported rather than billed as zero."""

    files: list[MeteringFile] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def records(self) -> list[MeteringRecord]:
        return [record for file in self.files for record in file.records]


def parse_key(key: str) -> tuple[int, date] | None:
    """``(batch, day)`` of a metering key, ``None`` for anything else in the folder."""
    parts = key.rsplit("/", 4)
    if len(parts) != 5 or not parts[4].startswith("batch-") or not parts[4].endswith(".jsonl"):
        return None
    try:
        day = date(int(parts[1]), int(parts[2]), int(parts[3]))
        return int(parts[4][len("batch-") : -len(".jsonl")]), day
    except ValueError:
        return None


async def read_days(
    bucket: Bucket,
    days: Iterable[date],
    *,
    batches: set[int] | None = None,
    progress: FileProgress | None = None,
) -> MeteringRead:
    """Every metering file of ``days`` (only those of ``batches`` when given).

    Raises ``BackupUnreadable`` when the bucket cannot be listed or read: a report from
    half the files would be a wrong bill.
    """
    try:
        return await _read_days(bucket, days, batches, progress)
    except ObjectStoreError as exc:
        raise BackupUnreadable(str(exc)) from exc


async def _read_days(
    bucket: Bucket,
    days: Iterable[date],
    batches: set[int] | None,
    progress: FileProgress | None,
) -> MeteringRead:
    limit = asyncio.Semaphore(READ_CONCURRENCY)

    async def bounded(work: Awaitable[T]) -> T:
        async with limit:
            return await work

    listings = await asyncio.gather(
        *(bounded(bucket.keys(metering_day_prefix(day))) for day in sorted(set(days)))
    )
    wanted = [
        (key, parsed)
        for keys in listings
        for key in keys
        if (parsed := parse_key(key)) is not None and (batches is None or parsed[0] in batches)
    ]
    result = MeteringRead()
    done = 0

    async def read(key: str, batch_id: int, day: date) -> None:
        nonlocal done
        data = await bounded(bucket.get(key))
        try:
            result.files.append(MeteringFile(key, batch_id, day, decode_metering(data)))
        except ValueError as exc:
            result.unreadable[key] = str(exc)
        done += 1
        if progress:
            progress(done, len(wanted))

    await asyncio.gather(*(read(key, batch_id, day) for key, (batch_id, day) in wanted))
    result.files.sort(key=lambda file: file.key)
    return result
