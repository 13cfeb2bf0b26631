"""Data-subject requests by visitor id or user id: export (portability) and deletion
(erasure), following the client's alias links (``gdpr.subjects``).

A subject's events live in up to three places: the buffer (until retention purges them),
the raw objects (every client's events of a batch), and the client's processed files (a
delivery's files, in its format, and the copies replays wrote) or tables. Processed files
are a pure function of their delivery's raw objects (``export.deliveries``), so deletion
rewrites the raw objects without the subject and renders the delivery's files again from
them, instead of editing JSON, CSV and Parquet separately. A table (delta, iceberg) is
changed through the table: one delete of the subject's rows, a new version without them
(earlier versions keep them until vacuum removes their files, after the client's table
retention); its deliveries are not written again (the table holds them already, and a
replay of one is recognised and skipped).

Deletion is safe against crashes and against the exporters:

* it holds the export lock exclusively, so no export or processing run reads a buffer row or
  an object while it is being changed, and a run that starts later sees the new state;
* a delivery's files are rewritten (and tables' rows deleted) before its raw objects, so a
  request cut short leaves the subject in a raw object, where running it again finds them
  and redoes both; a table is asked to delete whenever the client has a delivery in its
  format, delivered or not (a delivery appended just before a crash is still pending), or
  a replay to it;
* every step is in the append-only audit log (requested, then completed or failed), and the
  receipt of a completed deletion is also written to the backup bucket.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import asyncpg
import orjson

from evothesis.domain import TABLE_FORMATS, SubjectKind
from evothesis.errors import (
    ConfigurationError,
    ExportsRunning,
    NotFound,
    ObjectStoreError,
    RequestIncomplete,
    StorageUnavailable,
)
from evothesis.export.deliveries import Share
from evothesis.export.pipeline import ExportPipeline
from evothesis.gdpr.lines import (
    FoundEvent,
    find_in_object,
    merge_events,
    remove_from_object,
)
from evothesis.gdpr.store import ClientBatch, ClientObjects, ClientReplay, SubjectStore
from evothesis.gdpr.subjects import LinkLookup, Subject, resolve_subject
from evothesis.objects.cpu import run_in_worker

logger = logging.getLogger("evothesis.gdpr")

#: Raw objects read at once: each is fetched, then searched in a worker process.
PARALLEL_OBJECTS = 4
#: Where receipts of completed deletions go in the backup bucket.
RECEIPTS_PREFIX = "gdpr-receipts"

#: Progress callback: (objects searched so far, objects to search).
Progress = Callable[[int, int], None]

#: Failures that stop a request part-way: recorded as "failed", then reported.
#: (Bucket configuration errors and damaged raw objects are object-store errors too.)
_INCOMPLETE = (ObjectStoreError, StorageUnavailable)


#: A client's salt (for the hashed forms of its user ids), ``None`` when it has none.
SaltLookup = Callable[[str], Awaitable[bytes | None]]


def receipt_key(client_id: str, request_id: uuid.UUID) -> str:
    return f"{RECEIPTS_PREFIX}/{client_id}/{request_id}.json"


@dataclass(frozen=True, slots=True)
class SubjectExport:
    """The subject's events as one JSON Lines file, and what was searched to find them."""

    request_id: uuid.UUID
    #: The events' lines, oldest first, then the failed events' lines (their own shape:
    #: ``request_id``, ``position``, ``reason``, ``payload``…), oldest first.
    data: bytes
    events: int
    buffered_events: int
    objects_searched: int
    failed_events: int


