"""Billing as one object, shared by the admin API and the CLI: usage of a period from the
metering files, reconciled with the ledger, with the period's site discoveries; and the
monthly invoice lines."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from evothesis.billing.invoice import InvoiceLine, invoice_lines
from evothesis.billing.period import Period, month_period
from evothesis.billing.reconcile import Reconciliation, days_to_read, reconcile
from evothesis.billing.source import FileProgress, read_days
from evothesis.billing.store import BillingStore, Discovery
from evothesis.billing.usage import ClientUsage, aggregate, grand_total, select
from evothesis.objects.store import Bucket


@dataclass(frozen=True, slots=True)
class UsageReport:
    period: Period
    client_id: str | None
    clients: list[ClientUsage]
    reconciliation: Reconciliation
    discoveries: list[Discovery]
    metering_files: int

    def as_dict(self) -> dict[str, Any]:
        """The body of ``GET /billing/usage`` (docs/billing.md)."""
        return {
            "from": self.period.first.isoformat(),
            "to": self.period.last.isoformat(),
            "client_id": self.client_id,
            "totals": grand_total(self.clients).as_dict(),
            "clients": [client.as_dict() for client in self.clients],
            "reconciliation": {
                **self.reconciliation.as_dict(),
                "metering_files": self.metering_files,
            },
            "discoveries": [discovery.as_dict() for discovery in self.discoveries],
        }


class Billing:
    def __init__(self, pool: asyncpg.Pool, backup: Bucket) -> None:
        self.store = BillingStore(pool)
        self._backup = backup

    async def usage(
        self,
        period: Period,
        client_id: str | None = None,
        *,
        progress: FileProgress | None = None,
    ) -> UsageReport:
        """Raises ``BackupUnreadable`` or ``StorageUnavailable``."""
        found = await read_days(self._backup, period.days(), progress=progress)
        ledger = await self.store.ledger_batches(
            (record.batch_id for record in found.records), period
        )
        # Batches straddling the period's edges: read their other days too, so that they
        # are compared whole (for reconciliation only; usage counts the period's days).
        read = set(period.days())
        more_days = days_to_read(period, ledger) - read
        files = found.files
        unreadable = dict(found.unreadable)
        if more_days:
            extra = await read_days(
                self._backup, more_days, batches={batch.batch_id for batch in ledger}
            )
            files = [*files, *extra.files]
            unreadable.update(extra.unreadable)
            read |= more_days
        records = [record for file in files for record in file.records]
        reconciliation = reconcile(
            period,
            records,
            [(file.batch_id, file.day) for file in files],
            ledger,
            days_read=read,
            client_id=client_id,
            unreadable=unreadable,
        )
        return UsageReport(
            period,
            client_id,
            aggregate(select(found.records, period, client_id)),
            reconciliation,
            await self.store.discoveries(client_id, period),
            len(found.files),
        )

    async def invoice(
        self,
        month: str,
        rate_per_1000: Decimal,
        client_id: str | None = None,
        *,
        progress: FileProgress | None = None,
    ) -> tuple[list[InvoiceLine], UsageReport]:
        """The month's (``YYYY-MM``) invoice lines and the usage report they were priced
        from; raises ``InvalidPeriod`` for a malformed month."""
        report = await self.usage(month_period(month), client_id, progress=progress)
        new_sites = Counter(discovery.client_id for discovery in report.discoveries)
        return invoice_lines(report.clients, month, rate_per_1000, new_sites), report
