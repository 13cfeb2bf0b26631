"""The /collect use case: parse, authorize, apply privacy, build rows, hand to the buffer.

Kept free of HTTP so the same flow serves the API, tests and future transports.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import orjson

from evothesis.domain import (
    AuditRecord,
    ClientConfig,
    Envelope,
    EventRow,
    FailedEvent,
    RequestContext,
)
from evothesis.enrich.limits import EventLimits
from evothesis.errors import (
    EvothesisError,
    InvalidEvent,
    InvalidWriteKey,
    OriginMismatch,
    UnauthorizedDomain,
    WriteKeyRequired,
)
from evothesis.ingest.attribution import SiteDirectory, site_host
from evothesis.ingest.enrichment import Enricher, RequestEnrichment
from evothesis.ingest.envelope import parse_envelope
from evothesis.ingest.privacy import (
    RequestPrivacy,
    audit_ip_hash,
    protect_envelope,
    protect_rejected,
    request_privacy,
)
from evothesis.privacy import ConsentDecision
from evothesis.privacy.redact import NestingTooDeep
from evothesis.registry.secrets import write_key_matches
from evothesis.storage.write_buffer import WriteBuffer

#: Names this process in audit records: which collector accepted a batch.
COLLECTOR_NAME = f"{socket.gethostname()}:{os.getpid()}"

#: Rejected inner events described in a response; the count covers them all.
MAX_REASONS_SHOWN = 10

#: Stored instead of a rejected event's payload that nests too deep to be redacted.
UNSTORABLE_PAYLOAD = '"[payload nested too deep to be stored]"'


@dataclass(frozen=True, slots=True)
class CollectResult:
    """What the response reports: how many events were stored or dropped, for whom, when."""

    events_processed: int
    client_id: str
    received_at: datetime
    events_dropped: int = 0
    #: Why ``events_dropped`` were not stored: ``privacy`` or ``bot``.
    dropped_because: str = "privacy"
    #: Durable on local disk, not yet in PostgreSQL (answered 202).
    spooled: bool = False
    #: Inner events that failed validation (stored in ``failed_events``), and the first
    #: ``MAX_REASONS_SHOWN`` of them described for the sender.
    events_rejected: int = 0
    rejected_reasons: tuple[dict[str, object], ...] = ()


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
        self._enricher = enricher
        self._limits = limits
        #: Refusals, drops and rejections by reason, for /health and /metrics: nothing is
        #: refused, dropped or rejected silently.
        self.outcomes: Counter[str] = Counter()

    async def collect(self, body: bytes, context: RequestContext) -> CollectResult:
        """Store every event of one request durably, or raise an ``EvothesisError``."""
        envelope = parse_envelope(
            body,
            max_batch_events=self._max_batch_events,
            now=context.received_at,
            limits=self._limits,
        )
        try:
            client = await self._attribute(envelope)
            await self._authorize_sender(client, context)
        except (UnauthorizedDomain, WriteKeyRequired) as exc:
            self.outcomes[exc.code] += 1
            raise
        privacy = request_privacy(client, context, envelope.events[0].payload.get("consent"))
        if privacy.decision is ConsentDecision.DROP:
            signalled = (context.dnt or context.gpc) and (
                client.honour_dnt or client.privacy_level != "standard"
            )
            reason = "dropped_do_not_track" if signalled else "dropped_no_consent"
            self.outcomes[reason] += len(envelope.events)
            return CollectResult(
                0, client.client_id, context.received_at, events_dropped=len(envelope.events)
            )
        enrichment = self._enricher.request(client, context, anonymize=privacy.anonymize)
        bot_kind = enrichment.user_agent.bot_kind
        if bot_kind is not None and client.bot_policy == "drop":
            dropped = len(envelope.events) + len(envelope.rejected)
            self.outcomes[f"dropped_bot_{bot_kind}"] += dropped
            return CollectResult(
                0,
                client.client_id,
                context.received_at,
                events_dropped=dropped,
                dropped_because="bot",
            )
        if privacy.anonymize:
            self.outcomes["anonymized"] += len(envelope.events)
        rows = build_rows(envelope, client, context, privacy, self._enricher, enrichment)
        failed = failed_rows(envelope, client, context, privacy)
        for rejected in envelope.rejected:
            self.outcomes[f"rejected_{rejected.reason}"] += 1
        note = (
            f"Processing batch with {envelope.inner_count} individual events "
            f"for client {client.client_id}"
            if envelope.is_batch
            else None
        )
        audit = (
            audit_record(envelope, client, context, rows)
            if client.privacy_level == "hipaa"
            else None
        )
        spooled = await self._buffer.write(rows, note, audit, failed)
        return CollectResult(
            len(rows),
            client.client_id,
            context.received_at,
            spooled=spooled,
            events_rejected=len(failed),
            rejected_reasons=tuple(
                {"index": r.position, "reason": r.reason, "field": r.field, "message": r.message}
                for r in envelope.rejected[:MAX_REASONS_SHOWN]
            ),
        )

    async def page_client(self, page: str | None) -> ClientConfig | None:
        """The client owning the page an Origin or Referer names; ``None`` when nobody's."""
        if page is None or site_host(page) is None:
            return None
        try:
            return await self._sites.resolve(page)
        except EvothesisError:
            return None

    async def _attribute(self, envelope: Envelope) -> ClientConfig:
        clients: dict[str, ClientConfig] = {}
        for site_id in envelope.site_ids:
            client = await self._sites.resolve(site_id)
            if client is None:
                raise UnauthorizedDomain(f"domain {site_id!r} is not authorized for any client")
            clients[client.client_id] = client
        if len(clients) > 1:
            raise InvalidEvent("one request may only carry events of a single client")
        return next(iter(clients.values()))

    async def _authorize_sender(self, client: ClientConfig, context: RequestContext) -> None:
        """Browsers prove their page with Origin (or Referer); servers with a write key.

        The page must belong to the same client as the siteId, so one client's site cannot
        inject events into another client's data. A present but opaque Origin (``null``,
        from sandboxed frames and file pages) names no page and is refused.
        """
        page = context.origin if context.origin is not None else context.referer
        if page is not None:
            owner = await self._sites.resolve(page) if site_host(page) else None
            if owner is None or owner.client_id != client.client_id:
                shown = site_host(page) or page[:100]
                raise OriginMismatch(
                    f"page {shown!r} does not belong to client {client.client_id!r}, "
                    "which owns the events' siteId"
                )
            return
        if context.write_key is None:
            raise WriteKeyRequired()
        if not write_key_matches(context.write_key, client.write_key_sha256):
            raise InvalidWriteKey()


