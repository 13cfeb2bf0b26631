"""Processing: leased deliveries are rendered from their raw objects and written to their
clients' destinations, in each delivery's format, with their export metadata.

A group of deliveries that share raw objects (``ExportLedger.lease_deliveries``) is
processed together: each raw object is read and parsed once for all of them, in batch order,
and each delivery is rendered and written as soon as its last object is read. What a
delivery of several objects takes from each waits in a file of its own on disk until then
(canonical JSON Lines), so memory holds a few objects and a few rendered files at a time,
however many events the group's deliveries hold (the group's size bounds the disk only:
``pipeline.GROUP_EVENTS``). A client whose
destination fails is paused with its error recorded; its deliveries wait, and other
clients' go on. Keys and bytes depend only on the delivery (``export.deliveries``), so a
retry overwrites what an earlier attempt may have written. A delivery in a table format
(delta, iceberg) is appended to the client's table instead, all its rows in one commit under
the delivery's id, which the table recognises on a retry, a replay or a racing exporter.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final, TypeVar

from evothesis.domain import TABLE_FORMATS
from evothesis.errors import ObjectStoreError, StorageUnavailable
from evothesis.export.deliveries import Delivery, Share
from evothesis.export.keys import manifest_key
from evothesis.export.ledger import DeliveredFile, ExportLedger
from evothesis.export.parts import ObjectParts, RenderedFile, Want
from evothesis.export.tables.clients import ClientTables
from evothesis.export.tables.core import MAINTENANCE_INTERVAL_S, TableRef
from evothesis.export.timing import retry_delay
from evothesis.objects.buckets import BucketSpec, client_bucket
from evothesis.objects.cpu import WORKERS, ByName, run_in_worker
from evothesis.objects.store import Bucket

logger = logging.getLogger("evothesis.export")

T = TypeVar("T")

#: What the CPU workers do with raw objects (``export.render``, which only they import).
_SPLIT_OBJECT: Final[ByName[ObjectParts]] = ByName("evothesis.export.render", "split_object")
_RENDER_SPOOLED_DAY: Final[ByName[RenderedFile]] = ByName(
    "evothesis.export.render", "render_spooled_day"
)
R = TypeVar("R")

#: Files uploaded at once: uploads wait on the network.
PARALLEL_UPLOADS = 8
#: Raw objects of one group read ahead while the previous one is parsed.
READ_AHEAD = 2
#: The temporary folders of groups' gathered lines: this, the process id, a random part.
SPOOL_PREFIX = "evothesis-deliveries-"
#: Deliveries of one group rendered (and written) at once: one per worker process, and
#: one more being uploaded. Each holds its rendered files until they are written.
PARALLEL_RENDERS = WORKERS + 1

#: Resolves a client's destination: (bucket URL or None, credentials or None).
TargetLookup = Callable[[str], Awaitable[tuple[str | None, dict[str, str] | None]]]
#: Reads a raw object of a share (the raw bucket, or a data-subject request's new bytes).
RawSource = Callable[[Share], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    client_id: str
    seq: int
    events: int
    files: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Gathered:
    """A delivery of a group once its last raw object is read: its file when rendered
    whole from one object, else the files on disk that hold its lines of each day, in
    batch order; or why it cannot be rendered."""

    delivery: Delivery
    whole: list[RenderedFile] | None = None
    days: dict[date, Path] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    """A delivery's files, or why they could not be rendered (a raw object could not be
    read, or processed: the delivery is retried later)."""

    delivery: Delivery
    files: list[RenderedFile]
    error: str | None = None


class Processor:
    """Turns leased deliveries into files in their clients' destinations."""

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
        """One leased group: rendered, written, recorded, its lease renewed meanwhile (a
        daily delivery may read many objects). A failure is recorded on the deliveries it
        concerns, which are retried later with backoff, and never stops the others'; only
        the database's own outage, which stops everything anyway, is raised."""
        renewal = asyncio.create_task(self._renew(group))
        try:
            return await self._process(group)
        finally:
            renewal.cancel()
            await asyncio.gather(renewal, return_exceptions=True)

    async def _renew(self, group: Sequence[Delivery]) -> None:
        while True:
            await asyncio.sleep(self._ledger.lease_s / 3)
            try:
                await self._ledger.renew(group)
            except StorageUnavailable as exc:
                logger.warning("Could not renew the lease of %d deliveries: %s", len(group), exc)

    async def _process(self, group: Sequence[Delivery]) -> list[DeliveryResult]:
        limit = asyncio.Semaphore(PARALLEL_UPLOADS)
        renders = asyncio.Semaphore(PARALLEL_RENDERS)

        async def deliver(gathered: Gathered) -> tuple[DeliveryResult, list[DeliveredFile] | None]:
            async with renders:
                item = await self._render_gathered(gathered, None)
                return await self._write(item, limit)

        results: list[DeliveryResult] = []
        async with aclosing(self._gather(group, fmt=None, source=self.read_raw)) as stream:
            async for complete in stream:
                outcomes = await asyncio.gather(*map(deliver, complete))
                done = [
                    (item.delivery, files)
                    for item, (_, files) in zip(complete, outcomes, strict=True)
                    if files is not None
                ]
                await self._ledger.delivered(done)
                for delivery, files in done:
                    logger.info(
                        "Successfully uploaded %d events for client %s to processed S3: %s",
                        delivery.event_count,
                        delivery.client_id,
                        ", ".join(dict.fromkeys(file.key for file in files)),
                    )
                results += [result for result, _ in outcomes]
        return results

    async def _write(
        self, item: Rendered, limit: asyncio.Semaphore
    ) -> tuple[DeliveryResult, list[DeliveredFile] | None]:
        """A rendered delivery written to its client's destination, or its failure
        recorded (a failing destination pauses its client); the files written, if any."""
        delivery = item.delivery
        if item.error is not None:
            await self._ledger.delivery_failed(
                delivery,
                item.error,
                retry_in_s=retry_delay(delivery.attempts),
                pause_s=None,
            )
            return _failed(delivery, item.error), None
        try:
            bucket = await self.bucket_for(delivery.client_id)
            written = await self.write_files(bucket, delivery, delivery.format, item.files, limit)
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
            return _failed(delivery, str(exc)), None
        events = sum(file.events for file in item.files)
        return DeliveryResult(delivery.client_id, delivery.seq, events, len(written)), written

    async def write_files(
        self,
        bucket: Bucket,
        delivery: Delivery,
        fmt: str,
        files: Sequence[RenderedFile],
        limit: asyncio.Semaphore | None = None,
    ) -> list[DeliveredFile]:
        """Write a delivery's files (in ``fmt``) and their manifests to ``bucket``: data
        first, so a manifest is present only next to a complete file. In a table format, the
        rows go to the client's table in that bucket instead (``commit``)."""
        if fmt in TABLE_FORMATS:
            return await self.commit(bucket, delivery, fmt, files)
        limit = limit or asyncio.Semaphore(PARALLEL_UPLOADS)

        async def put(file: RenderedFile) -> DeliveredFile:
            key = delivery.file_key(file.day, fmt)
            async with limit:
                await bucket.put(key, file.data)
                await bucket.put(manifest_key(key), file.manifest)
            return DeliveredFile(key, file.day.isoformat(), len(file.data), file.events)

        return list(await asyncio.gather(*map(put, files)))

    async def commit(
        self, bucket: Bucket, delivery: Delivery, fmt: str, files: Sequence[RenderedFile]
    ) -> list[DeliveredFile]:
        """Append the rows of a delivery's days to the client's table in ``fmt``, in one
        commit under the delivery's id, unless the table holds it already: its history says
        so, or the ledger's record of the tables that do (``export_table_commits``, kept
        after the commit: the history alone may have forgotten an old delivery that a
        replay brings again). Then the table is maintained when it needs it."""
        ref = self.tables.ref(fmt, bucket.spec, delivery.client_id)
        delivery_id = delivery.delivery_id
        appended = await self.tables.append(
            ref,
            [file.data for file in files],
            delivery_id,
            {
                "evothesis.client_id": delivery.client_id,
                "evothesis.seq": str(delivery.seq),
                "evothesis.trigger": str(delivery.trigger),
                "evothesis.batch_ids": ",".join(map(str, delivery.batch_ids)),
            },
            await self._ledger.table_commits(delivery_id),
        )
        await self._ledger.table_committed(delivery_id, appended.table_id)
        await self._maintain(ref, crowded=appended.crowded)
        return [
            DeliveredFile(ref.location, file.day.isoformat(), len(file.data), file.events)
            for file in files
        ]

    async def _maintain(self, ref: TableRef, *, crowded: bool) -> None:
        """Compact a crowded table, and checkpoint and vacuum one not maintained for
        ``MAINTENANCE_INTERVAL_S``, if no other exporter is maintaining it."""
        days, maintained_at = await self._ledger.table_state(ref.client_id, ref.uri)
        if maintained_at is None:
            # New to the ledger: nothing to vacuum yet, the first full pass is a day away.
            await self._ledger.table_maintained(ref.uri)
            full = False
        else:
            full = (datetime.now(UTC) - maintained_at).total_seconds() >= MAINTENANCE_INTERVAL_S
        if not (crowded or full):
            return
        retention = None if days is None else timedelta(days=days)
        done = await self._ledger.maintain_table(
            ref.uri, lambda: self.tables.maintain(ref, retention=retention, full=full)
        )
        if full and done is not None:
            await self._ledger.table_maintained(ref.uri)

    async def read_raw(self, share: Share) -> bytes:
        return await self._raw.get(share.raw_key)

    async def render(
        self, group: Sequence[Delivery], *, fmt: str | None, source: RawSource
    ) -> list[Rendered]:
        """The files of each delivery of ``group`` (in ``fmt``, each its own format when
        ``None``), in the group's order, reading each raw object once. For a few deliveries
        (a replay's, a data-subject request's): every file is in memory at once."""
        rendered: dict[tuple[str, int], Rendered] = {}
        async with aclosing(self._gather(group, fmt=fmt, source=source)) as stream:
            async for complete in stream:
                for gathered in complete:
                    item = await self._render_gathered(gathered, fmt)
                    rendered[(item.delivery.client_id, item.delivery.seq)] = item
        return [rendered[(delivery.client_id, delivery.seq)] for delivery in group]

    async def _gather(
        self, group: Sequence[Delivery], *, fmt: str | None, source: RawSource
    ) -> AsyncGenerator[list[Gathered], None]:
        """Read the group's raw objects once each, in batch order (a few ahead), and after
        each one answer the deliveries whose last object it was. A delivery of one object is
        rendered whole from it; the lines of a delivery of several are appended, object by
        object, to a file per day in a temporary folder (made when first needed), which
        lives until the consumer has taken the last answer."""
        failed: dict[tuple[str, int], str] = {}
        whole: dict[tuple[str, int], list[RenderedFile]] = {}
        days: dict[tuple[str, int], dict[date, Path]] = {}
        left = {(d.client_id, d.seq): len(d.shares) for d in group}
        by_batch: dict[int, tuple[Share, list[Delivery]]] = {}
        for delivery in group:
            for share in delivery.shares:
                by_batch.setdefault(share.batch_id, (share, []))[1].append(delivery)

        async def read(
            item: tuple[Share, list[Delivery]],
        ) -> tuple[list[Delivery], ObjectParts | str]:
            share, members = item
            live = [d for d in members if (d.client_id, d.seq) not in failed]
            wants = [Want(d, fmt or d.format, whole=len(d.shares) == 1) for d in live]
            try:
                raw = await source(share)
                return live, await run_in_worker(_SPLIT_OBJECT, raw, wants)
            except (StorageUnavailable, asyncio.CancelledError):
                raise
            except ObjectStoreError as exc:
                # The raw bucket is ours: its outage is not the clients' fault, so nobody
                # is paused; the deliveries are retried later.
                return live, str(exc)
            except Exception as exc:
                logger.exception("Processing %s failed", share.raw_key)
                error = f"could not process the raw object: {type(exc).__name__}: {exc}"
                return live, error[:500]

        batches = [by_batch[batch_id] for batch_id in sorted(by_batch)]
        names = itertools.count()
        folder: Path | None = None
        try:
            async for (share, members), (live, parts) in _ordered(batches, read):
                if isinstance(parts, str):
                    for delivery in live:
                        failed.setdefault((delivery.client_id, delivery.seq), parts)
                else:
                    if parts.bad:
                        await self._record_bad(share, parts)
                    appends: list[tuple[Path, bytes]] = []
                    for delivery, part in zip(live, parts.parts, strict=True):
                        key = (delivery.client_id, delivery.seq)
                        if key in failed:
                            continue
                        if isinstance(part, RenderedFile):
                            whole[key] = [part]
                            continue
                        files = days.setdefault(key, {})
                        if folder is None:
                            folder = await asyncio.to_thread(_spool_folder)
                        if share.day not in files:
                            files[share.day] = folder / f"{next(names)}.jsonl"
                        appends.append((files[share.day], part))
                    if appends:
                        await asyncio.to_thread(_append, appends)
                complete = []
                for delivery in members:
                    key = (delivery.client_id, delivery.seq)
                    left[key] -= 1
                    if left[key]:
                        continue
                    complete.append(
                        Gathered(
                            delivery,
                            whole=whole.pop(key, None),
                            days=days.pop(key, {}),
                            error=failed.get(key),
                        )
                    )
                if complete:
                    yield complete
        finally:
            if folder is not None:
                # Not awaited: this runs while a cancelled group unwinds, too.
                shutil.rmtree(folder, ignore_errors=True)

    async def _render_gathered(self, gathered: Gathered, fmt: str | None) -> Rendered:
        """A gathered delivery's files: its whole file, or one per day from the lines on
        disk (a day without any is an empty file)."""
        delivery = gathered.delivery
        if gathered.error is not None:
            return Rendered(delivery, [], gathered.error)
        if gathered.whole is not None:
            return Rendered(delivery, gathered.whole)
        files = []
        try:
            for day in delivery.days:
                path = gathered.days.get(day)
                files.append(
                    await run_in_worker(
                        _RENDER_SPOOLED_DAY,
                        None if path is None else str(path),
                        delivery,
                        day,
                        fmt or delivery.format,
                    )
                )
        except Exception as exc:
            logger.exception("Rendering delivery %d of %s failed", delivery.seq, delivery.client_id)
            return Rendered(
                delivery, [], f"could not render the delivery: {type(exc).__name__}: {exc}"[:500]
            )
        return Rendered(delivery, files)

    async def _record_bad(self, share: Share, parts: ObjectParts) -> None:
        await self._ledger.record_unrenderable(share.raw_key, parts.bad)
        logger.warning(
            "%d line(s) of %s cannot be rendered; kept as failed events: %s",
            len(parts.bad),
            share.raw_key,
            "; ".join(f"line {line.number}: {line.reason}" for line in parts.bad[:5]),
        )

    async def destination(self, client_id: str, destination: str | None = None) -> BucketSpec:
        """Where the client's files go as it is configured now: its own destination, or
        the operator's processed bucket; or ``destination`` (a replay's) with the
        credentials of where the client's files go now."""
        configured, credentials = await self._targets(client_id)
        if destination is not None and not configured:
            credentials = dict(self._default.options)
        return client_bucket(destination or configured, credentials, default=self._default)

    async def bucket_for(self, client_id: str, destination: str | None = None) -> Bucket:
        """``destination(client_id, destination)``, opened once, then reused."""
        spec = await self.destination(client_id, destination)
        cache_key = (spec.url, tuple(sorted(spec.options.items())))
        bucket = self._buckets.get(cache_key)
        if bucket is None:
            bucket = self._buckets[cache_key] = Bucket(spec)
        return bucket


