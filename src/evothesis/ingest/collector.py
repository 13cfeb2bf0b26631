"""The /collect use case: parse, attribute, fold through the steps, hand to the buffer.

Kept free of HTTP so the same flow serves the API, tests and future transports. The work
between attribution and the buffer is ``ingest.steps``; this module does the I/O around it
(registry lookups, the write buffer) and counts every outcome by its reason.

Parsing and ``accept`` (PII redaction, rows) cost per byte, about 0.5 µs a byte and up to
1.5 µs for text built to exercise every PII rule: a 1 MiB body held the event loop for
half a second or more, and every other request of the process waited. Bodies over
``OFF_LOOP_BODY_BYTES`` therefore parse and ``accept`` in a worker process
(``objects.cpu``): threads would not help, because this is Python holding the GIL, and a
loop thread competing for it waited tens of milliseconds at a time. Below the threshold
(single events, the tracker's batches) the work stays inline, where it costs less than a
trip to another process would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Final

from evothesis.domain import ClientConfig, DropReason, Envelope, RequestContext
from evothesis.enrich.limits import EventLimits
from evothesis.errors import InvalidEvent, Refused, UnauthorizedDomain
from evothesis.ingest.attribution import SiteDirectory
from evothesis.ingest.enrichment import Enricher
from evothesis.ingest.envelope import parse_envelope
from evothesis.ingest.outcomes import Outcomes
from evothesis.ingest.steps import Dropped, Intake, accept, steps
from evothesis.objects.cpu import run_in_worker
from evothesis.registry.domains import site_host
from evothesis.storage.write_buffer import WriteBuffer

__all__ = ["MAX_REASONS_SHOWN", "OFF_LOOP_BODY_BYTES", "CollectResult", "Collector"]

#: Rejected inner events described in a response; the count covers them all.
MAX_REASONS_SHOWN = 10

#: Larger bodies are parsed and accepted in a worker process. At the dearest rate measured
#: (1.5 µs a byte) 16 KiB holds the loop 25 ms; the hot path's bodies are a tenth of it.
OFF_LOOP_BODY_BYTES: Final = 16 * 1024


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
        if off_loop:
            envelope = await run_in_worker(
                partial(
                    parse_envelope,
                    body,
                    max_batch_events=self._max_batch_events,
                    now=context.received_at,
                    limits=self._limits,
                )
            )
        else:
            envelope = parse_envelope(
                body,
                max_batch_events=self._max_batch_events,
                now=context.received_at,
                limits=self._limits,
            )
        try:
            client = await self._attribute(envelope)
            intake = Intake(envelope, context, client, page_owner)
            for step in self._steps:
                outcome = step(intake)
                if isinstance(outcome, Dropped):
                    self.outcomes.dropped[outcome.reason] += outcome.events
                    return CollectResult(
                        0,
                        client.client_id,
                        context.received_at,
                        events_dropped=outcome.events,
                        dropped_because=outcome.reason,
                    )
                intake = outcome
        except Refused as exc:
            self.outcomes.refused[exc.refusal] += 1
            raise
        assert intake.privacy is not None
        if intake.privacy.anonymize:
            self.outcomes.anonymized += len(envelope.events)
        if off_loop:
            accepted = await run_in_worker(accept, self._event_columns, intake)
        else:
            accepted = accept(self._event_columns, intake)
        for rejected in envelope.rejected:
            self.outcomes.rejected[rejected.reason] += 1
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
            rejected_reasons=tuple(
                {"index": r.position, "reason": r.reason, "field": r.field, "message": r.message}
                for r in envelope.rejected[:MAX_REASONS_SHOWN]
            ),
            duplicates=accepted.duplicates,
            event_id=None if envelope.is_batch else envelope.events[0].event_id,
        )

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