def build_rows(
    envelope: Envelope,
    client: ClientConfig,
    context: RequestContext,
    privacy: RequestPrivacy,
    enricher: Enricher,
    enrichment: RequestEnrichment,
) -> list[EventRow]:
    """Turn parsed events into protected, enriched ``events_log`` rows.

    The client comes from attribution only; every text column is read back from the
    redacted payload so columns and ``raw_event_data`` can never disagree, and the
    referrer class and UTM columns are derived from that same redacted payload.
    """
    rows = []
    client_id = client.client_id
    ip, user_agent, received_at = privacy.stored_ip, context.user_agent, context.received_at
    per_request = enrichment.columns
    events = envelope.events
    try:
        payloads = protect_envelope(envelope, privacy)
    except NestingTooDeep as exc:
        raise InvalidEvent(f"event cannot be stored: {exc}") from None
    for event, payload in zip(events, payloads, strict=True):
        try:
            raw = orjson.dumps(payload).decode()
        except orjson.JSONEncodeError as exc:
            raise InvalidEvent(f"event cannot be stored: {exc}") from None
        get = payload.get
        # Positional on purpose: this runs once per event on the hot path.
        rows.append(
            EventRow(
                event.event_id,
                get("eventType", event.event_type),
                get("sessionId"),
                get("visitorId"),
                event.site_id,
                client_id,
                event.timestamp,
                get("url"),
                get("path"),
                get("referrer"),
                ip,
                user_agent,
                raw,
                received_at,
                *per_request,
                *enricher.event(payload, site_host(event.site_id) or event.site_id),
            )
        )
    return rows


def failed_rows(
    envelope: Envelope, client: ClientConfig, context: RequestContext, privacy: RequestPrivacy
) -> list[FailedEvent]:
    """The batch's rejected inner events as ``failed_events`` rows, redacted like events.

    A payload rejected for a NUL character keeps it out of JSONB (which cannot hold it) by
    replacing its escape with U+FFFD; one nested too deep to redact is not stored at all.
    """
    if not envelope.rejected:
        return []
    outer = envelope.events[0]
    failed = []
    for rejected in envelope.rejected:
        try:
            payload = orjson.dumps(protect_rejected(rejected.raw, privacy)).decode()
        except (NestingTooDeep, orjson.JSONEncodeError):
            payload = UNSTORABLE_PAYLOAD
        failed.append(
            FailedEvent(
                outer.event_id,
                rejected.position,
                client.client_id,
                outer.site_id,
                rejected.reason,
                rejected.field,
                rejected.message,
                payload.replace("\\u0000", "\\ufffd"),
                context.received_at,
            )
        )
    return failed


def audit_record(
    envelope: Envelope, client: ClientConfig, context: RequestContext, rows: list[EventRow]
) -> AuditRecord:
    """The hipaa trail of one accepted batch (its site, visitor, size, hashed sender IP)."""
    first = rows[0]
    return AuditRecord(
        recorded_at=context.received_at,
        client_id=client.client_id,
        site_id=first.site_id,
        visitor_id=first.visitor_id,
        events=len(rows),
        ip_hash=audit_ip_hash(client, context.client_ip),
        origin=site_host(context.origin) if context.origin else None,
        collector=COLLECTOR_NAME,
        request_id=first.event_id,
    )
