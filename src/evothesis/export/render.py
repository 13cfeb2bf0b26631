"""Rendering deliveries from raw objects: pure functions over bytes, run in the export's
worker processes (only bytes travel back).

A delivery of one share is rendered from its raw object in one step, together with every
other such delivery of the object (one parse for all its clients). A delivery of several
shares is rendered in two: each raw object gives the client's events as canonical JSON Lines
(``split_object``), which are gathered per claim day and rendered into the day's file once
all its objects are read (``render_day``; ``render_spooled_day`` when the processor
gathered them in a file). Either way the file is a pure function of the
delivery, its format and the raw objects' bytes. For a table format (delta, iceberg) the
"file" is the day's rows as Arrow IPC, which the processor appends to the client's table.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, Final

import msgspec
import orjson

from evothesis.domain import JSON_FORMATS, TABLE_FORMATS
from evothesis.export.deliveries import Delivery
from evothesis.export.formats import (
    ClientEvents,
    RawEvent,
    encode_events,
    event_columns,
    export_metadata,
    parse_raw_lines,
    split_by_client,
    typed_columns,
)
from evothesis.export.parts import ObjectParts, RenderedFile, Want
from evothesis.export.tables.schema import rows_to_ipc, table_rows

__all__ = [
    "render_day",
    "render_spooled_day",
    "split_object",
]

#: Canonical lines: the typed events written back as JSON Lines, which ``parse_raw_lines``
#: reads into the same events (``raw_event_data`` is already compact).
_LINES: Final = msgspec.json.Encoder()


def split_object(raw: bytes, wants: Sequence[Want]) -> ObjectParts:
    """Parse a gzip raw object once and answer every want from it."""
    parsed = parse_raw_lines(gzip.decompress(raw))
    columns = any(want.whole and want.fmt not in JSON_FORMATS for want in wants)
    events = split_by_client(parsed.events, columns=columns)
    nothing = ClientEvents([], None)
    parts: list[RenderedFile | bytes] = []
    for want in wants:
        mine = events.get(want.delivery.client_id, nothing)
        if want.whole:
            (share,) = want.delivery.shares
            parts.append(_render(want.delivery, share.day, want.fmt, mine))
        else:
            parts.append(_LINES.encode_lines(mine.events))
    return ObjectParts(parts, parsed.bad)


def render_day(lines: bytes, delivery: Delivery, day: date, fmt: str) -> RenderedFile:
    """A delivery's file of one day from the canonical lines of its shares of that day, in
    batch order."""
    parsed = parse_raw_lines(lines)
    if parsed.bad:  # canonical lines always parse; anything else is a bug to hear about
        raise ValueError(f"canonical lines did not parse: {parsed.bad[0].reason}")
    return _render(delivery, day, fmt, ClientEvents(parsed.events, None))


def render_spooled_day(path: str | None, delivery: Delivery, day: date, fmt: str) -> RenderedFile:
    """``render_day`` of the canonical lines the processor gathered in a file (``None``:
    the delivery has no event that day), read here in the worker process: the lines of a
    large delivery never travel through the processor's memory."""
    lines = b"" if path is None else Path(path).read_bytes()
    return render_day(lines, delivery, day, fmt)


def _render(delivery: Delivery, day: date, fmt: str, events: ClientEvents) -> RenderedFile:
    """The file and its manifest; the export time is the delivery's cut time, so that the
    same delivery always gives the same bytes."""
    if fmt in TABLE_FORMATS:
        columns = events.columns if events.columns is not None else event_columns(events.events)
        rows = rows_to_ipc(table_rows(typed_columns(columns)))
        return RenderedFile(day, rows, b"", len(events.events))
    metadata = manifest_metadata(delivery, day, fmt, events.events)
    data = encode_events(events, fmt, metadata=metadata)
    manifest = orjson.dumps({"export_metadata": metadata}, option=orjson.OPT_INDENT_2)
    return RenderedFile(day, data, manifest, len(events.events))


def manifest_metadata(
    delivery: Delivery, day: date, fmt: str, events: Sequence[RawEvent]
) -> dict[str, Any]:
    """The seed's export metadata with what locates the file among the client's
    deliveries: its number, why it was cut, its day and batches (``batch_id`` is the one
    batch of a real-time delivery, ``null`` for several)."""
    batch_ids = [share.batch_id for share in delivery.shares_of(day)]
    return {
        **export_metadata(
            export_id=delivery.export_id(day),
            export_time=delivery.cut_at.isoformat(),
            events=events,
            fmt=fmt,
            batch_id=batch_ids[0] if len(batch_ids) == 1 else None,
            client_id=delivery.client_id,
        ),
        "delivery": delivery.seq,
        "trigger": str(delivery.trigger),
        "day": day.isoformat(),
        "batch_ids": batch_ids,
    }
