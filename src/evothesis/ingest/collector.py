"""The /collect use case: parse, attribute, build rows, hand to the buffer.

Kept free of HTTP so the same flow serves the API, tests and future transports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson

from evothesis.clock import Clock
from evothesis.domain import ClientConfig, Envelope, EventRow, RequestContext
from evothesis.errors import InvalidEvent, UnauthorizedDomain
from evothesis.ingest.attribution import SiteDirectory
from evothesis.ingest.envelope import parse_envelope
from evothesis.storage.write_buffer import WriteBuffer


@dataclass(frozen=True, slots=True)
class CollectResult:
    """What the response reports: how many events were stored, for whom, when."""

    events_processed: int
    client_id: str
    received_at: datetime


class Collector:
    def __init__(
        self, *, sites: SiteDirectory, buffer: WriteBuffer, clock: Clock, max_batch_events: int
    ) -> None:
        self._sites = sites
        self._buffer = buffer
        self._clock = clock
        self._max_batch_events = max_batch_events

    async def collect(self, body: bytes, context: RequestContext) -> CollectResult:
        """Store every event of one request durably, or raise an ``EvothesisError``."""
        envelope = parse_envelope(
            body, max_batch_events=self._max_batch_events, now=context.received_at
        )
        client = await self._attribute(envelope)
        note = (
            f"Processing batch with {envelope.inner_count} individual events "
            f"for client {client.client_id}"
            if envelope.is_batch
            else None
        )
        rows = build_rows(envelope, client, context)
        await self._buffer.write(rows, note)
        return CollectResult(len(rows), client.client_id, context.received_at)

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


def build_rows(envelope: Envelope, client: ClientConfig, context: RequestContext) -> list[EventRow]:
    """Turn parsed events into ``events_log`` rows; the client comes from attribution only."""
    rows = []
    client_id = client.client_id
    ip, user_agent, received_at = context.client_ip, context.user_agent, context.received_at
    for event in envelope.events:
        try:
            raw = orjson.dumps(event.payload).decode()
        except orjson.JSONEncodeError as exc:
            raise InvalidEvent(f"event cannot be stored as JSON: {exc}") from None
        # Positional on purpose: this runs once per event on the hot path.
        rows.append(
            EventRow(
                event.event_id,
                event.event_type,
                event.session_id,
                event.visitor_id,
                event.site_id,
                client_id,
                event.timestamp,
                event.url,
                event.path,
                event.referrer,
                ip,
                user_agent,
                raw,
                received_at,
            )
        )
    return rows
