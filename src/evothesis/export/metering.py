"""Metering records: events and bytes per client, site and day, the source of usage billing.

One file per raw batch and event day in the backup bucket, so a report for a date range
reads exactly the files of those days. A batch's records are a pure function of its events,
so a retried batch rewrites the same files and billing never counts an event twice.

Definitions (docs/billing.md): *stored* events are all rows, *accepted* events are the rows
that are not a batch request's envelope (what clients sent and were billed for), *rejected*
events are the inner events that failed validation, counted by reason, and *bytes* are the
sizes of the events' raw JSON lines (newline included).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

import orjson


@dataclass(frozen=True, slots=True)
class MeteredEvent:
    """What billing needs of exported events: their owner, day, size and kind; ``count``
    events of the same kind at once (``size`` is then their total)."""

    client_id: str
    site_id: str
    day: date
    size: int
    envelope: bool = False
    count: int = 1


@dataclass(frozen=True, slots=True)
class MeteredFailure:
    """What billing needs of one rejected inner event."""

    client_id: str
    site_id: str
    day: date
    reason: str


@dataclass(frozen=True, slots=True)
class MeteringRecord:
    """One line of a metering file: one batch's totals for one client, site and day."""

    batch_id: int
    client_id: str
    site_id: str
    day: date
    accepted_events: int
    stored_events: int
    rejected: Mapping[str, int] = field(default_factory=dict)
    bytes: int = 0

    def as_dict(self) -> dict[str, object]:
        """The file's field order; ``events`` (= stored) is kept for older readers."""
        return {
            "batch_id": self.batch_id,
            "client_id": self.client_id,
            "site_id": self.site_id,
            "day": self.day.isoformat(),
            "events": self.stored_events,
            "accepted_events": self.accepted_events,
            "stored_events": self.stored_events,
            "rejected": dict(sorted(self.rejected.items())),
            "bytes": self.bytes,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, object]) -> MeteringRecord:
        """Also reads records written before accepted/stored/rejected existed: those
        counted every stored row as ``events`` and had no rejected counts."""
        events = _int(record, "events", 0)
        rejected = record.get("rejected") or {}
        if not isinstance(rejected, dict):
            raise ValueError(f"metering record: rejected is not an object: {rejected!r}")
        return cls(
            batch_id=_int(record, "batch_id"),
            client_id=str(record["client_id"]),
            site_id=str(record["site_id"]),
            day=date.fromisoformat(str(record["day"])),
            accepted_events=_int(record, "accepted_events", events),
            stored_events=_int(record, "stored_events", events),
            rejected={str(reason): int(count) for reason, count in rejected.items()},
            bytes=_int(record, "bytes", 0),
        )


def _int(record: Mapping[str, object], name: str, default: int | None = None) -> int:
    value = record.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"metering record: {name} is not an integer: {value!r}")
    return value


@dataclass(slots=True)
class _Totals:
    accepted: int = 0
    stored: int = 0
    size: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def meter(
    batch_id: int, events: Iterable[MeteredEvent], failures: Iterable[MeteredFailure] = ()
) -> dict[date, list[MeteringRecord]]:
    """Records per event day, each day's sorted by (client, site) so that a file is
    identical on retry."""
    totals: dict[tuple[date, str, str], _Totals] = defaultdict(_Totals)
    for event in events:
        entry = totals[(event.day, event.client_id, event.site_id)]
        entry.stored += event.count
        entry.accepted += 0 if event.envelope else event.count
        entry.size += event.size
    for failure in failures:
        totals[(failure.day, failure.client_id, failure.site_id)].rejected[failure.reason] += 1
    days: dict[date, list[MeteringRecord]] = defaultdict(list)
    for (day, client, site), entry in sorted(totals.items()):
        days[day].append(
            MeteringRecord(
                batch_id,
                client,
                site,
                day,
                entry.accepted,
                entry.stored,
                entry.rejected,
                entry.size,
            )
        )
    return dict(days)


def encode_metering(records: Iterable[MeteringRecord]) -> bytes:
    return b"".join(orjson.dumps(record.as_dict()) + b"\n" for record in records)


def decode_metering(data: bytes) -> list[MeteringRecord]:
    """A metering file back into records; raises ``ValueError`` on a damaged file."""
    try:
        return [MeteringRecord.from_dict(orjson.loads(line)) for line in data.splitlines()]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"metering file is not valid JSON Lines records: {exc}") from exc
