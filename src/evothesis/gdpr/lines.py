"""Finding one subject's events (a visitor's, or a user's with every id alias links tie to
them) in a raw object and removing them, leaving every other line exactly as it was.

Pure functions over bytes, run in the export worker processes: a raw object can hold tens of
thousands of lines, and only the few that mention the subject are parsed.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import orjson

from evothesis.errors import RawFormatError
from evothesis.export.raw import gzip_object
from evothesis.gdpr.subjects import Subject


@dataclass(frozen=True, slots=True)
class SubjectLines:
    """A raw object's lines split into the subject's and everyone else's."""

    #: The subject's lines as they were stored (no newline).
    matched: list[bytes]
    #: The other lines, unchanged and newline-terminated: the object without the subject.
    kept: bytes


@dataclass(frozen=True, slots=True)
class FoundEvent:
    """One of the subject's events, with what orders an export file."""

    created_at: str
    id: int
    line: bytes


def _needles(subject: Subject) -> list[bytes] | None:
    """The subject's ids as they appear inside a JSON line, when those spellings are certain.

    PostgreSQL and orjson escape quotes, backslashes and control characters differently
    in places; for ids made of other printable ASCII both write the id verbatim, so an
    object (or line) without any of them cannot hold the subject. When some id is of
    another kind, every line is checked.
    """
    needles = []
    for identifier in subject.ids:
        if not (
            identifier.isascii() and identifier.isprintable() and not set(identifier) & {'"', "\\"}
        ):
            return None
        needles.append(b'"' + identifier.encode() + b'"')
    return needles


def split_subject(data: bytes, client_id: str, subject: Subject) -> SubjectLines:
    """Decompressed JSON Lines -> the subject's lines of ``client_id`` and the rest.

    A line that mentions one of the subject's ids but is not valid JSON raises
    ``RawFormatError``: it cannot be shown to belong to someone else, and keeping it could
    keep the subject's data.
    """
    needles = _needles(subject)
    if needles is not None and not any(needle in data for needle in needles):
        return SubjectLines([], data)
    matched: list[bytes] = []
    kept: list[bytes] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, 1):
        if (needles is None or any(needle in line for needle in needles)) and _belongs(
            number, line, client_id, subject
        ):
            matched.append(line)
        else:
            kept.append(line)
    if not matched:
        return SubjectLines([], data)
    return SubjectLines(matched, b"".join(line + b"\n" for line in kept))


def _belongs(number: int, line: bytes, client_id: str, subject: Subject) -> bool:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RawFormatError(number, f"not valid JSON ({exc.msg} at byte {exc.pos})") from None
    if type(event) is not dict:
        raise RawFormatError(number, "expected a JSON object")
    return event.get("client_id") == client_id and (
        event.get("visitor_id") in subject.visitor_ids or event.get("user_id") in subject.user_ids
    )


def found_events(lines: list[bytes], *, arrived: str = "created_at") -> list[FoundEvent]:
    """The subject's lines with their buffer id and arrival time (``arrived``: the key that
    holds it), for ordering and for recognising a line that is both in an object and still
    in the buffer."""
    found = []
    for line in lines:
        event = orjson.loads(line)
        found.append(FoundEvent(str(event[arrived]), int(event["id"]), line))
    return found


def find_in_object(
    raw: bytes, client_id: str, subject: Subject, *, arrived: str = "created_at"
) -> list[FoundEvent]:
    """The subject's lines in a gzip object of JSON lines (a raw object, or a failed-events
    file with ``arrived="received_at"``), in a worker process."""
    split = split_subject(gzip.decompress(raw), client_id, subject)
    return found_events(split.matched, arrived=arrived)


def remove_from_object(raw: bytes, client_id: str, subject: Subject) -> tuple[int, bytes | None]:
    """A gzip object of JSON lines (a raw object, or a failed-events file) without the
    subject's: how many went, and the new object (``None`` when the subject had none in
    it). Every other line is kept byte for byte (in a worker process)."""
    split = split_subject(gzip.decompress(raw), client_id, subject)
    if not split.matched:
        return 0, None
    return len(split.matched), gzip_object(split.kept)


def merge_events(*sources: list[FoundEvent]) -> bytes:
    """One JSON Lines file: each event once (an exported event may still be buffered too),
    oldest first."""
    unique = {event.id: event for source in sources for event in source}
    ordered = sorted(unique.values(), key=lambda event: (event.created_at, event.id))
    return b"".join(event.line + b"\n" for event in ordered)
