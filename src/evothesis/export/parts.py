"""What crosses between the exporter and its worker processes: plain values, no libraries.

The exporter's process (which may be a collector's) decides what to render and uploads what
comes back; the worker processes parse and encode (``export.render``, with pyarrow). Keeping
these values apart from the code that makes them keeps pyarrow, delta-rs and pyiceberg out
of every process that only orchestrates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from evothesis.export.deliveries import Delivery


@dataclass(frozen=True, slots=True)
class BadLine:
    """A raw line no client file can carry, with why and, as far as the line says, whose it
    is. ``reason`` names columns and kinds of problem, never a value: it is stored and
    exported with failed events."""

    number: int
    reason: str
    line: bytes
    client_id: str | None = None
    site_id: str | None = None
    event_id: str | None = None
    visitor_id: str | None = None
    session_id: str | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class RenderedFile:
    """One file of a delivery (its day's) and its sidecar manifest, as uploaded; for a table
    format, the day's rows to append (Arrow IPC) and no manifest (the table's commit carries
    the delivery's id and numbers)."""

    day: date
    data: bytes
    manifest: bytes
    events: int


@dataclass(frozen=True, slots=True)
class Want:
    """What one delivery needs of a raw object: its whole file in ``fmt`` (a delivery of
    this object's share alone), or the client's events as canonical lines."""

    delivery: Delivery
    fmt: str
    whole: bool


@dataclass(frozen=True, slots=True)
class ObjectParts:
    """A raw object's answer to its wants, in their order: a file or lines each; and the
    lines no client file can carry."""

    parts: list[RenderedFile | bytes]
    bad: list[BadLine] = field(default_factory=list)
