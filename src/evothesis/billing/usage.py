"""Usage per client, site and day, summed from metering records (pure: no I/O).

The same batch's record for the same client, site and day is counted once, whichever file
it came from: a file written under the old layout (by claim day) and its rewrite under the
new one (by event day) must not bill a batch twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from evothesis.billing.period import Period
from evothesis.export.metering import MeteringRecord


@dataclass(frozen=True, slots=True)
class Usage:
    """Counts of one client, site or day; see docs/billing.md for the definitions."""

    accepted_events: int = 0
    stored_events: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
    bytes: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.accepted_events + other.accepted_events,
            self.stored_events + other.stored_events,
            dict(Counter(self.rejected) + Counter(other.rejected)),
            self.bytes + other.bytes,
        )

    @property
    def rejected_events(self) -> int:
        return sum(self.rejected.values())

    @classmethod
    def of(cls, record: MeteringRecord) -> Usage:
        return cls(record.accepted_events, record.stored_events, record.rejected, record.bytes)

    def as_dict(self) -> dict[str, object]:
        return {
            "accepted_events": self.accepted_events,
            "stored_events": self.stored_events,
            "rejected_events": self.rejected_events,
            "rejected": dict(sorted(self.rejected.items())),
            "bytes": self.bytes,
        }


@dataclass(frozen=True, slots=True)
class SiteDay:
    site_id: str
    day: date
    usage: Usage

    def as_dict(self) -> dict[str, object]:
        return {"site_id": self.site_id, "day": self.day.isoformat(), **self.usage.as_dict()}


@dataclass(frozen=True, slots=True)
class ClientUsage:
    """One client's totals and its rows per site and day (sorted by site, then day)."""

    client_id: str
    totals: Usage
    days: tuple[SiteDay, ...]

    @property
    def sites(self) -> list[str]:
        return sorted({row.site_id for row in self.days})

    def as_dict(self) -> dict[str, object]:
        return {
            "client_id": self.client_id,
            "totals": self.totals.as_dict(),
            "sites": self.sites,
            "days": [row.as_dict() for row in self.days],
        }


def select(
    records: Iterable[MeteringRecord], period: Period, client_id: str | None = None
) -> list[MeteringRecord]:
    """The records of ``period`` (and ``client_id``), each batch's share counted once."""
    unique: dict[tuple[int, str, str, date], MeteringRecord] = {}
    for record in records:
        if record.day in period and client_id in (None, record.client_id):
            unique.setdefault(
                (record.batch_id, record.client_id, record.site_id, record.day), record
            )
    return list(unique.values())


def aggregate(records: Iterable[MeteringRecord]) -> list[ClientUsage]:
    """Per client (sorted): totals, and one row per site and day with any usage."""
    cells: dict[str, dict[tuple[str, date], Usage]] = {}
    for record in records:
        rows = cells.setdefault(record.client_id, {})
        where = (record.site_id, record.day)
        rows[where] = rows.get(where, Usage()) + Usage.of(record)
    clients = []
    for client_id in sorted(cells):
        days = tuple(
            SiteDay(site, day, usage) for (site, day), usage in sorted(cells[client_id].items())
        )
        totals = sum((row.usage for row in days), Usage())
        clients.append(ClientUsage(client_id, totals, days))
    return clients


def grand_total(clients: Iterable[ClientUsage]) -> Usage:
    return sum((client.totals for client in clients), Usage())
