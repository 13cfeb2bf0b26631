"""Metering records: events and bytes per client, site and day, the source of usage billing.

One file per raw batch in the backup bucket; a batch's records are a pure function of its
events, so a retried batch rewrites the same file and billing never counts an event twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import orjson


@dataclass(frozen=True, slots=True)
class MeteredEvent:
    """What billing needs of one exported event: its owner, its day, its size."""

    client_id: str
    site_id: str
    day: date
    size: int


def meter(batch_id: int, events: Iterable[MeteredEvent]) -> list[dict[str, object]]:
    """Totals per (client, site, day), sorted so that the file is identical on retry."""
    totals: dict[tuple[str, str, date], list[int]] = defaultdict(lambda: [0, 0])
    for event in events:
        entry = totals[(event.client_id, event.site_id, event.day)]
        entry[0] += 1
        entry[1] += event.size
    return [
        {
            "batch_id": batch_id,
            "client_id": client,
            "site_id": site,
            "day": day.isoformat(),
            "events": count,
            "bytes": size,
        }
        for (client, site, day), (count, size) in sorted(totals.items())
    ]


def encode_metering(records: Iterable[dict[str, object]]) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)