async def _ordered(
    items: Sequence[T], work: Callable[[T], Awaitable[R]], window: int = READ_AHEAD
) -> AsyncIterator[tuple[T, R]]:
    """``work`` on each item, up to ``window`` ahead of the one being consumed, answered in
    the items' order (a delivery's file is its batches in order)."""
    started: deque[tuple[T, asyncio.Task[R]]] = deque()
    following = iter(items)
    try:
        while True:
            while len(started) <= window and (item := next(following, None)) is not None:
                started.append((item, asyncio.ensure_future(work(item))))
            if not started:
                return
            item, task = started.popleft()
            yield item, await task
    finally:
        for _, task in started:
            task.cancel()
        await asyncio.gather(*(task for _, task in started), return_exceptions=True)


def _spool_folder() -> Path:
    """A new folder for a group's gathered lines, named after this process; first, the
    folders of processes that died before removing theirs (killed while processing)."""
    for stale in Path(tempfile.gettempdir()).glob(f"{SPOOL_PREFIX}*"):
        pid = stale.name.removeprefix(SPOOL_PREFIX).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _append(appends: Sequence[tuple[Path, bytes]]) -> None:
    for path, lines in appends:
        with path.open("ab") as file:
            file.write(lines)


def _failed(delivery: Delivery, error: str) -> DeliveryResult:
    return DeliveryResult(delivery.client_id, delivery.seq, 0, error=error)
