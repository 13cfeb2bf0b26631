"""The /collect and /v1/* use cases: parse, attribute, fold through the steps, hand to the
buffer.

Kept free of HTTP so the same flow serves the API, tests and future transports. The work
between attribution and the buffer is ``ingest.steps``, the same for both wire formats;
this module does the I/O around it (registry lookups, the write buffer) and counts every
outcome by its reason.

Parsing and ``accept`` (PII redaction, rows) cost per byte, about 0.5 µs a byte and up to
1.5 µs for text built to exercise every PII rule: a 1 MiB body held the event loop for
half a second or more, and every other request of the process waited. Bodies over
``OFF_LOOP_BODY_BYTES`` (a gzip body: once decompressed) therefore parse and ``accept``
in a worker process (``objects.cpu``), for either wire format: threads would not help,
because this is Python holding the GIL, and a loop thread competing for it waited tens of
milliseconds at a time. Below the threshold (single events, the tracker's batches) the
work stays inline, where it costs less than a trip to another process would. The steps'
decisions (cheap, and needing the registry's answers) stay on the loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Final, TypeVar

from evothesis.domain import (
    AuditRecord,
    ClientConfig,
    DropReason,
    Envelope,
    EventRow,
    FailedEvent,
    RejectedEvent,
    RejectReason,
    RequestContext,
    SegmentCall,
)
from evothesis.enrich.limits import EventLimits
from evothesis.errors import (
    InvalidEvent,
    InvalidWriteKey,
    OriginMismatch,
    Refused,
    UnauthorizedDomain,
    WriteKeyRequired,
)
from evothesis.ingest.attribution import SiteDirectory
from evothesis.ingest.enrichment import Enricher
from evothesis.ingest.envelope import parse_envelope
from evothesis.ingest.identity import store_user_ids
from evothesis.ingest.outcomes import Outcomes
from evothesis.ingest.segment import (
    SegmentMessage,
    SegmentRequest,
    parse_segment,
    segment_envelope,
)
from evothesis.ingest.steps import Accepted, Dropped, Intake, accept_all, steps
from evothesis.objects.cpu import run_in_worker
from evothesis.registry.domains import site_host
from evothesis.storage.write_buffer import WriteBuffer

__all__ = ["MAX_REASONS_SHOWN", "OFF_LOOP_BODY_BYTES", "CollectResult", "Collector"]

#: Rejected inner events described in a response; the count covers them all.
MAX_REASONS_SHOWN = 10

#: Larger bodies are parsed and accepted in a worker process. At the dearest rate measured
#: (1.5 µs a byte) 16 KiB holds the loop 25 ms; the hot path's bodies are a tenth of it.
OFF_LOOP_BODY_BYTES: Final = 16 * 1024

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CollectResult:
    """What the response reports: how many events were stored or dropped, for whom, when."""

    events_processed: int
    client_id: str
    received_at: datetime
    events_dropped: int = 0
    #: Why ``events_dropped`` were not stored.
    dropped_because: DropReason | None = None
    #: Durable on local disk, not yet in PostgreSQL (answered 202).
    spooled: bool = False
    #: Inner events that failed validation (stored in ``failed_events``), and the first
    #: ``MAX_REASONS_SHOWN`` of them described for the sender.
    events_rejected: int = 0
    rejected_reasons: tuple[dict[str, object], ...] = ()
    #: Events whose id another event of the same request had: stored once.
    duplicates: int = 0
    #: The stored event's id, for a single event (seed 004's answer carries it).
    event_id: str | None = None


class Collector:
    def __init__(
        self,
        *,
        sites: SiteDirectory,
        buffer: WriteBuffer,
        max_batch_events: int,
        enricher: Enricher,
        limits: EventLimits,
    ) -> None:
        self._sites = sites
        self._buffer = buffer
        self._max_batch_events = max_batch_events
        self._event_columns = enricher.event
        self._limits = limits
        self._steps = steps(enricher)
        self.outcomes = Outcomes()

    async def page_owner(self, page: str | None) -> ClientConfig | None:
        """The client owning the page an ``Origin`` or ``Referer`` names; ``None`` when none
        is named, it is not a host, or nobody owns it. Raises ``RegistryUnavailable``."""
        if page is None or site_host(page) is None:
            return None
        return await self._sites.resolve(page)

    async def collect(
        self, body: bytes, context: RequestContext, page_owner: ClientConfig | None
    ) -> CollectResult:
        """Store every event of one request durably, or raise an ``EvothesisError``.

        ``page_owner`` is ``page_owner(context.page)``, which the caller has already
        resolved (for its CORS answer)."""
        off_loop = len(body) > OFF_LOOP_BODY_BYTES
        envelope = await _work(
            off_loop,
            partial(
                parse_envelope,
                body,
                max_batch_events=self._max_batch_events,
                now=context.received_at,
                limits=self._limits,
            ),
        )
        try:
            client = await self._attribute(envelope)
            intake = self._decide(Intake(envelope, context, client, page_owner))
        except Refused as exc:
            self.outcomes.refused[exc.refusal] += 1
            raise
        if isinstance(intake, Dropped):
            return CollectResult(
                0,
                client.client_id,
                context.received_at,
                events_dropped=intake.events,
                dropped_because=intake.reason,
            )
        [accepted] = await self._accept([intake], off_loop=off_loop)
        note = (
            f"Processing batch with {envelope.inner_count} individual events "
            f"for client {client.client_id}"
            if envelope.is_batch
            else None
        )
        spooled = await self._buffer.write(accepted.rows, note, accepted.audit, accepted.failed)
        return CollectResult(
            len(accepted.rows),
            client.client_id,
            context.received_at,
            spooled=spooled,
            events_rejected=len(accepted.failed),
            rejected_reasons=_reasons(envelope.rejected),
            duplicates=accepted.duplicates,
            event_id=None if envelope.is_batch else envelope.events[0].event_id,
        )

    async def collect_segment(
        self,
        body: bytes,
        call: SegmentCall | None,
        context: RequestContext,
        page_owner: ClientConfig | None,
    ) -> CollectResult:
        """Store the messages of one Segment API request (``call``: the endpoint's; ``None``
        for a batch) durably, or raise an ``EvothesisError``.

        The write key (HTTP Basic, else the body's ``writeKey``) selects the client; a page
        the request comes from (``Origin``, else ``Referer``) and every page a message names
        must be that client's. Each message then goes through the same steps as a /collect
        event, as an envelope of its own: its consent, address and browser are its own (a
        server sends many visitors' messages in one batch). Every stored row of the request
        is written in one flush, so the answer covers all of them.
        """
        off_loop = len(body) > OFF_LOOP_BODY_BYTES
        request = await _work(
            off_loop,
            partial(
                parse_segment,
                body,
                call,
                now=context.received_at,
                max_batch_events=self._max_batch_events,
                limits=self._limits,
            ),
        )
        try:
            client, context = await self._attribute_key(request, context, page_owner)
            messages, rejected = await self._own_pages(request, client)
        except Refused as exc:
            self.outcomes.refused[exc.refusal] += 1
            raise
        rejected = tuple(
            r._replace(raw=store_user_ids(r.raw, client)) if isinstance(r.raw, dict) else r
            for r in rejected
        )
        intakes: list[Intake] = []
        dropped: Counter[DropReason] = Counter()
        seen: set[str] = set()
        duplicates = 0
        for message in messages:
            event = message.event
            if event.event_id in seen:
                duplicates += 1
                continue
            seen.add(event.event_id)
            # The message's own visitor: its address and browser, not the sender's.
            message_context = RequestContext(
                message.client_ip or context.client_ip,
                message.user_agent,
                context.received_at,
                context.origin,
                context.referer,
                context.write_key,
                context.dnt,
                context.gpc,
            )
            envelope = segment_envelope(
                message,
                event._replace(payload=store_user_ids(event.payload, client)),
                rejected if not intakes else (),
            )
            outcome = self._decide(Intake(envelope, message_context, client, page_owner))
            if isinstance(outcome, Dropped):
                dropped[outcome.reason] += outcome.events
                continue
            intakes.append(outcome)
        rows: list[EventRow] = []
        failed: list[FailedEvent] = []
        audit: AuditRecord | None = None
        for accepted in await self._accept(intakes, off_loop=off_loop):
            rows.extend(accepted.rows)
            failed.extend(accepted.failed)
            if audit is None:
                audit = accepted.audit
        if audit is not None:
            audit = audit._replace(events=len(rows))
        note = (
            f"Processing batch with {request.sent} individual events for client {client.client_id}"
            if request.batch
            else None
        )
        spooled = bool(rows or failed) and await self._buffer.write(rows, note, audit, failed)
        return CollectResult(
            len(rows),
            client.client_id,
            context.received_at,
            events_dropped=sum(dropped.values()),
            dropped_because=next(iter(dropped), None),
            spooled=spooled,
            events_rejected=len(failed),
            rejected_reasons=_reasons(rejected),
            duplicates=duplicates,
            event_id=None if request.batch else messages[0].event.event_id,
        )

    def _decide(self, intake: Intake) -> Intake | Dropped:
        """Fold one envelope through the steps, counting what they decide."""
        for step in self._steps:
            outcome = step(intake)
            if isinstance(outcome, Dropped):
                self.outcomes.dropped[outcome.reason] += outcome.events
                return outcome
            intake = outcome
        assert intake.privacy is not None
        if intake.privacy.anonymize:
            self.outcomes.anonymized += len(intake.envelope.events)
        return intake

    async def _accept(self, intakes: list[Intake], *, off_loop: bool) -> list[Accepted]:
        """What is stored of each envelope the steps let through, made in one call: in a
        worker process for a large body (one trip for all of a batch's messages)."""
        if not intakes:
            return []
        accepted = await _work(off_loop, partial(accept_all, self._event_columns, intakes))
        for intake in intakes:
            for rejected in intake.envelope.rejected:
                self.outcomes.rejected[rejected.reason] += 1
        return accepted

    async def _attribute_key(
        self, request: SegmentRequest, context: RequestContext, page_owner: ClientConfig | None
    ) -> tuple[ClientConfig, RequestContext]:
        """The client of the request's write key, and the context with that key in it."""
        key = context.write_key
        if key is None:
            key = request.write_key
        elif request.write_key not in (None, key):
            raise InvalidWriteKey("the body's writeKey is not the key the request is sent with")
        if not key:
            raise WriteKeyRequired(
                "send the client's write key as the HTTP Basic user name (or as writeKey)"
            )
        client = await self._sites.resolve_write_key(key)
        if client is None:
            raise InvalidWriteKey("the write key belongs to no active client")
        page = context.page
        if page is not None and (page_owner is None or page_owner.client_id != client.client_id):
            shown = site_host(page) or page[:100]
            raise OriginMismatch(
                f"page {shown!r} does not belong to client {client.client_id!r}, "
                "whose write key the request carries"
            )
        return client, replace(context, write_key=key)

    async def _own_pages(
        self, request: SegmentRequest, client: ClientConfig
    ) -> tuple[list[SegmentMessage], tuple[RejectedEvent, ...]]:
        """The messages whose page, if they name one, is the client's; a batch's others are
        set aside as rejected, a single message's refuses the request."""
        owners: dict[str, ClientConfig | None] = {}
        kept: list[SegmentMessage] = []
        foreign: list[RejectedEvent] = []
        for message in request.messages:
            host = message.page_host
            if host is not None:
                if host not in owners:
                    owners[host] = await self._sites.resolve(host)
                owner = owners[host]
                if owner is None or owner.client_id != client.client_id:
                    problem = f"the page's site {host!r} " + (
                        "belongs to no client" if owner is None else "is another client's"
                    )
                    if not request.batch:
                        error = OriginMismatch if owner is not None else UnauthorizedDomain
                        raise error(f"{problem}, not to the write key's {client.client_id!r}")
                    foreign.append(
                        RejectedEvent(
                            message.position,
                            RejectReason.FOREIGN_SITE,
                            f"batch[{message.position}].context.page.url",
                            f"{problem}, not to the write key's client",
                            message.event.payload,
                        )
                    )
                    continue
            kept.append(message)
        if not kept:
            raise OriginMismatch(
                "no message of the batch names a page of the write key's client "
                f"{client.client_id!r}"
            )
        rejected = sorted((*request.rejected, *foreign), key=lambda r: r.position)
        return kept, tuple(rejected)

    async def _attribute(self, envelope: Envelope) -> ClientConfig:
        """The one client every siteId of the request belongs to (the only source of the
        client: a sender never names it)."""
        clients: dict[str, ClientConfig] = {}
        for site_id in envelope.site_ids:
            client = await self._sites.resolve(site_id)
            if client is None:
                raise UnauthorizedDomain(f"domain {site_id!r} is not authorized for any client")
            clients[client.client_id] = client
        if len(clients) > 1:
            raise InvalidEvent("one request may only carry events of a single client")
        return next(iter(clients.values()))


async def _work(off_loop: bool, task: Callable[[], T]) -> T:
    """``task()``: inline, or in a worker process for a large body (``task`` pickles)."""
    if off_loop:
        return await run_in_worker(task)
    return task()


def _reasons(rejected: tuple[RejectedEvent, ...]) -> tuple[dict[str, object], ...]:
    """The first rejected events described for the sender."""
    return tuple(
        {"index": r.position, "reason": r.reason, "field": r.field, "message": r.message}
        for r in rejected[:MAX_REASONS_SHOWN]
    )