class DataSubjectRequests:
    """Export and deletion of one person's events within one client, named by a visitor id
    or a user id.

    ``salts`` opens a client's salt, so that user ids stored as their keyed hash are found
    too; ``None`` in a process without the registry's secrets (a collector whose registry
    is another service), where requests by user id are refused (503) rather than answered
    without the hashed ids, and requests by visitor id follow the links they can.
    """

    def __init__(
        self, pool: asyncpg.Pool, pipeline: ExportPipeline, salts: SaltLookup | None = None
    ) -> None:
        self._store = SubjectStore(pool)
        self._pipeline = pipeline
        self._salts = salts

    async def audit_log(self, client_id: str | None, limit: int = 100) -> list[dict[str, Any]]:
        return await self._store.audit_log(client_id, limit)

    # -------------------------------------------------------------------------------- export

    async def export(
        self,
        client_id: str,
        visitor_id: str | None = None,
        *,
        user_id: str | None = None,
        progress: Progress | None = None,
    ) -> SubjectExport:
        """Every event and failed event of the subject (a visitor or a user, and every id
        alias links tie to them), from the buffer, the raw objects and the backup bucket's
        failed-events files, each once, oldest first, in the lines the exports write them
        as."""
        subject = await self._subject(client_id, visitor_id, user_id)
        request_id = await self._begin("export", client_id, subject)
        try:
            snapshot = await self._store.snapshot(client_id, subject)
            objects = snapshot.objects
            raw, backup = self._pipeline.raw_bucket, self._pipeline.backup_bucket
            tally = _Tally(objects.count, progress)

            async def search_raw(batch: ClientBatch) -> list[FoundEvent]:
                data = await raw.get(batch.raw_key)
                found: list[FoundEvent] = await run_in_worker(
                    find_in_object, data, client_id, subject
                )
                tally.step()
                return found

            async def search_failed(key: str) -> list[FoundEvent]:
                data = await backup.get(key)
                found: list[FoundEvent] = await run_in_worker(
                    partial(find_in_object, arrived="received_at"), data, client_id, subject
                )
                tally.step()
                return found

            data = merge_events(snapshot.events, *await _bounded(search_raw, objects.batches))
            failed_data = merge_events(
                snapshot.failed, *await _bounded(search_failed, objects.failed_files)
            )
        except _INCOMPLETE as exc:
            await self._failed("export", request_id, client_id, subject, exc)
            raise RequestIncomplete(f"the export could not finish: {exc}") from exc
        events, failed = data.count(b"\n"), failed_data.count(b"\n")
        await self._audit(
            "export",
            "completed",
            request_id,
            client_id,
            subject,
            {
                "events": events,
                "buffered_events": len(snapshot.events),
                "failed_events": failed,
                "objects_searched": objects.count,
                **_ids_searched(subject),
            },
        )
        return SubjectExport(
            request_id, data + failed_data, events, len(snapshot.events), objects.count, failed
        )

    # ------------------------------------------------------------------------------ deletion

    async def delete(
        self,
        client_id: str,
        visitor_id: str | None = None,
        *,
        user_id: str | None = None,
        wait_s: float = 30.0,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Remove the subject's events and failed events (a visitor's or a user's, and every
        id alias links tie to them) from the buffer and from every exported object of the
        client (raw objects, the client's files, the backup bucket's failed-events files),
        and the alias links between those ids; the receipt says what was rewritten. Other
        people's events are untouched: their lines are kept byte for byte, and their rows
        are rendered by the same code from the same lines."""
        subject = await self._subject(client_id, visitor_id, user_id)
        request_id = await self._begin("delete", client_id, subject)
        requested_at = datetime.now(UTC)
        try:
            async with self._store.exclusive(wait_s):
                # The links again, inside the lock: an alias stored since is followed too.
                subject = await self._subject(client_id, visitor_id, user_id)
                buffered, buffered_failed, links = await self._store.delete_buffered(
                    client_id, subject
                )
                objects = await self._store.client_objects(client_id)
                tables = await self._delete_from_tables(objects, client_id, subject, request_id)
                rewritten = await self._rewrite(objects, client_id, subject, progress)
            receipt = {
                "request_id": str(request_id),
                "kind": "delete",
                "client_id": client_id,
                f"{subject.kind}_sha256": subject.digest,
                **_ids_searched(subject),
                "requested_at": requested_at.isoformat(),
                "completed_at": datetime.now(UTC).isoformat(),
                "buffer_events_deleted": buffered,
                "buffer_failed_events_deleted": buffered_failed,
                "identity_links_deleted": links,
                "objects_searched": objects.count,
                "events_deleted_from_objects": sum(
                    o["events_removed"] for o in rewritten if o["bucket"] == "raw"
                ),
                "failed_events_deleted_from_objects": sum(
                    o["events_removed"] for o in rewritten if o["bucket"] == "backup"
                ),
                "events_deleted_from_tables": sum(t["events_removed"] for t in tables),
                "objects_rewritten": rewritten,
                "tables": tables,
            }
            await self._pipeline.backup_bucket.put(
                receipt_key(client_id, request_id),
                orjson.dumps(receipt, option=orjson.OPT_INDENT_2),
            )
        except ExportsRunning as exc:
            await self._failed("delete", request_id, client_id, subject, exc)
            raise
        except _INCOMPLETE as exc:
            await self._failed("delete", request_id, client_id, subject, exc)
            raise RequestIncomplete(
                f"the deletion could not finish ({exc}); what was done stays done, "
                "run the same request again to complete it"
            ) from exc
        await self._audit("delete", "completed", request_id, client_id, subject, receipt)
        logger.info(
            "Deleted %s sha256:%s of client %s: %d buffered events, %d objects rewritten",
            subject.kind,
            subject.digest[:12],
            client_id,
            buffered,
            len(rewritten),
        )
        return receipt

    async def _delete_from_tables(
        self, objects: ClientObjects, client_id: str, subject: Subject, request_id: uuid.UUID
    ) -> list[dict[str, Any]]:
        """Delete the subject's rows from each table the client's deliveries went to (in the
        client's destination) and each table a replay wrote to."""
        targets: set[tuple[str, str | None]] = {
            (batch.delivery_format, None)
            for batch in objects.batches
            if batch.delivery_format in TABLE_FORMATS
        }
        targets |= {
            (replay.format, replay.destination)
            for replay in objects.replays
            if replay.format in TABLE_FORMATS and replay.seqs
        }
        processor = self._pipeline.processor
        deleted: dict[str, dict[str, Any]] = {}
        for fmt, destination in sorted(targets, key=lambda t: (t[0], t[1] or "")):
            bucket = await processor.bucket_for(client_id, destination)
            ref = processor.tables.ref(fmt, bucket.spec, client_id)
            if ref.uri in deleted:
                continue  # a replay to the client's own table
            removed = await processor.tables.delete_subject(
                ref,
                subject.visitor_ids,
                subject.user_ids,
                {"evothesis.gdpr_request": str(request_id)},
            )
            deleted[ref.uri] = {
                "format": fmt,
                "url": bucket.spec.url,
                "table": ref.location,
                "events_removed": removed,
            }
        return list(deleted.values())

    async def _rewrite(
        self,
        objects: ClientObjects,
        client_id: str,
        subject: Subject,
        progress: Progress | None,
    ) -> list[dict[str, Any]]:
        """Each raw object of the client without the subject; the files of a delivered
        delivery (and replays' copies of them) first, rendered from its new objects (see
        the module docstring), one delivery at a time so that only its new objects are
        held; a delivery not yet written renders from the new objects later by itself.
        Then each failed-events file without the subject's."""
        raw, backup = self._pipeline.raw_bucket, self._pipeline.backup_bucket
        tally = _Tally(objects.count, progress)

        async def strip(batch: ClientBatch) -> tuple[ClientBatch, int, bytes | None]:
            removed, kept = await run_in_worker(
                remove_from_object, await raw.get(batch.raw_key), client_id, subject
            )
            tally.step()
            return batch, removed, kept

        async def rewrite_failed(key: str) -> list[dict[str, Any]]:
            removed, kept = await run_in_worker(
                remove_from_object, await backup.get(key), client_id, subject
            )
            tally.step()
            if kept is None:
                return []
            await backup.put(key, kept)
            return [
                {"bucket": "backup", "url": backup.spec.url, "key": key, "events_removed": removed}
            ]

        delivered: dict[int, list[ClientBatch]] = {}
        alone: list[ClientBatch] = []
        for batch in objects.batches:
            if batch.delivered and batch.delivery_seq is not None:
                delivered.setdefault(batch.delivery_seq, []).append(batch)
            else:
                alone.append(batch)
        written: list[dict[str, Any]] = []
        for seq, batches in delivered.items():
            stripped = [item for item in await _bounded(strip, batches) if item[2] is not None]
            if not stripped:
                continue
            new = {batch.batch_id: kept for batch, _, kept in stripped if kept is not None}
            written += await self._render_again(client_id, seq, new, objects.replays)
            for batch, removed, kept in stripped:
                assert kept is not None
                await raw.put(batch.raw_key, kept)
                written.append(_raw_entry(raw.spec.url, batch.raw_key, removed))
        for batch, removed, kept in await _bounded(strip, alone):
            if kept is not None:
                await raw.put(batch.raw_key, kept)
                written.append(_raw_entry(raw.spec.url, batch.raw_key, removed))
        for entries in await _bounded(rewrite_failed, objects.failed_files):
            written += entries
        return written

    async def _render_again(
        self, client_id: str, seq: int, new: dict[int, bytes], replays: list[ClientReplay]
    ) -> list[dict[str, Any]]:
        """The files of the client's delivery ``seq``, and of every replay's copy of it,
        rendered from the new raw objects (``new``, by batch) and the unchanged others (a
        table's rows are deleted through the table instead: ``_delete_from_tables``)."""
        pipeline = self._pipeline
        processor = pipeline.processor
        (delivery,) = await pipeline.ledger.deliveries(client_id, [seq])

        async def source(share: Share) -> bytes:
            return new.get(share.batch_id) or await processor.read_raw(share)

        targets = [
            (fmt, destination)
            for fmt, destination in [(delivery.format, None)]
            + [(replay.format, replay.destination) for replay in replays if replay.wrote(seq)]
            if fmt not in TABLE_FORMATS
        ]
        written = []
        for fmt, destination in targets:
            (rendered,) = await processor.render([delivery], fmt=fmt, source=source)
            if rendered.error is not None:
                raise ObjectStoreError(rendered.error)
            bucket = await processor.bucket_for(client_id, destination)
            for file in await processor.write_files(bucket, delivery, fmt, rendered.files):
                written.append(
                    {
                        "bucket": "processed",
                        "url": bucket.spec.url,
                        "key": file.key,
                        "delivery": seq,
                        "events_left": file.events,
                    }
                )
        return written

    # ---------------------------------------------------------------------------- audit log

    async def _subject(
        self, client_id: str, visitor_id: str | None, user_id: str | None
    ) -> Subject:
        """Whom the request is about, with every id the client's alias links tie to them."""
        if (visitor_id is None) == (user_id is None) or not (visitor_id or user_id):
            raise NotFound("a visitor id or a user id is required (one of them)")
        if not await self._store.client_exists(client_id):
            raise NotFound(f"no client {client_id!r}")
        if user_id is not None and self._salts is None:
            raise ConfigurationError(
                "requests by user id need the registry's secrets (its salts hash user ids): "
                "run them where the registry is, e.g. with `evothesis gdpr`"
            )
        salt = await self._salts(client_id) if self._salts is not None else None
        if user_id is not None:
            return await resolve_subject(SubjectKind.USER, user_id, salt, self._links(client_id))
        assert visitor_id is not None
        return await resolve_subject(SubjectKind.VISITOR, visitor_id, salt, self._links(client_id))

    def _links(self, client_id: str) -> LinkLookup:
        return partial(self._store.links, client_id)

    async def _begin(self, kind: str, client_id: str, subject: Subject) -> uuid.UUID:
        request_id = uuid.uuid4()
        await self._audit(kind, "requested", request_id, client_id, subject, {})
        return request_id

    async def _failed(
        self,
        kind: str,
        request_id: uuid.UUID,
        client_id: str,
        subject: Subject,
        exc: BaseException,
    ) -> None:
        """Record the failure when the database still answers; the error is raised anyway."""
        try:
            await self._audit(
                kind, "failed", request_id, client_id, subject, {"error": str(exc)[:2000]}
            )
        except StorageUnavailable:
            logger.warning("Could not record the failure of request %s: %s", request_id, exc)

    async def _audit(
        self,
        kind: str,
        step: str,
        request_id: uuid.UUID,
        client_id: str,
        subject: Subject,
        receipt: dict[str, Any],
    ) -> None:
        await self._store.audit(
            request_id,
            kind=kind,
            step=step,
            client_id=client_id,
            visitor_sha256=subject.digest,
            receipt=receipt,
        )


def _ids_searched(subject: Subject) -> dict[str, object]:
    """What the request named, and how many ids it covered (the requested one, its stored
    forms, and those alias links tie to it); never the ids themselves."""
    return {
        "subject": subject.kind,
        "visitor_ids": len(subject.visitor_ids),
        "user_ids": len(subject.user_ids),
    }


T = TypeVar("T")
R = TypeVar("R")


class _Tally:
    """Counts objects done across a request's steps, for its progress callback."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self._total = total
        self._done = 0
        self._progress = progress

    def step(self) -> None:
        self._done += 1
        if self._progress:
            self._progress(self._done, self._total)


def _raw_entry(url: str, key: str, removed: int) -> dict[str, Any]:
    return {"bucket": "raw", "url": url, "key": key, "events_removed": removed}


async def _bounded(work: Callable[[T], Awaitable[R]], items: list[T]) -> list[R]:
    """``work`` on every item, a few at once. The first failure cancels the rest and waits
    for them, so nothing is still writing once a deletion has let the exporters back in."""
    limit = asyncio.Semaphore(PARALLEL_OBJECTS)

    async def one(item: T) -> R:
        async with limit:
            return await work(item)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(item)) for item in items]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
