"""Invoice lines: a client's accepted events of a month at a rate per 1,000 events
(pure: no I/O).

Money is ``Decimal`` throughout, never float. The amount is computed from the exact event
count and rounded once, to cents, half up (ROUND_HALF_UP: 0.005 -> 0.01), which is how an
operator checks it by hand; per-site amounts are not rounded and summed, so a client's line
never drifts by a cent from its total.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from evothesis.billing.usage import ClientUsage

#: The rate is per this many accepted events.
RATE_UNIT = 1000
CENT = Decimal("0.01")

CSV_COLUMNS = (
    "client_id",
    "month",
    "accepted_events",
    "rate_per_1000",
    "amount_usd",
    "sites",
    "new_sites",
)


def amount(accepted_events: int, rate_per_1000: Decimal) -> Decimal:
    """What ``accepted_events`` cost at ``rate_per_1000`` dollars per 1,000, in cents."""
    return (Decimal(accepted_events) * rate_per_1000 / RATE_UNIT).quantize(CENT, ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One client's month: what is billed, and the counts shown next to it."""

    client_id: str
    month: str
    accepted_events: int
    stored_events: int
    rejected_events: int
    bytes: int
    rate_per_1000: Decimal
    amount_usd: Decimal
    sites: int
    new_sites: int

    def as_dict(self) -> dict[str, object]:
        """A line as ``GET /billing/invoice`` shows it; money as decimal strings."""
        return {
            "client_id": self.client_id,
            "month": self.month,
            "accepted_events": self.accepted_events,
            "stored_events": self.stored_events,
            "rejected_events": self.rejected_events,
            "bytes": self.bytes,
            "rate_per_1000": str(self.rate_per_1000),
            "amount_usd": f"{self.amount_usd:.2f}",
            "sites": self.sites,
            "new_sites": self.new_sites,
        }

    def csv_row(self) -> list[str]:
        return [
            self.client_id,
            self.month,
            str(self.accepted_events),
            str(self.rate_per_1000),
            f"{self.amount_usd:.2f}",
            str(self.sites),
            str(self.new_sites),
        ]


def invoice_lines(
    clients: Iterable[ClientUsage],
    month: str,
    rate_per_1000: Decimal,
    new_sites: Mapping[str, int],
) -> list[InvoiceLine]:
    """One line per client with usage or a new site in the month, sorted by client."""
    usage = {client.client_id: client for client in clients}
    lines = []
    for client_id in sorted(usage.keys() | new_sites.keys()):
        client = usage.get(client_id)
        totals = client.totals if client else None
        accepted = totals.accepted_events if totals else 0
        lines.append(
            InvoiceLine(
                client_id=client_id,
                month=month,
                accepted_events=accepted,
                stored_events=totals.stored_events if totals else 0,
                rejected_events=totals.rejected_events if totals else 0,
                bytes=totals.bytes if totals else 0,
                rate_per_1000=rate_per_1000,
                amount_usd=amount(accepted, rate_per_1000),
                sites=len(client.sites) if client else 0,
                new_sites=new_sites.get(client_id, 0),
            )
        )
    return lines


def invoice_csv(lines: Iterable[InvoiceLine]) -> str:
    """The CSV invoice: a header, then one line per client."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(line.csv_row() for line in lines)
    return out.getvalue()


TABLE_COLUMNS = (
    "client",
    "sites",
    "new_sites",
    "accepted",
    "stored",
    "rejected",
    "bytes",
    "amount_usd",
)


def table_rows(lines: Sequence[InvoiceLine]) -> list[list[str]]:
    """The report's rows under ``TABLE_COLUMNS``, one per client and a TOTAL row."""
    rows = [
        [
            line.client_id,
            str(line.sites),
            str(line.new_sites),
            str(line.accepted_events),
            str(line.stored_events),
            str(line.rejected_events),
            str(line.bytes),
            f"{line.amount_usd:.2f}",
        ]
        for line in lines
    ]
    total = sum((line.amount_usd for line in lines), Decimal(0))
    rows.append(
        [
            "TOTAL",
            str(sum(line.sites for line in lines)),
            str(sum(line.new_sites for line in lines)),
            str(sum(line.accepted_events for line in lines)),
            str(sum(line.stored_events for line in lines)),
            str(sum(line.rejected_events for line in lines)),
            str(sum(line.bytes for line in lines)),
            f"{total:.2f}",
        ]
    )
    return rows
