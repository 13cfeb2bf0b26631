"""Finding one visitor's events in a raw object and removing them, leaving every other line
exactly as it was.

Pure functions over bytes, run in the export worker processes: a raw object can hold tens of
thousands of lines, and only the few that mention the visitor are parsed.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import orjson

from evothesis.errors import RawFormatError
from evothesis.export.raw import gzip_object


@dataclass(frozen=True, slots=True)
class VisitorLines:
    """A raw object's lines split into the visitor's and everyone else's."""

    #: The visitor's lines as they were stored (no newline).
    matched: list[bytes]
    #: The other lines, unchanged and newline-terminated: the object without the visitor.
    kept: bytes


@dataclass(frozen=True, slots=True)
class FoundEvent:
    """One of the visitor's events, with what orders an export file."""

    created_at: str
    id: int
    line: bytes


def _needle(visitor_id: str) -> bytes | None:
    """The visitor id as it appears inside a JSON line, when that spelling is certain.

    PostgreSQL and orjson escape quotes, backslashes and control characters differently
    in places; for ids made of other printable ASCII both write the id verbatim, so an
    object (or line) without it cannot hold the visitor. Other ids are checked line by line.
    """
    if visitor_id.isascii() and visitor_id.isprintable() and not set(visitor_id) & {'"', "\\"}:
        return b'"' + visitor_id.encode() + b'"'
    return None


def split_visitor(data: bytes, client_id: str, visitor_id: str) -> VisitorLines:
    """Decompressed JSON Lines -> the visitor's lines of ``client_id`` and the rest.

    A line that mentions the visitor but is not valid JSON raises ``RawFormatError``: it
    cannot be shown to belong to someone else, and keeping it could keep the visitor's data.
    """
    needle = _needle(visitor_id)
    if needle is not None and needle not in data:
        return VisitorLines([], data)
    matched: list[bytes] = []
    kept: list[bytes] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, 1):
        if (needle is None or needle in line) and _belongs(number, line, client_id, visitor_id):
            matched.append(line)
        else:
            kept.append(line)
    if not matched:
        return VisitorLines([], data)
    return VisitorLines(matched, b"".join(line + b"\n" for line in kept))


def _belongs(number: int, line: bytes, client_id: str, visitor_id: str) -> bool:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RawFormatError(number, f"not valid JSON ({exc.msg} at byte {exc.pos})") from None
    if type(event) is not dict:
        raise RawFormatError(number, "expected a JSON object")
    return event.get("client_id") == client_id and event.get("visitor_id") == visitor_id


def found_events(lines: list[bytes], *, arrived: str = "created_at") -> list[FoundEvent]:
    """The visitor's lines with their buffer id and arrival time (``arrived``: the key that
    holds it), for ordering and for recognising a line that is both in an object and still
    in the buffer."""
    found = []
    for line in lines:
        event = orjson.loads(line)
        found.append(FoundEvent(str(event[arrived]), int(event["id"]), line))
    return found


def find_in_object(
    raw: bytes, client_id: str, visitor_id: str, *, arrived: str = "created_at"
) -> list[FoundEvent]:
    """The visitor's lines in a gzip object of JSON lines (a raw object, or a failed-events
    file with ``arrived="received_at"``), in a worker process."""
    split = split_visitor(gzip.decompress(raw), client_id, visitor_id)
    return found_events(split.matched, arrived=arrived)


def remove_from_object(raw: bytes, client_id: str, visitor_id: str) -> tuple[int, bytes | None]:
    """A gzip object of JSON lines (a raw object, or a failed-events file) without the
    visitor's: how many went, and the new object (``None`` when the visitor had none in
    it). Every other line is kept byte for byte (in a worker process)."""
    split = split_visitor(gzip.decompress(raw), client_id, visitor_id)
    if not split.matched:
        return 0, None
    return len(split.matched), gzip_object(split.kept)


def merge_events(*sources: list[FoundEvent]) -> bytes:
    """One JSON Lines file: each event once (an exported event may still be buffered too),
    oldest first."""
    unique = {event.id: event for source in sources for event in source}
    ordered = sorted(unique.values(), key=lambda event: (event.created_at, event.id))
    return b"".join(event.line + b"\n" for event in ordered)
