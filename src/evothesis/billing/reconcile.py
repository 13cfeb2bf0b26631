"""Reconciliation of metering with the export ledger (pure: no I/O).

The ledger in PostgreSQL records, per exported batch, how many events each client had
(``export_deliveries.event_count``); the metering files in the backup bucket must say the
same, counted as stored events. Two checks:

* every batch whose metering was read, and whose event days were all read, has the same
  stored events per client in metering as in the ledger (a batch metered but not recorded as
  exported counts as a mismatch against zero: it was written by an exporter that died
  before recording it, and is settled by its retry);
* every batch the ledger has exported with its first or last event on a day of the period
  has a metering file for that day (those two days certainly hold its events).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from evothesis.billing.period import Period
from evothesis.export.metering import MeteringRecord


@dataclass(frozen=True, slots=True)
class LedgerBatch:
    """One batch as the ledger has it: state, event day span, events per client."""

    batch_id: int
    state: str
    first_created_at: datetime
    last_created_at: datetime
    client_events: Mapping[str, int] = field(default_factory=dict)

    @property
    def first_day(self) -> date:
        return self.first_created_at.astimezone(UTC).date()

    @property
    def last_day(self) -> date:
        return self.last_created_at.astimezone(UTC).date()

    def days(self) -> Period:
        return Period(self.first_day, self.last_day)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    batches_checked: int
    mismatches: list[dict[str, object]]
    missing_files: list[dict[str, object]]
    unreadable_files: list[dict[str, object]]

    @property
    def reconciled(self) -> bool:
        return not (self.mismatches or self.missing_files or self.unreadable_files)

    def as_dict(self) -> dict[str, object]:
        return {
            "reconciled": self.reconciled,
            "batches_checked": self.batches_checked,
            "mismatches": self.mismatches,
            "missing_files": self.missing_files,
            "unreadable_files": self.unreadable_files,
        }


def days_to_read(period: Period, ledger: Iterable[LedgerBatch]) -> set[date]:
    """The period's days plus every event day of the ledger's batches, so that a batch
    straddling the period's edge is compared whole rather than half."""
    days = set(period.days())
    for batch in ledger:
        days.update(batch.days().days())
    return days


def reconcile(
    period: Period,
    records: Iterable[MeteringRecord],
    files: Iterable[tuple[int, date]],
    ledger: Iterable[LedgerBatch],
    *,
    days_read: set[date],
    client_id: str | None = None,
    unreadable: Mapping[str, str] | None = None,
) -> Reconciliation:
    """Compare metering (``records`` from the files ``files`` = (batch, day) of
    ``days_read``) with ``ledger``; ``client_id`` limits the check to one client.
    ``unreadable`` (key -> error) are files that could not be decoded: never reconciled."""
    batches = {batch.batch_id: batch for batch in ledger}
    metered: Counter[tuple[int, str]] = Counter()
    seen: set[tuple[int, str, str, date]] = set()
    for record in records:
        identity = (record.batch_id, record.client_id, record.site_id, record.day)
        if identity not in seen and client_id in (None, record.client_id):
            seen.add(identity)
            metered[(record.batch_id, record.client_id)] += record.stored_events

    mismatches: list[dict[str, object]] = []
    checked = 0
    for batch_id in sorted({b for b, _ in metered} | batches.keys()):
        batch = batches.get(batch_id)
        if batch is not None and not set(batch.days().days()) <= days_read:
            continue  # not every file of it was read: not comparable
        checked += 1
        ledger_events = {
            client: events
            for client, events in (batch.client_events if batch else {}).items()
            if client_id in (None, client)
        }
        for client in sorted({c for b, c in metered if b == batch_id} | ledger_events.keys()):
            counted = metered.get((batch_id, client), 0)
            expected = ledger_events.get(client, 0)
            if counted != expected:
                mismatches.append(
                    {
                        "batch_id": batch_id,
                        "client_id": client,
                        "metering_events": counted,
                        "ledger_events": expected,
                        "ledger_state": batch.state if batch else None,
                    }
                )

    found = set(files)
    missing: list[dict[str, object]] = [
        {"batch_id": batch.batch_id, "day": day.isoformat()}
        for batch in sorted(batches.values(), key=lambda b: b.batch_id)
        if batch.state == "exported" and (client_id is None or client_id in batch.client_events)
        for day in sorted({batch.first_day, batch.last_day})
        if day in period and (batch.batch_id, day) not in found
    ]
    damaged: list[dict[str, object]] = [
        {"key": key, "error": error} for key, error in sorted((unreadable or {}).items())
    ]
    return Reconciliation(checked, mismatches, missing, damaged)
