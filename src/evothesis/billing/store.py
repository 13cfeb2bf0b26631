"""What billing reads from PostgreSQL: site discoveries and the export ledger's batches."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from evothesis.billing.period import Period
from evothesis.billing.reconcile import LedgerBatch
from evothesis.storage.queries import query
from evothesis.storage.sessions import with_connection


@dataclass(frozen=True, slots=True)
class Discovery:
    """The first event of a site under a client (``EventStore.insert`` records it)."""

    client_id: str
    site_id: str
    first_seen: datetime
    recorded_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "client_id": self.client_id,
            "site_id": self.site_id,
            "first_seen": self.first_seen.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
        }


class BillingStore:
    """Read-only queries for billing; driver errors become ``StorageUnavailable``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def discoveries(
        self, client_id: str | None = None, period: Period | None = None
    ) -> list[Discovery]:
        """Sorted by client, then first seen; ``period`` limits them to sites first seen
        in it."""
        rows = await self._fetch(
            "billing_discoveries",
            client_id,
            period.start if period else None,
            period.end if period else None,
        )
        return [
            Discovery(r["client_id"], r["site_id"], r["first_seen"], r["recorded_at"]) for r in rows
        ]

    async def ledger_batches(self, batch_ids: Iterable[int], period: Period) -> list[LedgerBatch]:
        """The batches ``batch_ids`` and every batch exported with events in ``period``."""
        rows = await self._fetch(
            "billing_ledger_batches", sorted(set(batch_ids)), period.start, period.end
        )
        spans: dict[int, tuple[str, datetime, datetime]] = {}
        counts: dict[int, dict[str, int]] = {}
        for r in rows:
            spans[r["batch_id"]] = (r["state"], r["first_created_at"], r["last_created_at"])
            if r["client_id"] is not None:
                counts.setdefault(r["batch_id"], {})[r["client_id"]] = r["event_count"]
        return [LedgerBatch(b, *span, counts.get(b, {})) for b, span in spans.items()]

    async def _fetch(self, name: str, *args: object) -> list[asyncpg.Record]:
        return await with_connection(
            self._pool, lambda connection: connection.fetch(query(name), *args), what="billing"
        )
